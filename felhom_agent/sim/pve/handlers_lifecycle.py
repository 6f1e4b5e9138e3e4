"""Snapshot, rollback and destroy handlers (all asynchronous, all locking).

Snapshot create sets ``lock: snapshot`` and shows the new snapshot with
``snapstate: prepare`` while it runs; delete sets ``lock: snapshot-delete``; rollback sets
``lock: rollback``, stops a running guest and restores the snapshot's config except the
current ``description`` (started again only with ``start=1``); destroy sets
``lock: destroyed``; create sets ``lock: create``. Lock conflicts and missing snapshots fail
*in the task* with PVE's texts, reserved snapshot names and protection fail synchronously.
"""

from __future__ import annotations

import copy
from typing import Any

from felhom_agent.sim.pve.apierror import param_error, server_error
from felhom_agent.sim.pve.context import Ctx
from felhom_agent.sim.pve.state import Guest, Snapshot, description_read
from felhom_agent.sim.pve.tasks import TaskError, TaskLog, TaskPlan

__all__ = ["destroy", "snapshot_create", "snapshot_delete", "snapshot_list",
           "snapshot_rollback"]


def _live(ctx: Ctx, gtype: str, vmid: int) -> Guest:
    g = ctx.rt.state.guests.get(vmid)
    if g is None or g.type != gtype:
        sub = "qemu-server" if gtype == "qemu" else "lxc"
        raise TaskError(f"Configuration file 'nodes/{ctx.rt.node}/{sub}/{vmid}.conf' "
                        "does not exist")
    return g


def _check_lock(g: Guest) -> None:
    if g.lock:
        raise TaskError(f"{g.kind_word} is locked ({g.lock})")


def _clear_lock(ctx: Ctx, vmid: int, lock: str) -> None:
    g = ctx.rt.state.guests.get(vmid)
    if g is not None and g.config.get("lock") == lock:
        del g.config["lock"]


def snapshot_list(ctx: Ctx, gtype: str) -> list[dict[str, Any]]:
    """GET .../snapshot: real snapshots plus the ``current`` pseudo-entry."""
    with ctx.rt.state.cond:
        g = ctx.guest(gtype)
        out: list[dict[str, Any]] = []
        for s in g.snapshots.values():
            item: dict[str, Any] = {"name": s.name, "snaptime": s.snaptime,
                                    "description": description_read(gtype, s.description) or ""}
            if s.parent:
                item["parent"] = s.parent
            if s.snapstate:
                item["snapstate"] = s.snapstate
            if gtype == "qemu":
                item["vmstate"] = s.vmstate
            out.append(item)
        current: dict[str, Any] = {"name": "current", "digest": g.digest(),
                                   "running": int(g.status == "running"),
                                   "description": "You are here!"}
        if g.config.get("parent"):
            current["parent"] = g.config["parent"]
        out.append(current)
        return out


def snapshot_create(ctx: Ctx, gtype: str) -> str:
    """POST .../snapshot: fork ``qmsnapshot``/``vzsnapshot``."""
    rt, vmid = ctx.rt, ctx.vmid
    name = str(ctx.params["snapname"])
    reserved = ("current", "pending") if gtype == "qemu" else ("current", "vzdump")
    if name.lower() in reserved:
        raise server_error(f"unable to use snapshot name '{name}' (reserved name)")
    descr = ctx.str_param("description", "") or ""
    with rt.state.cond:
        if gtype == "qemu":
            ctx.guest(gtype)  # qemu fails synchronously for a missing guest

        def begin(log: TaskLog) -> None:
            g = _live(ctx, gtype, vmid)
            _check_lock(g)
            if int(g.config.get("template", 0)):
                raise TaskError("you can't take a snapshot if it's a template")
            if name in g.snapshots:
                raise TaskError(f"snapshot name '{name}' already used")
            g.snapshots[name] = Snapshot(
                name=name, description=descr, snaptime=int(rt.clock()),
                parent=g.config.get("parent"), config=copy.deepcopy(g.snapshot_config()),
                vmstate=int(ctx.params.get("vmstate", 0)), snapstate="prepare")
            g.config["lock"] = "snapshot"
            log.line(f"snapshotting '{name}'")

        def end(_log: TaskLog) -> None:
            g = _live(ctx, gtype, vmid)
            g.snapshots[name].snapstate = None
            g.config["parent"] = name

        def cleanup() -> None:
            _clear_lock(ctx, vmid, "snapshot")
            g = rt.state.guests.get(vmid)
            if g is not None and name in g.snapshots and g.snapshots[name].snapstate:
                del g.snapshots[name]

        prefix = "qm" if gtype == "qemu" else "vz"
        return rt.fork(TaskPlan(type=prefix + "snapshot", vmid=vmid, id=str(vmid), begin=begin,
                                end=end, cleanup=cleanup), ctx.principal.token_id)


def snapshot_rollback(ctx: Ctx, gtype: str) -> str:
    """POST .../snapshot/{snapname}/rollback: fork ``qmrollback``/``vzrollback``."""
    rt, vmid = ctx.rt, ctx.vmid
    name = str(ctx.params["snapname"])
    start = bool(ctx.params.get("start", 0))
    if gtype == "qemu" and start:
        ctx.require(f"/vms/{vmid}", "VM.PowerMgmt")
    with rt.state.cond:
        def begin(log: TaskLog) -> None:
            g = _live(ctx, gtype, vmid)
            _check_lock(g)
            snap = g.snapshots.get(name)
            if snap is None:
                raise TaskError(f"snapshot '{name}' does not exist")
            if snap.snapstate:
                raise TaskError(f"unable to rollback to incomplete snapshot "
                                f"(snapstate = {snap.snapstate})")
            g.config["lock"] = "rollback"
            log.line(f"rolling back to '{name}'")

        def end(_log: TaskLog) -> None:
            g = _live(ctx, gtype, vmid)
            snap = g.snapshots[name]
            descr = g.config.get("description")
            g.config = copy.deepcopy(snap.config)
            g.config["lock"] = "rollback"
            g.config["parent"] = name
            if descr is not None:
                g.config["description"] = descr
            else:
                g.config.pop("description", None)
            if start:
                g.status, g.started_at = "running", rt.clock()
            else:
                g.status, g.started_at = "stopped", None

        prefix = "qm" if gtype == "qemu" else "vz"
        return rt.fork(TaskPlan(type=prefix + "rollback", vmid=vmid, id=str(vmid), begin=begin,
                                end=end, cleanup=lambda: _clear_lock(ctx, vmid, "rollback")),
                       ctx.principal.token_id)


def snapshot_delete(ctx: Ctx, gtype: str) -> str:
    """DELETE .../snapshot/{snapname}: fork ``qmdelsnapshot``/``vzdelsnapshot``."""
    rt, vmid = ctx.rt, ctx.vmid
    name = str(ctx.params["snapname"])
    with rt.state.cond:
        def begin(_log: TaskLog) -> None:
            g = _live(ctx, gtype, vmid)
            _check_lock(g)
            if name not in g.snapshots:
                raise TaskError(f"snapshot '{name}' does not exist")
            g.config["lock"] = "snapshot-delete"
            g.snapshots[name].snapstate = "delete"

        def end(_log: TaskLog) -> None:
            g = _live(ctx, gtype, vmid)
            gone = g.snapshots.pop(name)
            for s in g.snapshots.values():
                if s.parent == name:
                    s.parent = gone.parent
            if g.config.get("parent") == name:
                if gone.parent:
                    g.config["parent"] = gone.parent
                else:
                    g.config.pop("parent", None)

        def cleanup() -> None:
            _clear_lock(ctx, vmid, "snapshot-delete")
            g = rt.state.guests.get(vmid)
            if g is not None and name in g.snapshots:
                g.snapshots[name].snapstate = None

        prefix = "qm" if gtype == "qemu" else "vz"
        return rt.fork(TaskPlan(type=prefix + "delsnapshot", vmid=vmid, id=str(vmid),
                                begin=begin, end=end, cleanup=cleanup), ctx.principal.token_id)


def destroy(ctx: Ctx, gtype: str) -> str:
    """DELETE /nodes/{node}/{qemu|lxc}/{vmid}: sync checks, then ``qmdestroy``/``vzdestroy``."""
    if gtype == "qemu" and "skiplock" in ctx.params:
        raise param_error({"skiplock": "Only root may use this option."})
    rt, vmid = ctx.rt, ctx.vmid
    force = bool(ctx.params.get("force", 0))
    with rt.state.cond:
        g = ctx.guest(gtype)
        word = g.kind_word
        if int(g.config.get("protection", 0)):
            raise server_error(f"can't remove {word} {vmid} - protection mode enabled")
        if gtype == "lxc" and g.lock:
            raise server_error(f"CT is locked ({g.lock})")
        if g.status == "running":
            if gtype == "qemu":
                raise server_error(f"VM {vmid} is running - destroy failed")
            if not force:
                raise server_error(f"unable to destroy CT {vmid} - container is running")

        def begin(_log: TaskLog) -> None:
            live = _live(ctx, gtype, vmid)
            _check_lock(live)
            live.config["lock"] = "destroyed"

        def end(log: TaskLog) -> None:
            live = _live(ctx, gtype, vmid)
            if live.status == "running":
                log.line(f"stopping CT {vmid}")
            del rt.state.guests[vmid]
            log.line(f"destroyed {word} {vmid}")

        prefix = "qm" if gtype == "qemu" else "vz"
        return rt.fork(TaskPlan(type=prefix + "destroy", vmid=vmid, id=str(vmid), begin=begin,
                                end=end, cleanup=lambda: _clear_lock(ctx, vmid, "destroyed")),
                       ctx.principal.token_id)
