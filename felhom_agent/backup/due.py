"""Is a guest's policy backup due? Computed from the storage's content listing, never memory.

The rule: a guest is *stale* when its policy storage holds no backup of this vmid *and* guest
type with ``ctime >= now - every_h``; it is *due* when it is stale and the node's local time is
inside the policy's window. PVE is the source of truth, so backups made by PVE's own jobs
count, and a restarted agent sees the same answer.

*Overdue* (what ``--backups`` exits 1 for) means due for longer than ``every_h`` more: the
newest backup is older than two periods. A guest without any backup has no age; it is overdue
only when the caller knows since when the policy exists (``policy_since``) and that is longer
ago than ``every_h``.

A backup without a ``ctime`` cannot be dated: it is never a guest's newest backup and does
not make a guest fresh (it still counts in :attr:`DueState.count`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

import attrs

from felhom_agent.backup.window import describe, inside_at, next_open
from felhom_agent.core.backup_policy import BackupPolicy
from felhom_agent.proxmox.backup_models import BackupVolume

__all__ = ["DueState", "due_state", "guest_backups"]


def guest_backups(volumes: Iterable[BackupVolume], *, vmid: int, guest_type: str,
                  storage: str) -> tuple[BackupVolume, ...]:
    """The backups of one guest (vmid *and* type) on one storage, newest first (undated last)."""
    mine = [v for v in volumes if v.storage == storage and v.belongs_to(vmid, guest_type)]
    return tuple(sorted(mine, key=lambda v: (v.ctime is not None, v.ctime or 0), reverse=True))


@attrs.frozen
class DueState:
    """The backup timing of one guest under its policy at one instant.

    Attributes:
        vmid / guest_type / storage: whose backups, where.
        due: a backup should start now (stale and inside the window).
        stale: no backup on the storage is younger than ``every_h`` (window aside).
        in_window: the window is open now (always true without a window).
        overdue: stale for longer than another ``every_h`` (see the module docstring).
        newest: the guest's newest dated backup on the storage, if any.
        count: how many backups of the guest the storage holds.
        next_due_at: when it is (or becomes) due, POSIX seconds: ``now`` when due; otherwise
            the first instant after which it is due (the newest backup's age passes
            ``every_h`` and the window is open).
        reason: one line for the report and the log.
    """

    vmid: int
    guest_type: str
    storage: str
    due: bool
    stale: bool
    in_window: bool
    overdue: bool
    newest: BackupVolume | None
    count: int
    next_due_at: float
    reason: str


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h"


def _every(policy: BackupPolicy) -> str:
    return f"{policy.every_h:g} h"


def due_state(
    policy: BackupPolicy,
    *,
    vmid: int,
    guest_type: str,
    volumes: Iterable[BackupVolume],
    now: float,
    tz: dt.tzinfo,
    policy_since: float | None = None,
) -> DueState:
    """Decide whether a backup of the guest is due under ``policy`` at ``now``.

    Args:
        policy: the guest's policy.
        vmid / guest_type: the guest (``qemu`` or ``lxc``).
        volumes: backup volumes as listed; those of other storages or guests are ignored.
        now: POSIX seconds.
        tz: the node's time zone (the window is node local time).
        policy_since: when the agent first saw this policy, if known; only used to call a
            guest without any backup overdue.
    """
    mine = guest_backups(volumes, vmid=vmid, guest_type=guest_type, storage=policy.storage)
    newest = next((v for v in mine if v.ctime is not None), None)
    newest_ctime = None if newest is None else newest.ctime
    every_s = policy.every_s
    fresh_until = None if newest_ctime is None else newest_ctime + every_s
    stale = fresh_until is None or now > fresh_until
    in_window = inside_at(policy.window, now, tz)
    due = stale and in_window
    if due:
        next_due_at = now
    else:
        next_due_at = next_open(policy.window, now if fresh_until is None
                                else max(now, fresh_until), tz)
    if newest_ctime is not None:
        overdue = now > newest_ctime + 2 * every_s
    else:
        overdue = policy_since is not None and now > policy_since + every_s
    what = f"{guest_type} {vmid} on {policy.storage}"
    if newest_ctime is None:
        age = f"no backup of {what} yet"
    else:
        age = f"newest backup of {what} is {_hours(now - newest_ctime)} old"
    if due:
        reason = f"due: {age} (every {_every(policy)})"
    elif stale:
        reason = (f"waiting for the window {policy.window}, which opens "
                  f"{describe(next_due_at, tz)}: {age} (every {_every(policy)})")
    else:
        reason = f"ok: {age}; next due {describe(next_due_at, tz)}"
    if overdue:
        reason = f"overdue, {reason}"
    return DueState(
        vmid=vmid, guest_type=guest_type, storage=policy.storage, due=due, stale=stale,
        in_window=in_window, overdue=overdue, newest=newest, count=len(mine),
        next_due_at=next_due_at, reason=reason,
    )
