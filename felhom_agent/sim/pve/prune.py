"""PVE's backup retention: the ``prune-backups`` property string and the keep/remove marks.

The marking follows ``prune_mark_backup_group`` of pve-storage: per group (guest type and
vmid), newest first, the options are applied in the order keep-last, keep-hourly, keep-daily,
keep-weekly (ISO week), keep-monthly, keep-yearly. Each option walks the backups that carry no
mark yet, skips those whose period an earlier option already kept, keeps the first backup of
each new period until it has kept N periods, and marks the later backups of a period it kept
``remove``; whatever is left unmarked at the end is ``remove``. Periods are computed in the
node's local time. Protected backups are marked ``protected`` before and therefore neither
removed nor counted; backups with a non-standard name are ``renamed``. ``keep-all`` (or no
positive option) keeps everything.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping, MutableSequence
from typing import Any
from zoneinfo import ZoneInfo

__all__ = ["KEEP_OPTIONS", "format_keep", "mark_group", "parse_keep"]

#: Evaluation order of the keep options (``keep-all`` is separate).
KEEP_OPTIONS = ("keep-last", "keep-hourly", "keep-daily", "keep-weekly", "keep-monthly",
                "keep-yearly")


def parse_keep(text: str) -> dict[str, int]:
    """Parse ``keep-last=3,keep-daily=7`` (``keep-all=1`` alone); raise ``ValueError``."""
    out: dict[str, int] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        key, sep, value = part.partition("=")
        if not sep or key not in (*KEEP_OPTIONS, "keep-all"):
            raise ValueError(f"invalid format - unknown retention option '{part}'")
        if not value.isdigit() or (key == "keep-all" and value not in ("0", "1")):
            raise ValueError(f"invalid format - value '{value}' of '{key}' is not valid")
        if key in out:
            raise ValueError(f"invalid format - duplicate key in comma-separated list "
                             f"property: {key}")
        out[key] = int(value)
    if out.get("keep-all") and any(out.get(k) for k in KEEP_OPTIONS):
        raise ValueError("keep-all cannot be set together with other options.")
    return out


def format_keep(keep: Mapping[str, int]) -> str:
    """The log form vzdump prints: ``keep-daily=7, keep-last=3`` (sorted keys)."""
    return ", ".join(f"{k}={keep[k]}" for k in sorted(keep))


def _period(option: str, tz: ZoneInfo) -> Callable[[int], Any]:
    def local(ctime: int) -> dt.datetime:
        return dt.datetime.fromtimestamp(ctime, tz)

    if option == "keep-last":
        return lambda c: c
    if option == "keep-hourly":
        return lambda c: local(c).timetuple()[:4]
    if option == "keep-daily":
        return lambda c: local(c).date()
    if option == "keep-weekly":
        return lambda c: local(c).isocalendar()[:2]
    if option == "keep-monthly":
        return lambda c: (local(c).year, local(c).month)
    return lambda c: local(c).year


def _mark_option(entries: Iterable[MutableSequence[Any]], count: int,
                 period: Callable[[int], Any]) -> None:
    """One option over ``[ctime, mark]`` cells (newest first), like PVE's ``$prune_mark``."""
    if not count:
        return
    cells = list(entries)
    already = {period(c[0]) for c in cells if c[1] == "keep"}
    newly: set[Any] = set()
    for cell in cells:
        pid = period(cell[0])
        if cell[1] is not None or pid in already:
            continue
        if pid not in newly:
            if len(newly) >= count:
                break
            newly.add(pid)
            cell[1] = "keep"
        else:
            cell[1] = "remove"


def mark_group(entries: list[dict[str, Any]], keep: Mapping[str, int], tz: ZoneInfo) -> None:
    """Set ``mark`` on every entry of one group (``ctime``, optional preset ``mark``)."""
    positive = [k for k in KEEP_OPTIONS if keep.get(k, 0) > 0]
    if keep.get("keep-all") or not positive:
        for e in entries:
            if e.get("mark") in (None, "remove"):
                e["mark"] = "keep"
        return
    ordered = sorted(entries, key=lambda e: e["ctime"], reverse=True)
    cells: list[list[Any]] = [[e["ctime"], e.get("mark")] for e in ordered]
    for option in KEEP_OPTIONS:
        _mark_option(cells, keep.get(option, 0), _period(option, tz))
    for e, cell in zip(ordered, cells, strict=True):
        e["mark"] = cell[1] if cell[1] is not None else "remove"
