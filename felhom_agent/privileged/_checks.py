"""Strict value checks shared by the operation argument classes.

Every check refuses by default: a value must be the exact Python type (``bool`` is not an
``int`` here), match an anchored allow-list pattern in full (``re.fullmatch``, so a trailing
newline cannot slip past a ``$``), and is additionally refused when it contains ``..``, starts
with ``-`` (it would read as an option) or carries a NUL, whatever the pattern says. The
patterns themselves exclude whitespace, quotes and shell metacharacters; argv lists never pass
through a shell, but a value that *would* be dangerous in one is refused anyway, because the SSH
runner's remote side does start a shell (with every word quoted).
"""

from __future__ import annotations

import re

from felhom_agent.privileged.errors import RefusedArgument

__all__ = ["check_int", "check_str"]


def check_int(field: str, value: object, *, minimum: int, maximum: int) -> int:
    """Return ``value`` if it is an ``int`` (not a ``bool``) within ``[minimum, maximum]``.

    Raises:
        RefusedArgument: wrong type or out of range.
    """
    if type(value) is not int:
        raise RefusedArgument(field, value, f"must be an integer {minimum}..{maximum}")
    if not minimum <= value <= maximum:
        raise RefusedArgument(field, value, f"must be within {minimum}..{maximum}")
    return value


def check_str(field: str, value: object, pattern: re.Pattern[str], what: str) -> str:
    """Return ``value`` if it is a ``str`` matching ``pattern`` in full and is not hostile.

    Args:
        field: the argument name, for the error.
        value: the candidate.
        pattern: the allow-list; matched with ``fullmatch``.
        what: a short description of what is allowed, for the error.

    Raises:
        RefusedArgument: wrong type, NUL, leading ``-``, ``..``, or no full match.
    """
    if type(value) is not str:
        raise RefusedArgument(field, value, f"must be a string: {what}")
    if "\x00" in value:
        raise RefusedArgument(field, value, "must not contain NUL")
    if value.startswith("-"):
        raise RefusedArgument(field, value, "must not start with '-' (it would read as an option)")
    if ".." in value:
        raise RefusedArgument(field, value, "must not contain '..'")
    if pattern.fullmatch(value) is None:
        raise RefusedArgument(field, value, f"must be {what}")
    return value
