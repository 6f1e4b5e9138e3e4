"""The handlers of the backup kinds: ``backup``, ``prune``, ``backup.delete``, ``backup.protect``.

Each function is referenced by one entry of :mod:`felhom_agent.kinds.registry`. The rules they
carry (``docs/architecture.md``, "Backup policy"; ``docs/pve-facts.md``, "Backups"):

* **backup**: one ``vzdump`` of one guest to the job's storage, with ``notes-template``
  ``felhom op=<op id>`` so the new volume can be found again -- after the task (*done means
  found*: ``OK`` is not the end, the volume must be in the listing) and after a crash (the
  volume with this op id is the op's, so a second backup is never sent). Before the call the
  space check: vzdump checks no free space, so the agent requires ``avail`` >= the guest's
  newest backup there x (1 + ``space_margin_pct``). A failed task's reason is the guest's own
  ``ERROR:`` line from the task log (``job errors`` alone says nothing).
* **prune**: PVE's dry run first, checked against the local rules (the ``min_keep`` floor,
  never a protected backup, never another guest's), the volids it removes go to the audit,
  then the prune itself.
* **backup.delete** / **backup.protect**: act on one volume of the op's vmid; a protected
  backup is never deleted.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from felhom_agent.backup.notes import find_op_backup, notes_template
from felhom_agent.backup.prune import review_prune
from felhom_agent.backup.space import check_space
from felhom_agent.kinds.model import JobSpec, Observed, Preflight, Settings, job_storage
from felhom_agent.proxmox.backup_models import BackupVolume
from felhom_agent.proxmox.client import ProxmoxClient
from felhom_agent.proxmox.tasks import Dispatch
from felhom_agent.proxmox.upid import Upid

__all__ = [
    "backup",
    "backup_failure",
    "backup_found",
    "backup_preflight",
    "backup_summary",
    "delete_backup",
    "protect_backup",
    "protect_matches",
    "prune",
    "prune_preflight",
    "storage_task_id",
    "volid_in_summary",
    "volume_gone",
    "volume_preflight",
]


def _str(job: JobSpec, name: str) -> str:
    value = job.params.get(name)
    return value if isinstance(value, str) else ""


def _mine(job: JobSpec, obs: Observed) -> list[BackupVolume]:
    """The listed backups of the job's guest (vmid and type), newest first."""
    vols = [v for v in obs.backups or () if v.belongs_to(job.vmid, job.guest_type.value)]
    return sorted(vols, key=lambda v: v.ctime or 0, reverse=True)


def storage_task_id(vmid: int, params: Mapping[str, Any]) -> str:
    """``<vmid>@<storage>``: the id PVE gives prune and volume-delete tasks."""
    storage = params.get("storage")
    if not isinstance(storage, str) or not storage:
        volid = params.get("volid")
        storage = volid.split(":", 1)[0] if isinstance(volid, str) else ""
    return f"{vmid}@{storage}"


# ------------------------------------------------------------------ backup


def backup(c: ProxmoxClient, job: JobSpec, obs: Observed) -> Dispatch:
    """``POST /nodes/{node}/vzdump`` of this one guest, tagged with the op id in its notes."""
    protected = job.params.get("protected")
    # remove=0: PVE never prunes behind the agent's back (its prune has a dry run, an audit
    # line and the backup.min_keep floor; a storage retention of its own is refused).
    return c.vzdump(job.vmid, job_storage(job), mode=_str(job, "mode") or "snapshot",
                    notes_template=notes_template(job.op_id),
                    protected=protected if isinstance(protected, bool) else None, remove=False)


def _found(job: JobSpec, obs: Observed) -> BackupVolume | None:
    hit = find_op_backup(obs.backups or (), op_id=job.op_id, vmid=job.vmid,
                         guest_type=job.guest_type.value, storage=job_storage(job),
                         dispatched_at=obs.since)
    return None if hit is None else hit.volume


def backup_found(job: JobSpec, obs: Observed) -> bool:
    """The op's backup is in the listing (its op id in the notes, else made since the begin)."""
    return _found(job, obs) is not None


def backup_summary(job: JobSpec, obs: Observed) -> str:
    """``backup local:backup/vzdump-lxc-101-….tar.zst`` for the applied outcome."""
    vol = _found(job, obs)
    if vol is None:
        return ""
    size = "size unknown" if vol.size is None else f"{vol.size} bytes"
    return f"backup {vol.volid} ({size})"


_SUMMARY_VOLID = re.compile(r"(?:^|; )backup (\S+:backup/\S+) \(")


def volid_in_summary(reason: str) -> str | None:
    """The volid an applied backup's reason names (what :func:`backup_summary` wrote)."""
    match = _SUMMARY_VOLID.search(reason)
    return match.group(1) if match else None


def backup_preflight(c: ProxmoxClient, job: JobSpec, obs: Observed,
                     settings: Settings) -> Preflight:
    """The space check against the storage's ``avail`` (read now, not from the plan)."""
    storage = job_storage(job)
    mine = _mine(job, obs)
    status = c.storage_status(storage)
    if not status.reachable:
        return Preflight(refused=f"storage {storage} is not active (PVE cannot reach it); "
                         "no backup sent")
    space = check_space(storage=storage, avail=status.avail, newest=mine[0] if mine else None,
                        margin_pct=settings.space_margin_pct)
    return Preflight() if space.allowed else Preflight(refused=space.reason)


def backup_failure(c: ProxmoxClient, job: JobSpec, upid: Upid) -> str | None:
    """The guest's ``ERROR:`` line (or the job's) from the vzdump task log."""
    return c.vzdump_log(upid).error_for(job.vmid)


# ------------------------------------------------------------------ prune


def prune(c: ProxmoxClient, job: JobSpec, obs: Observed) -> Dispatch:
    """``DELETE .../prunebackups`` for this guest with the job's keep options."""
    return c.prune(job_storage(job), job.vmid, job.guest_type.value, _str(job, "keep"))


def prune_preflight(c: ProxmoxClient, job: JobSpec, obs: Observed,
                    settings: Settings) -> Preflight:
    """PVE's dry run, checked against the local floor and protection before anything goes."""
    storage = job_storage(job)
    rows = c.prune_dry_run(storage, job.vmid, job.guest_type.value, _str(job, "keep"))
    protected = [v.volid for v in obs.backups or () if v.protected]
    review = review_prune(rows, vmid=job.vmid, guest_type=job.guest_type.value,
                          min_keep=settings.min_keep, protected=protected)
    if not review.allowed:
        return Preflight(refused=review.reason)
    if not review.remove:
        return Preflight(done=f"nothing to prune on {storage} (keeps {review.kept})")
    return Preflight(audit=f"prune dry run on {storage} ({_str(job, 'keep')}): keep "
                     f"{review.kept}, remove {', '.join(review.remove)}")


# ------------------------------------------------------------------ one volume


def _volume(job: JobSpec, obs: Observed) -> BackupVolume | None:
    volid = _str(job, "volid")
    return next((v for v in obs.backups or () if v.volid == volid), None)


def volume_preflight(c: ProxmoxClient, job: JobSpec, obs: Observed,
                     settings: Settings) -> Preflight:
    """The volume must be listed, belong to the op's vmid, and (to delete) be unprotected."""
    volid = _str(job, "volid")
    vol = _volume(job, obs)
    if vol is None:
        return Preflight(refused=f"backup {volid} is not in the listing of "
                         f"{job_storage(job)} (wrong volid, or the token may not see it: "
                         "VM.Backup plus Datastore.AllocateSpace)")
    if vol.vmid != job.vmid:
        return Preflight(refused=f"backup {volid} belongs to vmid {vol.vmid}, "
                         f"not {job.vmid}")
    if job.kind == "backup.delete" and vol.protected:
        return Preflight(refused=f"backup {volid} is protected; a protected backup is never "
                         "deleted (unprotect it with a signed backup.protect first)")
    return Preflight()


def delete_backup(c: ProxmoxClient, job: JobSpec, obs: Observed) -> Dispatch:
    """``DELETE .../content/{volume}``: an ``imgdel`` task."""
    return c.delete_backup(job_storage(job), _str(job, "volid"))


def volume_gone(job: JobSpec, obs: Observed) -> bool:
    """``backup.delete`` is done once the volume is no longer listed."""
    return _volume(job, obs) is None


def protect_backup(c: ProxmoxClient, job: JobSpec, obs: Observed) -> Dispatch:
    """``PUT .../content/{volume}`` with ``protected`` (synchronous)."""
    c.update_backup(job_storage(job), _str(job, "volid"),
                    protected=job.params.get("protected") is True)
    return Dispatch(None)


def protect_matches(job: JobSpec, obs: Observed) -> bool:
    """``backup.protect`` is done when the volume's protection is what the op asks."""
    vol = _volume(job, obs)
    return vol is not None and vol.protected is (job.params.get("protected") is True)
