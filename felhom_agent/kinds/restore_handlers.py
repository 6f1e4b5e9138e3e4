"""The handlers of ``guest.restore``: a backup brought back into a guest, behind a safety backup.

Each function is referenced by the ``restore`` entry of :mod:`felhom_agent.kinds.registry`.
The rules (``docs/architecture.md``, "Restore"; the PVE side in ``docs/pve-facts.md``,
"Restore and provisioning"):

* **Before anything runs** (:func:`read_restore_gate`, the kind's own gate reads): the archive
  must be in its storage's content listing and be a backup of a known guest type; an existing
  target must be a guest of that type on this node (a taken vmid elsewhere in the cluster is
  refused). Without ``storage`` the disks go where the archived guest's root disk was, read
  from the archived config (``vzdump/extractconfig``) -- never PVE's default, which for a
  container is ``local`` and cannot hold its disk on a stock node.
* **The gate** (:func:`prepare_restore`, pure): a free target is simply restored into
  (additive). An existing one is overwritten with ``force``: a protected guest never is, a
  running one only with ``stop_first`` (a journalled stop step), and the gate puts a safety
  backup step (``backup`` to ``backup.safety_storage``, default the archive's storage,
  ``protected``, notes ``felhom safety op=<step op id>``) before the restore; only once that
  backup is found in the listing may the restore run.
* **Done** (:func:`restored`): the restore's own journalled task ended OK (or with warnings),
  and the target exists, holds no lock, and runs when ``start`` was asked. The task is the
  proof: a guest restored over looks like the guest before it, so the guest alone never shows
  that a restore happened; nor is a restore ever "already done" before it was sent.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

from felhom_agent.kinds.handlers import STOP_SUFFIX, is_backup_volid
from felhom_agent.kinds.model import (
    GateInput,
    GateRefused,
    GuestFacts,
    JobSpec,
    Observed,
    Prepared,
    Settings,
    Step,
)
from felhom_agent.proxmox.backup_models import BackupVolume
from felhom_agent.proxmox.client import ProxmoxClient
from felhom_agent.proxmox.errors import ParameterError, PveError
from felhom_agent.proxmox.models import GuestType
from felhom_agent.proxmox.tasks import Dispatch
from felhom_agent.storageids import STORAGE_ID_RULE, is_storage_id
from felhom_agent.vmids import VMID_RANGE, is_vmid

__all__ = [
    "RESTORE_ARCHIVE_PARAM",
    "archived_root_storage",
    "observe_restore",
    "prepare_restore",
    "read_restore_gate",
    "restore",
    "restore_summary",
    "restored",
]

#: The safety backup step's param naming the archive the restore is for (the report reads it
#: while the restore's own entry does not exist yet; vzdump never sees it).
RESTORE_ARCHIVE_PARAM: Final = "restore_archive"
#: The params only the gate reads (never sent to PVE).
_GATE_ONLY: Final = ("target_vmid", "stop_first", "safety_storage")
_QEMU_DISK: Final = re.compile(r"(?:ide|sata|scsi|virtio)\d{1,2}")
#: Without a boot order, the root disk is the first of these that holds a volume.
_QEMU_ROOT_ORDER: Final = ("scsi0", "virtio0", "sata0", "ide0")
_OK_EXIT: Final = re.compile(r"OK|WARNINGS: \d+")


def _refuse(why: str) -> GateRefused:
    return GateRefused(f"guest.restore refused: {why}")


def _flag(params: Mapping[str, Any], name: str) -> bool:
    return params.get(name) is True


# ------------------------------------------------------------------ the archived config


def _config_lines(text: str) -> dict[str, str]:
    """The main section of a guest config file as ``key -> raw value`` (comments skipped)."""
    conf: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("["):
            break  # a snapshot or pending section follows
        if line.startswith("#"):
            continue
        key, sep, value = line.partition(":")
        if sep and key.strip():
            conf[key.strip()] = value.strip()
    return conf


def _storage_of_disk(value: str) -> str | None:
    if "media=cdrom" in value:
        return None
    volume = value.split(",", 1)[0].strip()
    volume = volume.removeprefix("volume=").removeprefix("file=")
    sid, sep, _ = volume.partition(":")
    return sid if sep and is_storage_id(sid) else None


def archived_root_storage(guest_type: GuestType, text: str) -> str | None:
    """The storage of the root disk in an archived config (``extractconfig``'s text).

    A container's is its ``rootfs``. A VM's is the first disk of its ``boot: order=`` (else
    its legacy ``bootdisk``, else the first of scsi0, virtio0, sata0, ide0) that holds a
    volume on a storage (a CD-ROM or a raw device path does not). ``None`` when none does.
    """
    conf = _config_lines(text)
    if guest_type is GuestType.LXC:
        keys: list[str] = ["rootfs"]
    else:
        boot = conf.get("boot", "")
        order = boot.split("order=", 1)[1].split(",", 1)[0].split(";") if "order=" in boot else []
        keys = [k.strip() for k in order if _QEMU_DISK.fullmatch(k.strip())]
        if "bootdisk" in conf:
            keys.append(conf["bootdisk"])
        keys.extend(_QEMU_ROOT_ORDER)
    for key in keys:
        value = conf.get(key)
        sid = _storage_of_disk(value) if value else None
        if sid is not None:
            return sid
    return None


# ------------------------------------------------------------------ the gate's reads


def _archive(c: ProxmoxClient, volid: str) -> BackupVolume:
    storage = volid.split(":", 1)[0]
    try:
        listing = c.backups(storage)
    except ParameterError as err:
        raise _refuse(f"the archive's storage {storage} cannot be listed: {err}") from err
    found = next((v for v in listing if v.volid == volid), None)
    if found is None:
        raise _refuse(f"archive {volid} is not in the content listing of {storage} (a wrong "
                      "volid, or the token may not see it: it needs VM.Backup on the backed-up "
                      "guest plus Datastore.AllocateSpace on the storage)")
    if found.subtype is None:
        raise _refuse(f"archive {volid} is not a backup of a known guest type (PVE lists its "
                      "type as unknown)")
    return found


def _target(c: ProxmoxClient, vmid: int, archive: BackupVolume) -> GuestFacts:
    wanted = archive.subtype
    assert wanted is not None  # noqa: S101 - _archive refused an unknown type
    listed = {g.vmid: g for g in c.guests()}
    guest = listed.get(vmid)
    if guest is None:
        if not c.vmid_free(vmid):
            raise _refuse(f"vmid {vmid} is taken, but not by a guest on node {c.node} that "
                          "this token may see (another node, or no VM.Audit)")
        return GuestFacts(vmid=vmid, type=wanted, running=False, protected=False,
                          exists=False)
    if guest.type is not wanted:
        raise _refuse(f"archive {archive.volid} is a {wanted.value} backup, but guest {vmid} "
                      f"is {guest.type.value}: a restore keeps the guest type")
    status = c.guest_status(vmid, guest.type)
    config = c.guest_config(vmid, guest.type)
    protection = str(config.values.get("protection", "0"))
    return GuestFacts(vmid=vmid, type=guest.type, running=status.running,
                      protected=protection not in ("0", "", "False", "false"))


def read_restore_gate(c: ProxmoxClient, vmid: int, params: Mapping[str, Any],
                      settings: Settings) -> GateInput:
    """Find the archive, read the target, and resolve ``storage`` and the safety storage.

    Raises:
        GateRefused: the archive or the target forbid the restore (the reason says why).
        PveError: a read failed (the consumer retries, then reports it).
    """
    volid = str(params["archive"])
    if not is_backup_volid(volid):
        raise _refuse(f"archive {volid[:80]!r} is not a backup volume id (<storage>:backup/...)")
    target = params.get("target_vmid", vmid)
    if not is_vmid(target):
        raise _refuse(f"target_vmid {str(target)[:20]} is not a vmid ({VMID_RANGE})")
    storage = params.get("storage")
    if storage is not None and not is_storage_id(str(storage)):
        raise _refuse(f"storage {str(storage)[:70]!r} is not {STORAGE_ID_RULE}")
    archive = _archive(c, volid)
    guest = _target(c, target, archive)
    resolved = dict(params)
    resolved["target_vmid"] = target
    if storage is None:
        try:
            text = c.extract_config(volid)
        except ParameterError as err:
            raise _refuse(f"the archived config of {volid} cannot be read: {err}") from err
        root = archived_root_storage(guest.type, text)
        if root is None:
            raise _refuse(f"the archived config of {volid} names no storage for the root disk; "
                          "give params.storage")
        resolved["storage"] = root
    resolved["safety_storage"] = settings.safety_storage or archive.storage
    return GateInput(guest=guest, params=resolved)


# ------------------------------------------------------------------ the gate


def prepare_restore(op_id: str, params: Mapping[str, Any], guest: GuestFacts) -> Prepared:
    """The gate's rules for a restore on ``guest`` (the target as just read).

    A free vmid: the restore alone. An existing guest: never a protected one; a running one
    only with ``stop_first`` (its stop step first); then the safety backup (the gate adds it
    from :attr:`Prepared.safety_backup`) and the restore with ``force``.
    """
    rest = {k: v for k, v in params.items() if k not in _GATE_ONLY}
    if not guest.exists:
        return Prepared(rest)
    if guest.protected:
        raise _refuse(f"guest {guest.vmid} is protected (protection: 1); a protected guest "
                      "is never overwritten")
    pre: tuple[Step, ...] = ()
    if guest.running:
        if not _flag(params, "stop_first"):
            raise _refuse(f"guest {guest.vmid} is running (set params.stop_first: true to "
                          "stop it first)")
        pre = (Step(op_id + STOP_SUFFIX, "stop", {}, "stop-first"),)
    rest["force"] = True
    safety = {"storage": str(params["safety_storage"]),
              RESTORE_ARCHIVE_PARAM: str(params["archive"])}
    return Prepared(rest, pre, safety_backup=safety)


# ------------------------------------------------------------------ the call and its proof


def restore(c: ProxmoxClient, job: JobSpec, obs: Observed) -> Dispatch:
    """``POST /nodes/{node}/{lxc|qemu}`` as a restore of the job's archive into its vmid."""
    storage = job.params.get("storage")
    return c.restore(job.vmid, job.guest_type, str(job.params["archive"]),
                     force=_flag(job.params, "force"), unique=_flag(job.params, "unique"),
                     start=_flag(job.params, "start"),
                     storage=storage if isinstance(storage, str) else None)


def observe_restore(c: ProxmoxClient, job: JobSpec, since: float | None,
                    upid: str | None) -> Observed:
    """The target (``status`` None when it does not exist) and the restore's own task."""
    status = None
    if any(g.vmid == job.vmid for g in c.guests()):
        try:
            status = c.guest_status(job.vmid, job.guest_type)
        except PveError:
            # listed a moment ago, gone now (a failed container restore removes it)
            if any(g.vmid == job.vmid for g in c.guests()):
                raise
    task = c.task_status(upid) if upid is not None else None
    return Observed(status=status, since=since, task=task)


def restored(job: JobSpec, obs: Observed) -> bool:
    """The restore's own task ended OK (or with warnings), and the target exists, holds no
    lock, and runs when ``start`` was asked."""
    task = obs.task
    if obs.since is None or task is None or task.running:
        return False
    if task.exitstatus is None or not _OK_EXIT.fullmatch(task.exitstatus.strip()):
        return False
    status = obs.status
    if status is None or status.lock is not None:
        return False
    return status.running or not _flag(job.params, "start")


def restore_summary(job: JobSpec, obs: Observed) -> str:
    """``restored <archive> into lxc 102 (running)`` for the applied outcome."""
    state = obs.status.status if obs.status is not None else "unknown"
    return f"restored {job.params.get('archive')} into {job.guest_type.value} {job.vmid} ({state})"
