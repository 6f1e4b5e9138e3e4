"""Retention: the effective keep options, PVE's ``prune-backups`` string, PVE's keep marking.

The agent never decides itself what to delete: it asks PVE for a dry run with the effective
options, records the list, and lets PVE prune. This module computes those options, checks the
dry run before anything is removed (:func:`review_prune`), and reproduces PVE's marking
(:func:`mark_backups`) so tests, the simulator and the report can predict it.

**The floor.** ``backup.min_keep`` is a local rule the hub cannot lower: the effective
``keep.last`` is at least ``min_keep`` whenever the options would prune at all. Options that
keep everything (``all``, or no positive count) stay as they are: raising ``last`` there would
turn "keep all" into "keep three".

**PVE's marking**, per group (one vmid and guest type), newest first: protected backups are
marked ``protected`` up front and neither removed nor counted. Then ``last``, ``hourly``,
``daily``, ``weekly`` (ISO week and ISO year), ``monthly`` and ``yearly`` run in that order;
each keeps the newest not yet marked backup of each of its next N time buckets, skipping
buckets that already hold a backup kept by an earlier option, and marks the other not yet
marked backups of a bucket it just kept as ``remove`` (so later options skip them too). Buckets
are the node's local time. What no option marked is removed. Backups whose name does not
follow vzdump's scheme (``subtype`` unknown) are marked ``renamed`` and never removed.
(A PBS datastore applies the same rules, in the PBS server's local time.) A backup without a
``ctime`` cannot be put in a bucket: the local marking keeps it and leaves it out of its group
(it is never pruned by this prediction and takes no option's slot).

The marks are the client's :class:`~felhom_agent.proxmox.backup_models.PruneMark` rows, so a
prediction and PVE's dry run are the same type.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Sequence

import attrs

from felhom_agent.backup.window import local_time
from felhom_agent.core.backup_policy import KeepOptions
from felhom_agent.proxmox.backup_models import BackupVolume, PruneMark, PruneMarkKind

__all__ = [
    "PruneReview",
    "effective_keep",
    "format_prune_backups",
    "mark_backups",
    "prune_options",
    "review_prune",
]

def effective_keep(keep: KeepOptions, min_keep: int) -> KeepOptions:
    """``keep`` with ``last`` raised to at least ``min_keep`` (when it prunes at all)."""
    if keep.keeps_all:
        return keep
    return attrs.evolve(keep, last=max(keep.last or 0, min_keep))


def format_prune_backups(keep: KeepOptions) -> str:
    """PVE's ``prune-backups`` property string: ``keep-last=3,keep-daily=7`` or ``keep-all=1``.

    Counts appear in PVE's evaluation order; zero and absent counts are left out (PVE ignores
    them).
    """
    if keep.keeps_all:
        return "keep-all=1"
    return ",".join(f"keep-{name}={n}" for name, n in keep.counts() if n)


def prune_options(keep: KeepOptions | None, min_keep: int) -> str | None:
    """The ``prune-backups`` value for a prune after a policy backup, or ``None``: no prune.

    ``None`` when the policy has no ``keep`` (the agent never prunes it) or keeps everything.
    """
    if keep is None or keep.keeps_all:
        return None
    return format_prune_backups(effective_keep(keep, min_keep))


def _row(volume: BackupVolume, mark: PruneMarkKind) -> PruneMark:
    """The row for ``volume`` (``type`` is ``unknown`` when PVE could not tell the type)."""
    kind = "unknown" if volume.subtype is None else volume.subtype.value
    return PruneMark(volid=volume.volid, ctime=volume.ctime, type=kind, vmid=volume.vmid,
                     mark=mark)


def _bucket(name: str, tz: dt.tzinfo) -> Callable[[int], object]:
    if name == "last":
        return lambda ctime: ctime

    def key(ctime: int) -> object:
        t = local_time(ctime, tz)
        if name == "hourly":
            return (t.year, t.month, t.day, t.hour)
        if name == "daily":
            return (t.year, t.month, t.day)
        if name == "weekly":
            iso = t.isocalendar()
            return (iso.year, iso.week)
        if name == "monthly":
            return (t.year, t.month)
        return t.year

    return key


def _mark_group(group: Sequence[tuple[int, BackupVolume]], keep: KeepOptions,
                tz: dt.tzinfo, marks: dict[int, PruneMarkKind]) -> None:
    """Mark one vmid/type group of dated ``(ctime, volume)`` in place (``marks`` is keyed by
    ``id()`` of the volume)."""
    if keep.keeps_all:
        for _, volume in group:
            marks.setdefault(id(volume), PruneMarkKind.KEEP)
        return
    newest_first = sorted(group, key=lambda cv: cv[0], reverse=True)  # stable for ties
    for name, count in keep.counts():
        if not count:
            continue
        bucket = _bucket(name, tz)
        already = {bucket(c) for c, v in newest_first if marks.get(id(v)) is PruneMarkKind.KEEP}
        chosen: set[object] = set()
        for ctime, volume in newest_first:
            if id(volume) in marks:
                continue
            b = bucket(ctime)
            if b in already:
                continue
            if b not in chosen:
                if len(chosen) >= count:
                    break
                chosen.add(b)
                marks[id(volume)] = PruneMarkKind.KEEP
            else:
                marks[id(volume)] = PruneMarkKind.REMOVE
    for _, volume in group:
        marks.setdefault(id(volume), PruneMarkKind.REMOVE)


def mark_backups(volumes: Iterable[BackupVolume], keep: KeepOptions, tz: dt.tzinfo
                 ) -> tuple[PruneMark, ...]:
    """What PVE's prune with ``keep`` does to each backup (see the module docstring).

    Args:
        volumes: backups of one storage; grouped by (guest type, vmid) as PVE does.
        keep: the options as sent (apply :func:`effective_keep` first for the agent's prune).
        tz: the node's time zone (the buckets are its local hours, days, weeks, ...).

    Returns:
        One row per volume, in the input order.
    """
    items = list(volumes)
    marks: dict[int, PruneMarkKind] = {}
    groups: dict[tuple[str, int], list[tuple[int, BackupVolume]]] = {}
    for volume in items:
        if volume.protected:
            marks[id(volume)] = PruneMarkKind.PROTECTED
        elif volume.subtype is None or volume.vmid is None:
            marks[id(volume)] = PruneMarkKind.RENAMED
        elif volume.ctime is None:
            marks[id(volume)] = PruneMarkKind.KEEP  # undated: never pruned by the prediction
        else:
            groups.setdefault((volume.subtype, volume.vmid), []).append((volume.ctime, volume))
    for group in groups.values():
        _mark_group(group, keep, tz, marks)
    return tuple(_row(v, marks[id(v)]) for v in items)


@attrs.frozen
class PruneReview:
    """The agent's check of PVE's prune dry run before it lets PVE remove anything.

    Attributes:
        allowed: ``False``: do not send the prune.
        remove: the volids the dry run would remove (for the audit), newest first.
        kept: how many unprotected backups of the guest stay.
        reason: why it was refused, or a summary for the log.
    """

    allowed: bool
    remove: tuple[str, ...]
    kept: int
    reason: str


def review_prune(rows: Iterable[PruneMark], *, vmid: int, guest_type: str, min_keep: int,
                 protected: Iterable[str] = ()) -> PruneReview:
    """Check a prune dry run for one guest against the agent's own rules.

    Refused when a row to remove belongs to another guest, is protected (by its mark or by
    ``protected``, the volids the content listing shows as protected), or when fewer than
    ``min(min_keep, unprotected backups)`` unprotected backups of the guest would stay.

    Args:
        rows: PVE's dry-run rows (``GET .../prunebackups`` with ``vmid`` and ``type``).
        vmid / guest_type: the guest pruned.
        min_keep: ``backup.min_keep``.
        protected: volids known to be protected from the content listing.
    """
    rows = list(rows)
    guarded = set(protected)
    remove_mark = PruneMarkKind.REMOVE
    others = [r.volid for r in rows
              if r.mark is remove_mark and (r.vmid != vmid or r.type != guest_type)]
    if others:
        return PruneReview(False, (), 0, f"prune dry run for {guest_type} {vmid} would remove "
                           f"backups of other guests: {', '.join(others)}; nothing pruned")
    bad = [r.volid for r in rows if r.mark is remove_mark and r.volid in guarded]
    if bad:
        return PruneReview(False, (), 0, f"prune dry run would remove protected backups "
                           f"{', '.join(bad)}; nothing pruned")
    mine = sorted((r for r in rows if r.vmid == vmid and r.type == guest_type
                   and r.mark in (PruneMarkKind.KEEP, remove_mark) and r.volid not in guarded),
                  key=lambda r: (r.ctime is not None, r.ctime or 0), reverse=True)
    remove = tuple(r.volid for r in mine if r.mark is remove_mark)
    kept = len(mine) - len(remove)
    floor = min(min_keep, len(mine))
    if kept < floor:
        return PruneReview(False, remove, kept, f"prune dry run for {guest_type} {vmid} would "
                           f"keep {kept} unprotected backups, fewer than backup.min_keep "
                           f"{min_keep}; nothing pruned")
    dropped = [r.volid for r in mine[:floor] if r.mark is remove_mark]
    if dropped:
        return PruneReview(False, remove, kept, f"prune dry run would remove "
                           f"{', '.join(dropped)}, one of the {floor} newest backups of "
                           f"{guest_type} {vmid}; nothing pruned")
    return PruneReview(True, remove, kept, f"prune {guest_type} {vmid}: remove {len(remove)}, "
                       f"keep {kept} unprotected backups")
