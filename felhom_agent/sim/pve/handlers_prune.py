"""Removing backups: ``DELETE .../content/{volume}`` and ``.../prunebackups`` (dry run + run).

Both deletions run as tasks (``imgdel`` and ``prunebackups``, task id ``<vmid>@<storage>``
when a vmid is known, else the storage id), so their failures -- a protected volume -- show
as the task's exitstatus, not as an HTTP error. ``delay`` on the content DELETE waits up to N
seconds and answers ``null`` when the task finished OK. The dry run needs only Datastore.Audit
or AllocateSpace and lists every backup of the storage (no per-item filter); the real prune
needs Datastore.Allocate, or AllocateSpace plus VM.Backup when a vmid is given.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from zoneinfo import ZoneInfo

from felhom_agent.sim.pve.apierror import param_error, server_error
from felhom_agent.sim.pve.context import Ctx
from felhom_agent.sim.pve.handlers_storage import find_volume, require_online
from felhom_agent.sim.pve.prune import mark_group, parse_keep
from felhom_agent.sim.pve.storage import Backup, SimStorage
from felhom_agent.sim.pve.tasks import TaskError, TaskLog, TaskPlan

__all__ = ["content_delete", "prune_dry_run", "prune_marks", "prune_run", "remove_backup"]


def remove_backup(st: SimStorage, b: Backup) -> str | None:
    """Remove ``b`` from ``st`` (caller holds the state condition); the error text or None."""
    if b.protected:
        if st.is_pbs:
            return (f"removing backup snapshot {b.filename} failed - backup snapshot is "
                    f"protected")
        return f"cannot remove protected volume 'backup/{b.filename}' on '{st.name}'"
    st.backups.remove(b)
    st.release(b.size)
    return None


def content_delete(ctx: Ctx) -> str | None:
    """DELETE .../content/{volume}: an ``imgdel`` task (``delay``: wait, answer null if OK)."""
    rt = ctx.rt
    with rt.state.cond:
        st, volid = find_volume(ctx)
        b = st.find(volid)
        owner = b.vmid if b is not None else None
        if owner is not None:
            ctx.require(f"/storage/{st.name}", "Datastore.AllocateSpace")
            ctx.require(f"/vms/{owner}", "VM.Backup")
        else:
            ctx.require(f"/storage/{st.name}", "Datastore.Allocate")
        require_online(ctx, st)

    def end(log: TaskLog) -> None:
        current = st.find(volid)
        if current is None:
            raise TaskError(f"unlink '{st.spec.config.get('path', '/var/lib/vz')}/dump/"
                            f"{volid.split('/', 1)[-1]}' failed - No such file or directory")
        error = remove_backup(st, current)
        if error is not None:
            raise TaskError(error)
        log.line(f"Removed volume '{volid}'")

    task_id = f"{owner}@{st.name}" if owner is not None else st.name
    upid = rt.fork(TaskPlan(type="imgdel", vmid=None, id=task_id, end=end),
                   ctx.principal.token_id)
    delay = ctx.int_param("delay")
    if delay:
        rt.tasks.wait(upid, float(delay))
        rec = rt.tasks.get(upid)
        if rec is not None and rec.status == "stopped":
            status = rec.exitstatus or "unexpected status"
            if status == "OK" or status.startswith("WARNINGS: "):
                return None
            raise server_error(status)
    return upid


def _keep(ctx: Ctx, st: SimStorage) -> dict[str, int]:
    text = ctx.str_param("prune-backups")
    if text is None:
        text_cfg = st.spec.config.get("prune-backups")
        if text_cfg is None:
            raise server_error(f"no prune-backups options configured for storage '{st.name}'")
        return parse_keep(str(text_cfg))
    try:
        return parse_keep(text)
    except ValueError as err:
        raise param_error({"prune-backups": str(err)}) from None


def prune_marks(st: SimStorage, keep: Mapping[str, int], vmid: int | None,
                gtype: str | None, tz: ZoneInfo) -> list[dict[str, Any]]:
    """The dry-run list for ``st`` (caller holds the state condition)."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    out: list[dict[str, Any]] = []
    for b in sorted(st.backups, key=lambda x: x.volid):
        if vmid is not None and not st.vmid_matches(b, vmid):
            continue
        if gtype is not None and b.subtype != gtype:
            continue
        entry: dict[str, Any] = {"volid": b.volid, "ctime": b.ctime, "type": b.subtype}
        if b.vmid is not None:
            entry["vmid"] = b.vmid
        if b.std_name and b.vmid is not None:
            groups.setdefault((b.subtype, b.vmid), []).append(entry)
        else:
            entry["mark"] = "renamed"
        if b.protected:
            entry["mark"] = "protected"
        out.append(entry)
    for group in groups.values():
        mark_group(group, keep, tz)
    return out


def _prune_args(ctx: Ctx) -> tuple[SimStorage, dict[str, int], int | None, str | None]:
    st = ctx.rt.state.storages.get(str(ctx.params["storage"]))
    if st is None:
        raise server_error(f"storage '{ctx.params['storage']}' does not exist")
    if not st.has_content("backup"):
        raise server_error(f"storage '{st.name}' does not support backups")
    keep = _keep(ctx, st)
    require_online(ctx, st)
    return st, keep, ctx.int_param("vmid"), ctx.str_param("type")


def prune_dry_run(ctx: Ctx) -> list[dict[str, Any]]:
    """GET .../prunebackups: ``[{volid, ctime, type, vmid, mark}]``, nothing removed."""
    with ctx.rt.state.cond:
        st, keep, vmid, gtype = _prune_args(ctx)
        return prune_marks(st, keep, vmid, gtype, ctx.rt.state.tz)


def prune_run(ctx: Ctx) -> str:
    """DELETE .../prunebackups: a ``prunebackups`` task removing the ``remove`` marks."""
    rt = ctx.rt
    with rt.state.cond:
        vmid = ctx.int_param("vmid")
        storage = str(ctx.params["storage"])
        if vmid is not None:
            ctx.require(f"/storage/{storage}", "Datastore.AllocateSpace")
            ctx.require(f"/vms/{vmid}", "VM.Backup")
        else:
            ctx.require(f"/storage/{storage}", "Datastore.Allocate")
        st, keep, vmid, gtype = _prune_args(ctx)

    def end(log: TaskLog) -> None:
        failed = False
        for entry in prune_marks(st, keep, vmid, gtype, rt.state.tz):
            if entry["mark"] != "remove":
                continue
            log.line(f"removing backup '{entry['volid']}'")
            b = st.find(entry["volid"])
            error = remove_backup(st, b) if b is not None else "no such volume"
            if error is not None:
                log.line(f"error when removing backup '{entry['volid']}' - {error}")
                failed = True
        if failed:
            raise TaskError("error pruning backups - check log")

    task_id = f"{vmid}@{st.name}" if vmid is not None else st.name
    return rt.fork(TaskPlan(type="prunebackups", vmid=None, id=task_id, end=end),
                   ctx.principal.token_id)
