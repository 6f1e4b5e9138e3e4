"""Checks shared by restore, clone and template conversion: pools, storages, volume access,
allocation rights and the per-key config privileges of a new guest.

All of them answer like PVE: an unknown pool is a 400 on ``pool``; an unknown storage a 500
``storage 'x' does not exist``; a volume of the wrong content type ``unable to use volume <volid>
- content type needs to be 'backup'``; a backup the caller may not read a 403 (Datastore.Allocate
on its storage, or Datastore.AllocateSpace there plus VM.Backup on its guest -- restoring into
the backup's own vmid needs neither); ``VM.Allocate`` on ``/vms/<vmid>`` or on the pool.
Callers hold the state condition.
"""

from __future__ import annotations

import re

from felhom_agent.sim.pve.apierror import ApiError, param_error, perm_error, server_error
from felhom_agent.sim.pve.context import Ctx
from felhom_agent.sim.pve.handlers_storage import backup_access_error
from felhom_agent.sim.pve.state import Guest
from felhom_agent.sim.pve.storage import Backup, SimStorage
from felhom_agent.sim.pve.tasks import TaskCrash, Worker

__all__ = ["check_lxc_features", "check_pool", "check_vm_perm", "fault_error", "fault_warnings",
           "flock_or_timeout", "may_allocate", "storage_enabled", "volume_access", "work"]

_OWNER_RES = (re.compile(r"^backup/vzdump-(?:lxc|openvz|qemu)-([1-9][0-9]{2,8})-"),
              re.compile(r"^backup/(?:ct|vm)/([1-9][0-9]{2,8})/"))


def check_pool(ctx: Ctx, pool: str | None) -> None:
    """400 on ``pool`` unless it names an existing pool (or is absent)."""
    if pool is not None and pool not in ctx.rt.state.pools:
        raise param_error({"pool": f"pool '{pool}' does not exist"})


def may_allocate(ctx: Ctx, vmid: int, pool: str | None) -> bool:
    """VM.Allocate on ``/vms/<vmid>``, or on ``/pool/<pool>`` when a pool is given."""
    return ctx.has(f"/vms/{vmid}", "VM.Allocate") or (
        pool is not None and ctx.has(f"/pool/{pool}", "VM.Allocate"))


def check_vm_perm(ctx: Ctx, vmid: int, pool: str | None, priv: str) -> None:
    """``check_vm_perm``: ``priv`` on the guest or on its pool, else the 403 naming the guest."""
    if ctx.has(f"/vms/{vmid}", priv) or (pool is not None and ctx.has(f"/pool/{pool}", priv)):
        return
    raise perm_error(f"/vms/{vmid}", priv)


def check_lxc_features(ctx: Ctx, vmid: int, pool: str | None, value: str,
                       unprivileged: bool) -> None:
    """A token setting ``features`` on a new container: only ``nesting`` alone, and only on an
    unprivileged one (PVE's root-only rule for every other flag)."""
    if not unprivileged:
        raise perm_error(
            "changing feature flags for privileged container is only allowed for root@pam")
    flags = {p.split("=", 1)[0] for p in value.split(",") if p}
    if flags - {"nesting"}:
        raise perm_error("changing feature flags (except nesting) is only allowed for root@pam")
    if flags:
        check_vm_perm(ctx, vmid, pool, "VM.Allocate")


def storage_enabled(ctx: Ctx, sid: str) -> SimStorage:
    """``storage_check_enabled``: the storage, or PVE's 500."""
    st = ctx.rt.state.storages.get(sid)
    if st is None:
        raise server_error(f"storage '{sid}' does not exist")
    if not st.spec.enabled:
        raise server_error(f"storage '{sid}' is disabled")
    return st


def _vtype(name: str) -> str:
    head = name.split("/", 1)[0]
    return head if "/" in name and head in ("backup", "vztmpl", "iso", "import", "snippets") \
        else "images"


def volume_access(ctx: Ctx, volid: str, vmid: int,
                  content: str) -> tuple[SimStorage, Backup | None]:
    """``check_volume_access`` for a volume used as ``content`` by guest ``vmid``.

    Returns the storage and, for a backup, the volume (None when it is not on the storage: the
    caller decides when that is noticed).
    """
    sid, sep, name = volid.partition(":")
    if not sep:
        raise server_error("Only root can pass arbitrary filesystem paths.")
    st = ctx.rt.state.storages.get(sid)
    if st is None:
        raise server_error(f"storage '{sid}' does not exist")
    vtype = _vtype(name)
    if vtype != content:
        raise server_error(f"unable to use volume {volid} - content type needs to be "
                           f"'{content}'")
    backup = st.find(volid) if vtype == "backup" else None
    path = f"/storage/{sid}"
    if ctx.has(path, "Datastore.Allocate"):
        return st, backup
    if vtype in ("iso", "vztmpl", "import"):
        if not (ctx.has(path, "Datastore.AllocateSpace") or ctx.has(path, "Datastore.Audit")):
            raise perm_error(path, "Datastore.AllocateSpace|Datastore.Audit")
        return st, backup
    owner = backup.vmid if backup is not None else _owner(name)
    if owner is not None and owner == vmid:
        return st, backup
    if backup is not None:
        err: ApiError | None = backup_access_error(ctx, st, backup)
        if err is not None:
            raise err
        return st, backup
    if owner is None:
        raise ApiError(403, f"missing privileges to access {volid}\n")
    ctx.require(path, "Datastore.AllocateSpace")
    ctx.require(f"/vms/{owner}", "VM.Backup")
    return st, backup


def _owner(name: str) -> int | None:
    for pattern in _OWNER_RES:
        m = pattern.match(name)
        if m:
            return int(m[1])
    return None


def flock_or_timeout(ctx: Ctx, guest: Guest, owner: str, prefix: str = "") -> None:
    """Take and keep ``guest``'s config flock for ``owner``, or PVE's ``got timeout`` 500."""
    state = ctx.rt.state
    if not state.acquire_flock(guest.vmid, owner, ctx.rt.scenario.lock_wait_s):
        raise server_error(f"{prefix}can't lock file '{guest.flock_path()}' - got timeout")


def work(w: Worker, duration: float) -> None:
    """The task's working time: ``duration``, or until interrupted under ``task_hang``."""
    fault = w.rec.fault
    if fault is not None and fault.kind == "task_hang":
        w.hang()
    else:
        w.wait(duration)


def fault_error(w: Worker) -> str | None:
    """How an injected fault ends the task: an interrupt or ``task_fail`` text (None: no
    failure); ``task_crash`` raises :class:`TaskCrash` (no cleanup, locks stay)."""
    fault = w.rec.fault
    if w.stopped:
        return "interrupted by signal"
    if fault is None:
        return None
    if fault.kind == "task_crash":
        raise TaskCrash(f"{w.rec.upid.type} killed")
    if fault.kind == "task_fail" and not fault.message.startswith("WARNINGS: "):
        return fault.message
    return None


def fault_warnings(w: Worker) -> None:
    """A ``task_fail`` with ``WARNINGS: n``: the task succeeds with n warnings."""
    fault = w.rec.fault
    if fault is not None and fault.kind == "task_fail" and fault.message.startswith("WARNINGS: "):
        for i in range(int(fault.message.removeprefix("WARNINGS: ") or 0)):
            w.log.warn(f"simulated warning {i + 1}")
