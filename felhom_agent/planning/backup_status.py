"""Each guest's backup state, as the report's ``backup`` entries and ``--backups`` show it.

Pure: derived from the planner's per-guest verdicts and what PVE says (the listings, the
guests' locks, the node's vzdump tasks), so the daemon's report and the read-only
``--backups`` command agree (``docs/architecture.md``, "Backup policy"). One entry per guest
on the node that has a policy or any backup; the first that applies decides ``status``:

1. ``stale_lock`` -- locked ``backup`` while no vzdump task runs on the node (for
   ``backup.stale_lock_s`` when the caller tracks since when; a crashed vzdump leaves the lock,
   only root can clear it: ``pct unlock N`` / ``qm unlock N``; the agent never unlocks);
2. ``running`` -- a vzdump task of this guest runs;
3. ``failed`` -- its newest vzdump task ended in an error and no backup is newer;
4. ``no_policy`` -- backups but no policy;
5. the planner's verdict: ``refused`` (policy, space or permission problem; ``blocked`` is
   shown as ``refused`` with its reason: nothing is being done), ``due`` or ``ok``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import attrs

from felhom_agent.core.desired import DesiredState
from felhom_agent.planning.backups import BackupFacts, BackupStatus
from felhom_agent.planning.plan import GuestActual
from felhom_agent.proxmox.backup_models import BackupVolume
from felhom_agent.proxmox.models import TaskEntry
from felhom_agent.utc import format_utc

__all__ = ["STATUSES", "GuestBackupReport", "backup_entries", "pbs_entries", "stale_locks"]

#: Every value ``status`` takes.
STATUSES = ("ok", "due", "running", "failed", "refused", "stale_lock", "no_policy")
_SUCCESS = ("OK", "WARNINGS")


@attrs.frozen
class GuestBackupReport:
    """One ``backup`` entry of the report."""

    vmid: int
    type: str
    storage: str | None
    policy: Mapping[str, object] | None
    last: BackupVolume | None
    count: int
    status: str
    reason: str
    next_due_at: float | None = None
    overdue: bool = False

    def to_json(self) -> dict[str, object]:
        """The wire form (``last`` null without a backup; times in the protocol's UTC form)."""
        last = None
        if self.last is not None:
            v = self.last
            last = {"volid": v.volid, "ctime": v.ctime, "size": v.size,
                    "verified": v.verification or "none", "protected": v.protected,
                    "encrypted": v.encrypted}
        return {"vmid": self.vmid, "type": self.type, "storage": self.storage,
                "policy": None if self.policy is None else dict(self.policy), "last": last,
                "count": self.count, "status": self.status, "reason": self.reason,
                "next_due_at": None if self.next_due_at is None
                else format_utc(self.next_due_at)}


def _running(task: TaskEntry) -> bool:
    return task.endtime is None or (task.status or "").upper() == "RUNNING"


def stale_locks(guests: Iterable[GuestActual], tasks: Iterable[TaskEntry]) -> frozenset[int]:
    """Guests locked ``backup`` while no vzdump task runs on the node (right now)."""
    if any(_running(t) for t in tasks if t.type == "vzdump"):
        return frozenset()
    return frozenset(g.vmid for g in guests if g.lock == "backup")


def _newest_task(tasks: Iterable[TaskEntry], vmid: int) -> TaskEntry | None:
    mine = [t for t in tasks if t.type == "vzdump" and t.id == str(vmid)]
    return max(mine, key=lambda t: (t.starttime, t.upid), default=None)


def _failed(task: TaskEntry | None, last: BackupVolume | None) -> str | None:
    if task is None or _running(task):
        return None
    status = task.status or ""
    if status.startswith(_SUCCESS):
        return None
    if last is not None and last.ctime is not None and last.ctime >= task.starttime:
        return None
    return f"the last backup task {task.upid} ended: {status or 'unknown status'}"


def backup_entries(
    statuses: Iterable[BackupStatus],
    guests: Iterable[GuestActual],
    desired: DesiredState | None,
    facts: BackupFacts,
    *,
    stale_for: Mapping[int, float] | None,
    stale_lock_s: float,
) -> tuple[GuestBackupReport, ...]:
    """The ``backup`` entries, sorted by vmid.

    Args:
        statuses: the planner's verdicts (:attr:`Plan.backups`).
        guests: the node's guests as read this pass.
        desired: the desired state (the policies).
        facts: this pass's backup facts.
        stale_for: vmid -> seconds a stale-looking lock has been seen; ``None`` when the caller
            cannot track it (``--backups``: a lock with no vzdump running counts at once).
        stale_lock_s: ``backup.stale_lock_s``.
    """
    by_vmid = {g.vmid: g for g in guests}
    verdicts = {s.vmid: s for s in statuses}
    stale = stale_locks(by_vmid.values(), facts.tasks)
    vols: dict[int, list[BackupVolume]] = {}
    for storage_vols in facts.volumes.values():
        for v in storage_vols:
            if v.vmid is not None and v.vmid in by_vmid:
                vols.setdefault(v.vmid, []).append(v)
    policies = {} if desired is None else {
        vmid: g.backup for vmid, g in desired.guests.items() if g.backup is not None}
    out: list[GuestBackupReport] = []
    for vmid in sorted(set(vols) | (set(policies) & set(by_vmid))):
        guest = by_vmid[vmid]
        policy = policies.get(vmid)
        mine = [v for v in vols.get(vmid, ()) if v.belongs_to(vmid, guest.type)
                and (policy is None or v.storage == policy.storage)]
        mine.sort(key=lambda v: v.ctime or 0, reverse=True)
        last = mine[0] if mine else None
        verdict = verdicts.get(vmid)
        due = verdict.due if verdict is not None else None
        storage = policy.storage if policy is not None else (last.storage if last else None)
        task = _newest_task(facts.tasks, vmid)
        failed = _failed(task, last)
        seen = None if stale_for is None else stale_for.get(vmid)
        if vmid in stale and (stale_for is None or (seen is not None and seen >= stale_lock_s)):
            unlock = "pct" if guest.type == "lxc" else "qm"
            status, reason = "stale_lock", (
                f"guest {vmid} is locked 'backup' but no vzdump task runs on the node: a "
                f"crashed backup left the lock; clear it as root with `{unlock} unlock {vmid}` "
                "(the agent never unlocks)")
        elif guest.lock == "backup" or (task is not None and _running(task)):
            status, reason = "running", "a vzdump task of this guest is running"
        elif failed is not None:
            # The planner's verdict adds when the next try comes (it waits after a failure).
            status, reason = "failed", (verdict.reason if verdict is not None
                                        and verdict.status == "failed" else failed)
        elif policy is None:
            status, reason = "no_policy", "backups exist but the guest has no backup policy"
        elif verdict is None:
            # The planner skips templates; every guest here is on this node.
            status, reason = "refused", (f"not planned: guest {vmid} is a template"
                                         if guest.template else "not planned")
        else:
            status = "refused" if verdict.status == "blocked" else verdict.status
            reason = verdict.reason
        out.append(GuestBackupReport(
            vmid=vmid, type=guest.type, storage=storage,
            policy=None if policy is None else policy.to_json(), last=last, count=len(mine),
            status=status, reason=reason,
            next_due_at=None if due is None else due.next_due_at,
            overdue=bool(due is not None and due.overdue)))
    return tuple(out)


def pbs_entries(facts: BackupFacts) -> tuple[dict[str, object], ...]:
    """The report's ``pbs`` entries: each PBS storage's config and what the node sees of it.

    ``active`` false means PVE cannot reach the datastore (wrong fingerprint or credentials,
    server down): its sizes are then ``null``, never zero.
    """
    out: list[dict[str, object]] = []
    for cfg in sorted(facts.configs, key=lambda c: c.storage):
        pbs = cfg.pbs
        if pbs is None:
            continue
        info = facts.storages.get(cfg.storage)
        out.append({
            "storage": cfg.storage, "server": pbs.server, "datastore": pbs.datastore,
            "fingerprint": pbs.fingerprint,
            "active": bool(info is not None and info.active),
            "total": None if info is None else info.total,
            "used": None if info is None else info.used,
            "avail": None if info is None else info.avail,
            "encrypted": pbs.encryption,
        })
    return tuple(out)
