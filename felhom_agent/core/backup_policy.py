"""The backup policy a guest may carry in the desired state: the value model (pure, no I/O).

A policy says where a guest is backed up, how often, in which daily window of the node's
local time, in which vzdump mode and what is kept when pruning::

    "backup": {"storage": "pbs1", "every_h": 24, "window": "01:00-05:00",
               "mode": "snapshot", "keep": {"last": 3, "daily": 7, "weekly": 4}}

The strict parser of that object lives with the rest of the desired state
(:mod:`felhom_agent.core.desired`); the rules that need the host (does the storage exist, does
it hold backups) and the time arithmetic live in :mod:`felhom_agent.backup`.

Window syntax (see ``docs/architecture.md`` ("Backup policy")): exactly
``HH:MM-HH:MM`` with two-digit 24-hour times ``00:00``..``23:59``; no spaces, no seconds, no
``24:00`` (write ``00:00`` for midnight). The start is inclusive, the end exclusive; an end
earlier than the start wraps past midnight (``22:00-04:00``). Start and end must differ: an
empty or all-day window is written by leaving ``window`` out.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterator
from typing import Final

import attrs

from felhom_agent.errors import ReconcileError

__all__ = [
    "BACKUP_MODES",
    "KEEP_COUNT_KEYS",
    "KEEP_KEYS",
    "MINUTES_PER_DAY",
    "POLICY_FIELDS",
    "WINDOW_SYNTAX",
    "BackupMode",
    "BackupPolicy",
    "BackupPolicyError",
    "KeepOptions",
    "Window",
    "WindowError",
    "parse_window",
]


class BackupMode(enum.StrEnum):
    """vzdump's ``mode`` (members are the strings PVE takes).

    An enum rather than a literal tuple: two of the words are also plan action kinds, and
    the only literal table naming kinds is the kind registry.
    """

    SNAPSHOT = "snapshot"
    SUSPEND = "suspend"
    STOP = "stop"


BACKUP_MODES: Final = tuple(mode.value for mode in BackupMode)
#: The count options of PVE's ``prune-backups`` (without ``keep-``), in PVE's evaluation order.
KEEP_COUNT_KEYS: Final = ("last", "hourly", "daily", "weekly", "monthly", "yearly")
KEEP_KEYS: Final = (*KEEP_COUNT_KEYS, "all")
POLICY_FIELDS: Final = ("storage", "every_h", "window", "mode", "keep")
_WINDOW_RE: Final = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])-([01][0-9]|2[0-3]):([0-5][0-9])")
MINUTES_PER_DAY: Final = 24 * 60
WINDOW_SYNTAX: Final = (
    "HH:MM-HH:MM in the node's local time (two-digit 24-hour times 00:00..23:59; an end "
    "before the start wraps past midnight, e.g. 22:00-04:00; start and end differ)"
)


class BackupPolicyError(ReconcileError, ValueError):
    """A policy value is malformed; the message says what is allowed."""


class WindowError(BackupPolicyError):
    """A window is malformed; the message says what is allowed."""


def _minute_of_day(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < MINUTES_PER_DAY:
        raise WindowError(f"a window time must be a minute of the day 0..1439, got {value!r}")
    return value


def _hhmm(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


@attrs.frozen
class Window:
    """A daily window of the node's local time, ``[start, end)`` in minutes after midnight.

    Attributes:
        start: first minute inside the window (0..1439).
        end: first minute after the window (0..1439); ``end < start`` wraps past midnight.
    """

    start: int = attrs.field(converter=_minute_of_day)
    end: int = attrs.field(converter=_minute_of_day)

    def __attrs_post_init__(self) -> None:
        if self.start == self.end:
            raise WindowError(
                f"window {self}: start and end are equal; leave the window out to allow "
                "backups at any time"
            )

    @property
    def wraps(self) -> bool:
        """Whether the window crosses local midnight (``22:00-04:00``)."""
        return self.end < self.start

    @property
    def length_min(self) -> int:
        """How many minutes a day the window is open."""
        return (self.end - self.start) % MINUTES_PER_DAY

    def contains_minute(self, minute: float) -> bool:
        """Whether a time of day (minutes after local midnight, fractions allowed) is inside."""
        if self.wraps:
            return minute >= self.start or minute < self.end
        return self.start <= minute < self.end

    def __str__(self) -> str:
        return f"{_hhmm(self.start)}-{_hhmm(self.end)}"

    def to_json(self) -> str:
        """The ``HH:MM-HH:MM`` form; :func:`parse_window` of it gives an equal window."""
        return str(self)


def parse_window(text: str) -> Window:
    """Parse ``HH:MM-HH:MM`` (see the module docstring for the exact rules).

    Raises:
        WindowError: anything else, with what is allowed.
    """
    match = _WINDOW_RE.fullmatch(text)
    if match is None:
        raise WindowError(f"must be {WINDOW_SYNTAX}, got {text!r}")
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    start, end = h1 * 60 + m1, h2 * 60 + m2
    if start == end:
        raise WindowError(
            f"start and end are both {_hhmm(start)}; leave the window out to allow backups at "
            "any time"
        )
    return Window(start, end)


def _count(value: int | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise BackupPolicyError(f"a keep count must be an integer >= 0, got {value!r}")
    return value


@attrs.frozen
class KeepOptions:
    """PVE's ``prune-backups`` options without the ``keep-`` prefix; ``None`` = not given.

    A count of 0 is the same as not giving it (PVE ignores it). When no count is positive,
    or ``all`` is true, PVE keeps every backup: :attr:`keeps_all`.
    """

    last: int | None = attrs.field(default=None, converter=_count)
    hourly: int | None = attrs.field(default=None, converter=_count)
    daily: int | None = attrs.field(default=None, converter=_count)
    weekly: int | None = attrs.field(default=None, converter=_count)
    monthly: int | None = attrs.field(default=None, converter=_count)
    yearly: int | None = attrs.field(default=None, converter=_count)
    all: bool | None = None

    def __attrs_post_init__(self) -> None:
        if self.all and any(n is not None for _, n in self.counts(given_only=True)):
            raise BackupPolicyError("keep.all true cannot be combined with keep counts")

    def counts(self, *, given_only: bool = False) -> Iterator[tuple[str, int | None]]:
        """``(name, count)`` in PVE's evaluation order (last, hourly, ..., yearly)."""
        for name in KEEP_COUNT_KEYS:
            value: int | None = getattr(self, name)
            if value is not None or not given_only:
                yield name, value

    @property
    def keeps_all(self) -> bool:
        """Whether these options keep every backup (``all`` true, or no positive count)."""
        return bool(self.all) or not any(n for _, n in self.counts())

    def to_json(self) -> dict[str, int | bool]:
        """The given keys only, so that parsing the JSON again gives an equal object."""
        out: dict[str, int | bool] = {k: n for k, n in self.counts(given_only=True)
                                      if n is not None}
        if self.all is not None:
            out["all"] = self.all
        return out


@attrs.frozen
class BackupPolicy:
    """One guest's backup policy from the desired state.

    Attributes:
        storage: the PVE storage id the backups go to (checked against the host later).
        every_h: hours between backups (> 0); a backup is due when none on the storage is
            younger than this.
        window: when in the node's local day a backup may start; ``None`` = any time.
        mode: vzdump's mode.
        keep: prune options after a policy backup; ``None`` = the agent never prunes.
    """

    storage: str
    every_h: float
    window: Window | None = None
    mode: BackupMode = attrs.field(default=BackupMode.SNAPSHOT, converter=BackupMode)
    keep: KeepOptions | None = None

    @property
    def every_s(self) -> float:
        """``every_h`` in seconds."""
        return float(self.every_h) * 3600.0

    def to_json(self) -> dict[str, object]:
        """The desired-state JSON form (``mode`` always, optional parts when set)."""
        out: dict[str, object] = {"storage": self.storage, "every_h": self.every_h,
                                  "mode": self.mode.value}
        if self.window is not None:
            out["window"] = self.window.to_json()
        if self.keep is not None:
            out["keep"] = self.keep.to_json()
        return out
