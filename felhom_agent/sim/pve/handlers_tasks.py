"""Task handlers: task list, status, log, stop and index.

The task list follows ``docs/pve-facts.md`` ("Task list"): the default ``source=archive`` lists
finished tasks only; running entries keep the full ``user@realm!token`` in ``user`` while
finished ones split off ``tokenid``; ``errors=1`` drops only ``OK`` tasks; ``limit=0`` returns
no entries but still counts ``total``. Another token's task needs Sys.Audit on the node.
"""

from __future__ import annotations

from typing import Any

from felhom_agent.sim.pve.apierror import param_error
from felhom_agent.sim.pve.context import Ctx, Result
from felhom_agent.sim.pve.tasks import TaskRecord
from felhom_agent.sim.pve.upid import parse_upid

__all__ = ["task_delete", "task_index", "task_list", "task_log", "task_status"]


def _task_entry(rec: TaskRecord) -> dict[str, Any]:
    u = rec.upid
    entry: dict[str, Any] = {"upid": rec.upid_str, "node": u.node, "pid": u.pid,
                             "pstart": u.pstart, "starttime": u.starttime, "type": u.type,
                             "id": u.id, "user": u.user}
    if rec.status == "running":
        entry["status"] = "RUNNING"
    else:
        user, _, token = u.user.partition("!")
        entry["user"] = user
        if token:
            entry["tokenid"] = token
        entry.update(endtime=rec.endtime, status=rec.exitstatus)
    return entry


def _status_class(exitstatus: str | None) -> str:
    if exitstatus == "OK":
        return "ok"
    if exitstatus and exitstatus.startswith("WARNINGS: "):
        return "warning"
    if not exitstatus or exitstatus == "unexpected status":
        return "unknown"
    return "error"


def task_list(ctx: Ctx) -> Result:
    """GET /nodes/{node}/tasks."""
    p = ctx.params
    source = str(p.get("source", "archive"))
    audit = ctx.has(f"/nodes/{ctx.rt.node}", "Sys.Audit")
    with ctx.rt.state.cond:
        picked = _filter_tasks(ctx, source, audit)
    start, limit = int(p.get("start", 0)), int(p.get("limit", 50))
    return Result(picked[start:start + limit], total=len(picked))


def _filter_tasks(ctx: Ctx, source: str, audit: bool) -> list[dict[str, Any]]:
    p = ctx.params
    picked = []
    for rec in reversed(ctx.rt.tasks.records()):
        running = rec.status == "running"
        if (source == "archive" and running) or (source == "active" and not running):
            continue
        if not audit and rec.upid.user != ctx.principal.token_id:
            continue
        if "vmid" in p and rec.upid.id != str(p["vmid"]):
            continue
        if "typefilter" in p and rec.upid.type != p["typefilter"]:
            continue
        if "userfilter" in p and str(p["userfilter"]) not in rec.upid.user.split("!")[0]:
            continue
        if int(p.get("errors", 0)) and rec.exitstatus == "OK":
            continue
        if "statusfilter" in p and not running and _status_class(rec.exitstatus) not in str(
                p["statusfilter"]).split(","):
            continue
        if "since" in p and rec.upid.starttime < int(p["since"]):
            continue
        if "until" in p and rec.upid.starttime > int(p["until"]):
            continue
        picked.append(_task_entry(rec))
    return picked


def _task(ctx: Ctx, audit_priv: str = "Sys.Audit") -> TaskRecord | None:
    text = str(ctx.params["upid"])
    upid = parse_upid(text)
    if upid is None:
        raise param_error({"upid": "unable to parse worker upid"})
    rec = ctx.rt.tasks.get(text)
    if rec is None or upid.node != ctx.rt.node:
        return None
    if rec.upid.user != ctx.principal.token_id:
        ctx.require(f"/nodes/{ctx.rt.node}", audit_priv)
    return rec


def task_status(ctx: Ctx) -> dict[str, Any]:
    """GET /nodes/{node}/tasks/{upid}/status."""
    rec = _task(ctx)
    if rec is None:
        raise param_error({"upid": "no such task"})
    with ctx.rt.state.cond:
        entry = _task_entry(rec)
        user, _, token = rec.upid.user.partition("!")
        entry.update(user=user, status="running" if rec.status == "running" else "stopped")
        entry.pop("endtime", None)
        if token:
            entry["tokenid"] = token
        if rec.status == "stopped":
            entry["exitstatus"] = rec.exitstatus
        return entry


def task_log(ctx: Ctx) -> Result:
    """GET /nodes/{node}/tasks/{upid}/log (paged; unknown task -> 200 'unable to open')."""
    rec = _task(ctx)
    if rec is None:
        return Result([{"n": 1, "t": "unable to open file - No such file or directory"}],
                      total=1)
    with ctx.rt.state.cond:
        lines = list(rec.log.lines) or ["no content"]
    start, limit = int(ctx.params.get("start", 0)), int(ctx.params.get("limit", 50))
    window = lines[start:] if limit == 0 else lines[start:start + limit]
    return Result([{"n": start + i + 1, "t": t} for i, t in enumerate(window)],
                  total=len(lines))


def task_delete(ctx: Ctx) -> None:
    """DELETE /nodes/{node}/tasks/{upid}: interrupt the worker."""
    rec = _task(ctx, audit_priv="Sys.Modify")
    if rec is None:
        raise param_error({"upid": "no such task"})
    ctx.rt.tasks.interrupt(rec.upid_str)


def task_index(ctx: Ctx) -> list[dict[str, str]]:
    """GET /nodes/{node}/tasks/{upid}: the sub-directory index."""
    _task(ctx)
    return [{"name": "log"}, {"name": "status"}]
