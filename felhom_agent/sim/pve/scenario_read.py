"""Strict reading of scenario JSON: the error type and a typed, key-path-aware reader.

Every scenario module parses through :class:`Reader`, so an unknown key, a wrong type or a bad
value always raises :class:`ScenarioError` naming the key path and the offending value.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from felhom_agent.errors import AgentError

__all__ = ["Reader", "ScenarioError", "scenario_error"]


class ScenarioError(AgentError, ValueError):
    """A scenario is malformed; the message names the key path and the offending value.

    Args:
        message: the operator-readable explanation.
        key: the key path (``guests[1].type``).
        value: the offending value, as given.
    """

    def __init__(self, message: str, *, key: str | None = None, value: object = None) -> None:
        super().__init__(message)
        self.key = key
        self.value = value


def scenario_error(key: str, value: object, what: str) -> ScenarioError:
    return ScenarioError(f"scenario key {key!r}: {what} (got {value!r})", key=key, value=value)


class Reader:
    """Typed access to one scenario object with key-path-aware errors."""

    def __init__(self, data: object, key: str, allowed: tuple[str, ...]) -> None:
        if not isinstance(data, Mapping):
            raise scenario_error(key or "<top>", data, "must be a JSON object")
        unknown = sorted(set(data) - set(allowed))
        if unknown:
            k = f"{key}.{unknown[0]}" if key else unknown[0]
            raise scenario_error(k, data[unknown[0]], f"unknown key; allowed: {', '.join(allowed)}")
        self.data: Mapping[str, Any] = data
        self.key = key

    def path(self, name: str) -> str:
        return f"{self.key}.{name}" if self.key else name

    def get(self, name: str, types: tuple[type, ...], default: Any, what: str) -> Any:
        if name not in self.data:
            return default
        value = self.data[name]
        if isinstance(value, bool) and bool not in types:
            raise scenario_error(self.path(name), value, f"must be {what}")
        if not isinstance(value, types):
            raise scenario_error(self.path(name), value, f"must be {what}")
        return value

    def require(self, name: str, types: tuple[type, ...], what: str) -> Any:
        if name not in self.data:
            raise scenario_error(self.path(name), None, f"is required ({what})")
        return self.get(name, types, None, what)
