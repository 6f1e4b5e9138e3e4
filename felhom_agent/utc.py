"""UTC timestamps: the one text form the agent writes and reads.

Every time the agent puts into a signed op, the hub report, the journal, the nonce store, the
audit log or its own log lines is UTC with a literal ``Z``: ``2026-11-26T10:00:00Z``, or with
milliseconds, ``2026-11-26T10:00:00.250Z`` (audit records and log lines, where order within a
second matters). File names use the compact form without separators, ``20261126T100000Z``.
Digits finer than the form shows are dropped, not rounded.
:func:`parse_utc` reads exactly the seconds form back.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Final

__all__ = ["UTC_PATTERN", "format_utc", "parse_utc"]

#: The seconds form, as a pattern to check text against before parsing it.
UTC_PATTERN: Final = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")
_SECONDS: Final = "%Y-%m-%dT%H:%M:%S"
_COMPACT: Final = "%Y%m%dT%H%M%S"


def _as_utc(moment: datetime | float) -> datetime:
    if isinstance(moment, datetime):
        if moment.tzinfo is None or moment.utcoffset() is None:
            raise ValueError(f"{moment!r} has no time zone; UTC cannot be known")
        return moment.astimezone(UTC)
    return datetime.fromtimestamp(moment, UTC)


def format_utc(moment: datetime | float, *, millis: bool = False, compact: bool = False) -> str:
    """Format an aware datetime or POSIX seconds as ``YYYY-MM-DDTHH:MM:SS[.mmm]Z``.

    Args:
        moment: the time.
        millis: add milliseconds.
        compact: no ``-`` or ``:`` (``YYYYMMDDTHHMMSSZ``), for file names.

    Raises:
        ValueError: ``moment`` is a naive datetime (its zone is unknown).
    """
    utc = _as_utc(moment)
    text = utc.strftime(_COMPACT if compact else _SECONDS)
    if millis:
        text += f".{utc.microsecond // 1000:03d}"
    return text + "Z"


def parse_utc(text: str) -> datetime:
    """Read ``YYYY-MM-DDTHH:MM:SSZ`` (exactly that form) as an aware UTC datetime.

    Raises:
        ValueError: another form, or no such date or time (``2026-02-30``, ``25:00``).
    """
    if not isinstance(text, str) or UTC_PATTERN.fullmatch(text) is None:
        raise ValueError(f"{text!r} is not a UTC time YYYY-MM-DDTHH:MM:SSZ")
    return datetime.strptime(text[:-1], _SECONDS).replace(tzinfo=UTC)
