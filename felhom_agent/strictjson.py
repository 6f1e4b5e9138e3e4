"""Strict JSON: the one loader for documents the agent must not misread.

Python's :func:`json.loads` silently keeps the *last* of two members with the same name and
accepts ``NaN``, ``Infinity`` and ``-Infinity``, none of which is JSON. For a signed op, the
desired state or the config file either would let two readers see two different documents,
so :func:`loads` refuses both, at any depth:

* a duplicated member -> :class:`DuplicateMember` (the member name and the path of the object
  that holds it, outermost first, as the document is written);
* a non-finite constant -> :class:`NonFiniteNumber`;
* malformed text -> :class:`JsonSyntaxError` (with line and column, as :mod:`json` reports);
* bytes that are not text, or nesting too deep to parse -> :class:`StrictJsonError`.

Every error is a :class:`ValueError` too. Callers map them onto their own error types and
messages; nothing here knows about signed ops or config keys.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

from felhom_agent.errors import AgentError

__all__ = [
    "DuplicateMember",
    "JsonPath",
    "JsonSyntaxError",
    "NonFiniteNumber",
    "StrictJsonError",
    "dotted",
    "loads",
]

#: Where a value sits in a document: object member names and array indexes, outermost first.
JsonPath = tuple[str | int, ...]


class StrictJsonError(AgentError, ValueError):
    """The text is not a strict JSON document (base of the specific errors below)."""


class JsonSyntaxError(StrictJsonError):
    """The text is not JSON at all; ``str()`` is :mod:`json`'s own message.

    Args:
        msg: what the parser expected (``Expecting value``).
        lineno, colno, pos: where (1-based line and column, 0-based character offset).
    """

    def __init__(self, msg: str, *, lineno: int, colno: int, pos: int) -> None:
        super().__init__(f"{msg}: line {lineno} column {colno} (char {pos})")
        self.msg = msg
        self.lineno = lineno
        self.colno = colno
        self.pos = pos


class DuplicateMember(StrictJsonError):
    """An object names the same member twice.

    Args:
        key: the duplicated member name.
        path: the path of the object holding it (``()`` for the top level).
    """

    def __init__(self, key: str, *, path: JsonPath = ()) -> None:
        super().__init__(f"member {key!r} appears more than once")
        self.key = key
        self.path = path


class NonFiniteNumber(StrictJsonError):
    """``NaN``, ``Infinity`` or ``-Infinity`` appears (not JSON, though Python accepts it).

    Args:
        name: the constant as written.
    """

    def __init__(self, name: str) -> None:
        super().__init__(f"{name} is not valid JSON")
        self.name = name


def dotted(path: JsonPath) -> str:
    """``("guests", "101", "type")`` -> ``"guests.101.type"``."""
    return ".".join(str(part) for part in path)


class _Duplicated(dict[str, Any]):
    """An object that named a member twice (the last value kept, the names remembered)."""

    duplicates: tuple[str, ...] = ()


def _pairs_hook(seen: list[bool]) -> Callable[[list[tuple[str, Any]]], dict[str, Any]]:
    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        repeated: list[str] = []
        for key, value in pairs:
            if key in out:
                repeated.append(key)
            out[key] = value
        if not repeated:
            return out
        seen.append(True)
        marked = _Duplicated(out)
        marked.duplicates = tuple(repeated)
        return marked

    return hook


def _constant(name: str) -> Any:
    raise NonFiniteNumber(name)


def _children(value: Any, path: JsonPath) -> Iterator[tuple[JsonPath, Any]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield (*path, key), item
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield (*path, index), item


def _first_duplicate(document: Any) -> DuplicateMember | None:
    """The first duplicated member in document order (outer objects before inner ones)."""
    stack: list[tuple[JsonPath, Any]] = [((), document)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, _Duplicated):
            return DuplicateMember(value.duplicates[0], path=path)
        stack.extend(reversed(list(_children(value, path))))
    return None


def loads(text: str | bytes | bytearray) -> Any:
    """Parse ``text`` as strict JSON (bytes: UTF-8, -16 or -32, as :func:`json.loads` detects).

    Raises:
        DuplicateMember: an object names a member twice (the first in document order).
        NonFiniteNumber: ``NaN``/``Infinity``/``-Infinity`` appears.
        JsonSyntaxError: the text is not JSON.
        StrictJsonError: undecodable bytes, or nesting too deep to parse.
    """
    seen: list[bool] = []
    try:
        document = json.loads(text, object_pairs_hook=_pairs_hook(seen),
                              parse_constant=_constant)
    except json.JSONDecodeError as err:
        raise JsonSyntaxError(err.msg, lineno=err.lineno, colno=err.colno, pos=err.pos
                              ) from None
    except UnicodeDecodeError as err:
        raise StrictJsonError(str(err)) from None
    except RecursionError as err:
        raise StrictJsonError(str(err)) from None
    if seen:
        # The hook cannot know where it is; find the first duplicate, outermost first.
        duplicate = _first_duplicate(document)
        if duplicate is not None:
            raise duplicate
    return document
