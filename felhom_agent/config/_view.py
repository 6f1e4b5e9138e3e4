"""The redacted view of a :class:`Config`: what ``--print-config`` shows.

Built from the key table, so every key appears, nested as in the file, with every secret as
``"***"`` (or ``null`` when unset) and paths as strings. Never contains a secret value.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from felhom_agent.config._keys import KEYS
from felhom_agent.config._model import AllowedSource, Config
from felhom_agent.secret import REDACTED, Secret

__all__ = ["redacted_view"]


def redacted_view(config: Config) -> dict[str, Any]:
    """Return the effective config as a JSON-ready nested dict with secrets redacted."""
    view: dict[str, Any] = {}
    for key in KEYS:
        value: Any = config
        for part in key.path:
            value = getattr(value, part)
        if isinstance(value, Secret):
            shown: Any = REDACTED if value else None
        elif isinstance(value, Path):
            shown = str(value)
        elif isinstance(value, tuple):
            shown = [v.to_json() if isinstance(v, AllowedSource) else v for v in value]
        elif isinstance(value, float) and value.is_integer():
            shown = int(value)
        else:
            shown = value
        node = view
        for part in key.path[:-1]:
            node = node.setdefault(part, {})
        node[key.path[-1]] = shown
    return view
