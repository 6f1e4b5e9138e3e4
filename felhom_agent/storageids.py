"""PVE storage ids: the one rule for which names the agent accepts as a storage.

PVE's storage ids start with a letter, continue with letters, digits, ``-``, ``_`` or ``.``,
and end with a letter or digit, so they are at least two characters long (``local``,
``local-lvm``, ``pbs1``). The agent also bounds them at 64 characters. The configuration
(``backup.safety_storage``), the desired state's backup policies and the fenced root CLI's
arguments check names with these, so the rule is written once.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["STORAGE_ID_RULE", "STORAGE_ID_TEXT", "is_storage_id"]

#: A storage id, to ``fullmatch``; also usable as the prefix of a volume id (``local:...``).
STORAGE_ID_TEXT: Final = re.compile(r"[A-Za-z][A-Za-z0-9._-]{0,62}[A-Za-z0-9]")
#: What an error message says is allowed.
STORAGE_ID_RULE: Final = ("a PVE storage id (a letter, then letters, digits, '-', '_' or '.'; "
                          "2 to 64 characters, not ending in '-', '_' or '.')")


def is_storage_id(value: object) -> bool:
    """True for a ``str`` that is a whole storage id."""
    return isinstance(value, str) and STORAGE_ID_TEXT.fullmatch(value) is not None
