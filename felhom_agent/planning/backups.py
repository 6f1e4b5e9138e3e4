"""Backup planning: which guests get a ``backup`` or a ``prune`` action this pass, and why not.

Pure, like :func:`felhom_agent.planning.plan.plan`: the engine reads the facts once per pass
(:class:`BackupFacts`: the node's storages, one content listing per backup storage, the time
and the node's time zone) and this module decides per desired guest with a ``backup`` policy
(``docs/architecture.md``, "Backup policy"):

1. the policy's storage must exist, hold backups and be active (else ``refused`` / blocked);
2. its listing must have been read (else blocked: a missing listing is never "no backups");
3. **due** (no backup of this vmid *and* type on the storage younger than ``every_h``, and
   the window is open) → the space check (newest backup * (1 + margin) ≤ ``avail``, else
   ``refused`` with the numbers) → a ``backup`` action;
4. not due, and the newest backup is fresh → when PVE's keep marking (with the local
   ``backup.min_keep`` floor) would remove something → a ``prune`` action.

Every guest with a policy also gets a :class:`BackupStatus` (for the report and
``--backups``); the engine overlays what only it knows (a job running, a last failure, a
stale lock).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping

import attrs

from felhom_agent.backup.due import DueState, due_state
from felhom_agent.backup.policy import check_policy
from felhom_agent.backup.prune import effective_keep, mark_backups, prune_options
from felhom_agent.backup.space import check_space
from felhom_agent.core.desired import GuestDesired
from felhom_agent.proxmox.backup_models import BackupVolume, PruneMarkKind, StorageConfig
from felhom_agent.proxmox.models import Permissions, StorageInfo, TaskEntry

__all__ = ["BackupFacts", "BackupStatus", "GuestBackupPlan", "failed_recently",
           "hidden_backups", "own_retention", "plan_guest_backup"]


@attrs.frozen
class BackupFacts:
    """What one pass read about backups.

    Attributes:
        now: POSIX seconds of the pass.
        tz: the node's time zone (windows and prune buckets are node local time).
        storages: the node's storages by id (``GET /nodes/{node}/storage``).
        volumes: the backup volumes per storage id, for each storage whose listing was read.
        errors: storage id -> why its listing could not be read.
        min_keep: ``backup.min_keep``.
        margin_pct: ``backup.space_margin_pct``.
        tasks: the node's vzdump tasks of the last days (running ones included).
        configs: the storage configuration (``GET /storage``: retention, PBS details).
        permissions: the token's effective privileges (``None``: not read).
    """

    now: float
    tz: dt.tzinfo
    storages: Mapping[str, StorageInfo]
    volumes: Mapping[str, tuple[BackupVolume, ...]]
    errors: Mapping[str, str] = attrs.Factory(dict)
    min_keep: int = 3
    margin_pct: int = 20
    tasks: tuple[TaskEntry, ...] = ()
    configs: tuple[StorageConfig, ...] = ()
    permissions: Permissions | None = None


@attrs.frozen
class BackupStatus:
    """The planner's view of one guest's backups under its policy.

    ``status`` is ``ok``, ``due``, ``refused`` or ``blocked`` here; the engine turns
    ``blocked`` and adds ``running``, ``failed`` and ``stale_lock``.
    """

    vmid: int
    guest_type: str
    storage: str
    status: str
    reason: str
    due: DueState | None = None


@attrs.frozen
class GuestBackupPlan:
    """The backup part of one guest's plan: at most one action, or a refusal, or a block."""

    status: BackupStatus
    action: tuple[str, dict[str, str]] | None = None
    refused: str | None = None
    blocked: str | None = None


def hidden_backups(perms: Permissions | None, storage: str, vmid: int) -> str | None:
    """Why the token cannot see (nor make) this guest's backups on ``storage``, or ``None``.

    PVE filters each listed backup by the token's rights and omits the rest silently: without
    ``Datastore.Allocate`` on the storage, or ``Datastore.AllocateSpace`` there *and*
    ``VM.Backup`` on the guest, the listing is empty although backups exist -- which must be
    reported as a permission problem, never as "no backups" (and never trigger a backup on
    every pass).
    """
    if perms is None:
        return None
    on_storage = perms.privileges_at(f"/storage/{storage}")
    if "Datastore.Allocate" in on_storage:
        return None
    missing = []
    if "Datastore.AllocateSpace" not in on_storage:
        missing.append(f"Datastore.AllocateSpace on /storage/{storage}")
    if "VM.Backup" not in perms.privileges_at(f"/vms/{vmid}"):
        missing.append(f"VM.Backup on /vms/{vmid}")
    if not missing:
        return None
    return (f"permission: the token lacks {' and '.join(missing)}; PVE hides this guest's "
            f"backups on {storage} from its listing and refuses to make new ones")


def own_retention(configs: Iterable[StorageConfig], storage: str) -> str | None:
    """Why a policy must not use ``storage``: it prunes by a retention of its own.

    vzdump prunes the guest's backups after each backup by the storage's ``prune-backups``
    setting -- without the agent's dry run, audit line and ``backup.min_keep`` floor. The
    agent sends ``remove=0`` so PVE never prunes behind its back, but then PVE refuses new
    backups once the storage's limit is reached; either way the policy cannot work there.
    """
    cfg = next((c for c in configs if c.storage == storage), None)
    rule = None if cfg is None else cfg.prune_backups
    if not rule or rule.replace(" ", "") in ("keep-all=1",):
        return None
    return (f"storage {storage} prunes by a retention of its own (prune-backups {rule}), "
            "which bypasses the agent's dry run and backup.min_keep floor; set keep-all=1 on "
            "the storage (retention then comes from the policy's keep) or choose another "
            "storage")


#: After a failed backup, the next try waits this share of ``every_h`` (within the bounds).
RETRY_SHARE = 1 / 6
RETRY_MIN_S, RETRY_MAX_S = 600.0, 3600.0


def failed_recently(tasks: Iterable[TaskEntry], vmid: int, due: DueState, *, now: float,
                    every_s: float) -> str | None:
    """Why a due backup waits: the guest's newest vzdump task failed a short while ago.

    A failing guest (a full storage PVE did not report, a broken guest) would otherwise get a
    failed vzdump on every pass -- thousands a day. The next try comes ``every_h`` / 6 after
    the failure, at least 10 minutes and at most an hour later.
    """
    mine = [t for t in tasks if t.type == "vzdump" and t.id == str(vmid)
            and t.endtime is not None]
    task = max(mine, key=lambda t: (t.starttime, t.upid), default=None)
    if task is None or (task.status or "").startswith(("OK", "WARNINGS")):
        return None
    newest = due.newest
    if newest is not None and newest.ctime is not None and newest.ctime >= task.starttime:
        return None
    assert task.endtime is not None  # noqa: S101 - filtered above
    wait = min(RETRY_MAX_S, max(RETRY_MIN_S, every_s * RETRY_SHARE))
    if now >= task.endtime + wait:
        return None
    return (f"the last backup task {task.upid} failed ({task.status or 'unknown status'}); "
            f"next try in {task.endtime + wait - now:.0f} s")


def plan_guest_backup(want: GuestDesired, facts: BackupFacts) -> GuestBackupPlan | None:
    """The backup decision for one desired guest (``None`` without a policy)."""
    policy = want.backup
    if policy is None:
        return None
    vmid, gtype, storage = want.vmid, str(want.type), policy.storage

    def status(state: str, reason: str, due: DueState | None = None) -> BackupStatus:
        return BackupStatus(vmid, gtype, storage, state, reason, due)

    check = check_policy(policy, facts.storages)
    if not check.ok:
        if check.problem == "invalid":
            return GuestBackupPlan(status("refused", check.reason), refused=check.reason)
        return GuestBackupPlan(status("blocked", check.reason), blocked=check.reason)
    hidden = hidden_backups(facts.permissions, storage, vmid)
    if hidden is not None:
        return GuestBackupPlan(status("refused", hidden), refused=hidden)
    own = own_retention(facts.configs, storage)
    if own is not None:
        return GuestBackupPlan(status("refused", own), refused=own)
    if storage not in facts.volumes:
        why = facts.errors.get(storage, "not read")
        reason = f"backup listing of {storage} failed: {why}"
        return GuestBackupPlan(status("blocked", reason), blocked=reason)
    volumes = facts.volumes[storage]
    due = due_state(policy, vmid=vmid, guest_type=gtype, volumes=volumes, now=facts.now,
                    tz=facts.tz)
    if due.due:
        failed = failed_recently(facts.tasks, vmid, due, now=facts.now, every_s=policy.every_s)
        if failed is not None:
            return GuestBackupPlan(status("failed", failed, due))
        space = check_space(storage=storage, avail=facts.storages[storage].avail,
                            newest=due.newest, margin_pct=facts.margin_pct)
        if not space.allowed:
            return GuestBackupPlan(status("refused", space.reason, due), refused=space.reason)
        params = {"storage": storage, "mode": str(policy.mode)}
        return GuestBackupPlan(status("due", due.reason, due), action=("backup", params))
    keep = prune_options(policy.keep, facts.min_keep)
    if due.stale or keep is None or policy.keep is None:
        return GuestBackupPlan(status("due" if due.stale else "ok", due.reason, due))
    mine = [v for v in volumes if v.belongs_to(vmid, gtype)]
    marks = mark_backups(mine, effective_keep(policy.keep, facts.min_keep), facts.tz)
    if any(m.mark is PruneMarkKind.REMOVE for m in marks):
        params = {"storage": storage, "keep": keep}
        return GuestBackupPlan(status("ok", due.reason, due), action=("prune", params))
    return GuestBackupPlan(status("ok", due.reason, due))
