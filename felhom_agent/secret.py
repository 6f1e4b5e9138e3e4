"""Secrets are a type: a value that refuses to show itself.

A :class:`Secret` wraps a token or password. Its ``repr``/``str`` are ``'***'``, it is not
JSON-serialisable by accident, and the only way to the value is the explicit
:meth:`Secret.reveal`, which makes every use greppable. Equality compares values in constant
time so tests and config reloads can compare secrets without revealing them.
"""

from __future__ import annotations

import hmac

__all__ = ["REDACTED", "Secret"]

REDACTED = "***"


class Secret:
    """An opaque secret string (API token secret, hub bearer token)."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError("Secret wraps a str")
        self._value = value

    def reveal(self) -> str:
        """Return the secret value; call only where it is sent to its one legitimate peer."""
        return self._value

    def __repr__(self) -> str:
        return f"Secret({REDACTED!r})"

    def __str__(self) -> str:
        return REDACTED

    def __format__(self, spec: str) -> str:
        return REDACTED

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash((Secret, len(self._value)))

    def __bool__(self) -> bool:
        return bool(self._value)

    def __reduce__(self) -> tuple[object, ...]:
        # Pickling would copy the value into another process's memory dumps; refuse.
        raise TypeError("Secret values are not picklable")
