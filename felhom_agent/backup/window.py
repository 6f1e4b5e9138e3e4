"""The backup window: parsing, "is this local time inside", and when it opens next.

A window is a daily interval of the *node's* local wall-clock time (vzdump names local backup
files in node local time too), ``[start, end)``, wrapping past midnight when the end is before
the start. Times are POSIX seconds; the node's time zone is a parameter (a
:class:`datetime.tzinfo`, e.g. ``zoneinfo.ZoneInfo`` of the node's zone or a fixed
``datetime.timezone``), never the agent machine's own zone.

Daylight-saving changes are handled by what the wall clock shows: in a spring-forward gap the
skipped wall times never happen (a window inside the gap stays shut that day; a window that
contains the jump opens at the jump), and in a fall-back fold the repeated wall times happen
twice (a window may open twice that night).
"""

from __future__ import annotations

import datetime as dt
from typing import Final

from felhom_agent.core.backup_policy import (
    WINDOW_SYNTAX,
    Window,
    WindowError,
    parse_window,
)
from felhom_agent.utc import format_utc

__all__ = [
    "WINDOW_SYNTAX",
    "Window",
    "WindowError",
    "describe",
    "inside",
    "inside_at",
    "local_time",
    "next_open",
    "parse_window",
]

#: Offset changes are looked for at this spacing; real zones change at most a few times a
#: year, never twice within this span.
_PROBE_S: Final = 3 * 3600
#: How far ahead openings are searched (the window opens at least once in any two local days;
#: a week also covers a window swallowed by a DST gap on one day).
_HORIZON_DAYS: Final = 8


def local_time(epoch: float, tz: dt.tzinfo) -> dt.datetime:
    """The node's wall-clock time at ``epoch`` (an aware datetime in ``tz``)."""
    return dt.datetime.fromtimestamp(epoch, tz)


def describe(epoch: float, tz: dt.tzinfo) -> str:
    """A time for a reason: the agent's UTC form plus the node's wall clock, to relate it to a
    window: ``2024-05-02T00:00:00Z (01:00 node time)``."""
    local = local_time(epoch, tz)
    return f"{format_utc(epoch)} ({local.hour:02d}:{local.minute:02d} node time)"


def inside(window: Window | None, local: dt.time | dt.datetime) -> bool:
    """Whether a local wall-clock time is inside the window (``None``: always).

    Args:
        window: the window, or ``None`` for "any time".
        local: the node's local time of day (a ``datetime`` is reduced to its time of day).
    """
    if window is None:
        return True
    minute = (local.hour * 60 + local.minute + local.second / 60
              + local.microsecond / 60_000_000)
    return window.contains_minute(minute)


def inside_at(window: Window | None, epoch: float, tz: dt.tzinfo) -> bool:
    """Whether the window is open at POSIX time ``epoch`` on a node in zone ``tz``."""
    return window is None or inside(window, local_time(epoch, tz))


def _offset(epoch: float, tz: dt.tzinfo) -> dt.timedelta | None:
    return local_time(epoch, tz).utcoffset()


def _transitions(start: float, end: float, tz: dt.tzinfo) -> list[int]:
    """The instants in ``(start, end]`` at which ``tz``'s UTC offset changes (whole seconds).

    Probes every :data:`_PROBE_S` and bisects between probes with different offsets to the
    first second of the new offset.
    """
    found: list[int] = []
    lo = int(start)
    lo_off = _offset(lo, tz)
    while lo < end:
        hi = min(lo + _PROBE_S, int(end) + 1)
        hi_off = _offset(hi, tz)
        if hi_off != lo_off:
            a, b = lo, hi  # offset(a) == lo_off, offset(b) == hi_off; find the first b
            while b - a > 1:
                mid = (a + b) // 2
                if _offset(mid, tz) == lo_off:
                    a = mid
                else:
                    b = mid
            found.append(b)
        lo, lo_off = hi, hi_off
    return found


def next_open(window: Window | None, now: float, tz: dt.tzinfo) -> float:
    """The earliest POSIX time ``>= now`` at which the window is open.

    ``now`` itself when the window is open now (or there is no window). Otherwise the next
    instant at which the node's wall clock enters the window: it reaches the window's start,
    or a daylight-saving jump lands inside the window.
    """
    if window is None or inside_at(window, now, tz):
        return now
    today = local_time(now, tz).date()
    start = dt.time(window.start // 60, window.start % 60)
    candidates: list[float] = []
    for day in range(-1, _HORIZON_DAYS):
        date = today + dt.timedelta(days=day)
        for fold in (0, 1):
            # For a wall time that happens twice the two folds give both instants; for one that
            # does not happen they give instants that show other wall times (filtered below).
            when = dt.datetime.combine(date, start, tzinfo=tz).replace(fold=fold).timestamp()
            if when > now and inside_at(window, when, tz):
                candidates.append(when)
    horizon = now + _HORIZON_DAYS * 86400
    candidates.extend(t for t in _transitions(now, horizon, tz)
                      if t > now and inside_at(window, t, tz))
    if not candidates:
        raise WindowError(f"window {window} does not open within {_HORIZON_DAYS} days of "
                          f"{now} in zone {tz}")
    return min(candidates)
