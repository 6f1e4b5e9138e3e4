"""Node-level handlers: version, nodes, node status, cluster resources, storage, disks,
tasks, effective permissions and vzdump.

Visibility rules follow the schema descriptions: lists silently drop entries the caller may
not see (guests without VM.Audit, storages without Datastore.Audit/AllocateSpace, other
users' tasks without Sys.Audit on ``/nodes/<node>``), and node stats are omitted without
Sys.Audit. The task list follows the addendum of API-FACTS.md (archive = finished only,
running entries keep the full token id in ``user``, finished ones split off ``tokenid``).
"""

from __future__ import annotations

from typing import Any

from felhom_agent.sim.pve.apierror import param_error, server_error
from felhom_agent.sim.pve.context import Ctx, Result
from felhom_agent.sim.pve.handlers_guests import guest_summary
from felhom_agent.sim.pve.privileges import Principal
from felhom_agent.sim.pve.tasks import TaskError, TaskLog, TaskPlan, TaskRecord
from felhom_agent.sim.pve.upid import parse_upid

__all__ = [
    "access_permissions", "cluster_resources", "disks_list", "node_status", "nodes",
    "storage_content", "storage_list", "storage_status", "task_delete", "task_index",
    "task_list", "task_log", "task_status", "version", "vzdump",
]

_GIB = 2**30


def version(ctx: Ctx) -> dict[str, Any]:
    """GET /version."""
    v = ctx.rt.scenario.pve_version
    return {"version": v, "release": ".".join(v.split(".")[:2]), "repoid": "14a22df35955"}


def _node_stats(ctx: Ctx) -> dict[str, Any]:
    return {"cpu": 0.03, "maxcpu": 8, "mem": 6 * _GIB, "maxmem": 32 * _GIB,
            "disk": 9 * _GIB, "maxdisk": 94 * _GIB,
            "uptime": int(ctx.rt.clock() - ctx.rt.boot_time) + 86_400}


def nodes(ctx: Ctx) -> list[dict[str, Any]]:
    """GET /nodes (stats only with Sys.Audit on /nodes/<node>)."""
    entry: dict[str, Any] = {"node": ctx.rt.node, "id": f"node/{ctx.rt.node}", "type": "node",
                             "status": "online", "level": "",
                             "ssl_fingerprint": ctx.rt.fingerprint}
    if ctx.has(f"/nodes/{ctx.rt.node}", "Sys.Audit"):
        entry.update(_node_stats(ctx))
    return [entry]


def node_status(ctx: Ctx) -> dict[str, Any]:
    """GET /nodes/{node}/status."""
    stats = _node_stats(ctx)
    return {
        "uptime": stats["uptime"], "idle": 0, "loadavg": ["0.12", "0.20", "0.18"],
        "kversion": "Linux 6.14.8-2-pve #1 SMP PREEMPT_DYNAMIC PMX 6.14.8-2",
        "current-kernel": {"sysname": "Linux", "release": "6.14.8-2-pve",
                           "version": "#1 SMP PREEMPT_DYNAMIC PMX 6.14.8-2", "machine": "x86_64"},
        "boot-info": {"mode": "efi", "secureboot": 0},
        "cpuinfo": {"cpus": 8, "cores": 4, "sockets": 1, "model": "Simulated CPU", "mhz": "3000",
                    "hvm": "1", "flags": "", "user_hz": 100},
        "cpu": stats["cpu"], "wait": 0.0,
        "memory": {"total": stats["maxmem"], "used": stats["mem"],
                   "free": stats["maxmem"] - stats["mem"],
                   "available": stats["maxmem"] - stats["mem"]},
        "ksm": {"shared": 0}, "swap": {"total": 8 * _GIB, "used": 0, "free": 8 * _GIB},
        "pveversion": f"pve-manager/{ctx.rt.scenario.pve_version}/14a22df35955",
        "rootfs": {"total": stats["maxdisk"], "used": stats["disk"],
                   "free": stats["maxdisk"] - stats["disk"],
                   "avail": stats["maxdisk"] - stats["disk"]},
    }


def _storage_visible(ctx: Ctx, storage: str) -> bool:
    path = f"/storage/{storage}"
    return ctx.has(path, "Datastore.Audit") or ctx.has(path, "Datastore.AllocateSpace")


def _storage_entry(ctx: Ctx, name: str) -> dict[str, Any]:
    s = ctx.rt.state.storages[name].spec
    return {"storage": s.storage, "type": s.type, "content": s.content, "active": 1,
            "enabled": 1, "shared": int(s.shared), "total": s.total, "used": s.used,
            "avail": s.total - s.used, "used_fraction": round(s.used / s.total, 6)}


def cluster_resources(ctx: Ctx) -> list[dict[str, Any]]:
    """GET /cluster/resources (``type`` filter vm|storage|node|sdn)."""
    rtype = ctx.str_param("type")
    out: list[dict[str, Any]] = []
    with ctx.rt.state.cond:
        if rtype in (None, "node"):
            entry = {"id": f"node/{ctx.rt.node}", "type": "node", "node": ctx.rt.node,
                     "status": "online", "level": ""}
            if ctx.has(f"/nodes/{ctx.rt.node}", "Sys.Audit"):
                entry.update(_node_stats(ctx))
            out.append(entry)
        if rtype in (None, "vm"):
            for g in sorted(ctx.rt.state.guests.values(), key=lambda g: g.vmid):
                if not ctx.has(f"/vms/{g.vmid}", "VM.Audit"):
                    continue
                s = guest_summary(ctx, g)
                item = {"id": f"{g.type}/{g.vmid}", "vmid": g.vmid, "node": ctx.rt.node,
                        "type": g.type, "status": g.status, "name": s["name"],
                        "template": int(g.config.get("template", 0)),
                        **{k: s[k] for k in ("uptime", "cpu", "maxmem", "mem", "maxdisk",
                                             "netin", "netout", "diskread", "diskwrite")},
                        "maxcpu": s["cpus"], "disk": s.get("disk", 0)}
                for key in ("lock", "tags"):
                    if key in s:
                        item[key] = s[key]
                if g.ha_managed:
                    item["hastate"] = "started"
                out.append(item)
        if rtype in (None, "storage"):
            for name in sorted(ctx.rt.state.storages):
                if _storage_visible(ctx, name):
                    e = _storage_entry(ctx, name)
                    out.append({"id": f"storage/{ctx.rt.node}/{name}", "type": "storage",
                                "node": ctx.rt.node, "storage": name, "status": "available",
                                "plugintype": e["type"], "content": e["content"],
                                "disk": e["used"], "maxdisk": e["total"],
                                "shared": e["shared"]})
    return out


def storage_list(ctx: Ctx) -> list[dict[str, Any]]:
    """GET /nodes/{node}/storage."""
    want = {c for c in (ctx.str_param("content") or "").split(",") if c}
    only = ctx.str_param("storage")
    with ctx.rt.state.cond:
        out = []
        for name in sorted(ctx.rt.state.storages):
            if only is not None and name != only:
                continue
            e = _storage_entry(ctx, name)
            if want and not want & set(e["content"].split(",")):
                continue
            if _storage_visible(ctx, name):
                out.append(e)
        return out


def _storage(ctx: Ctx) -> str:
    name = str(ctx.params["storage"])
    if name not in ctx.rt.state.storages:
        raise param_error({"storage": "No such storage."})
    return name


def storage_status(ctx: Ctx) -> dict[str, Any]:
    """GET /nodes/{node}/storage/{storage}/status."""
    with ctx.rt.state.cond:
        e = _storage_entry(ctx, _storage(ctx))
        del e["storage"], e["used_fraction"]
        return e


def storage_content(ctx: Ctx) -> list[dict[str, Any]]:
    """GET .../content, each volume filtered like ``check_volume_access``."""
    content = ctx.str_param("content")
    vmid = ctx.int_param("vmid")
    with ctx.rt.state.cond:
        name = _storage(ctx)
        out = []
        for vol in ctx.rt.state.storages[name].volumes:
            if content is not None and vol.get("content") != content:
                continue
            if vmid is not None and vol.get("vmid") != vmid:
                continue
            if vol.get("content") == "backup" and not (
                    ctx.has(f"/storage/{name}", "Datastore.Allocate")
                    or ("vmid" in vol and ctx.has(f"/vms/{vol['vmid']}", "VM.Backup"))):
                continue
            out.append(dict(vol))
        return out


def disks_list(ctx: Ctx) -> list[dict[str, Any]]:
    """GET /nodes/{node}/disks/list."""
    return [dict(d) for d in ctx.rt.scenario.disks]


# -- tasks ---------------------------------------------------------------------------------
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
    start, limit = int(p.get("start", 0)), int(p.get("limit", 50))
    return Result(picked[start:start + limit], total=len(picked))


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


# -- access ----------------------------------------------------------------------------------
_STD_PATHS = ("/", "/access", "/access/groups", "/nodes", "/pool", "/sdn", "/storage", "/vms")


def access_permissions(ctx: Ctx) -> dict[str, dict[str, int]]:
    """GET /access/permissions: the caller's effective privileges (privsep intersected)."""
    userid = ctx.str_param("userid")
    if userid is not None and userid != ctx.principal.token_id:
        ctx.require("/access", "Sys.Audit")
        target = next((t for t in ctx.rt.tokens.values() if t.token_id == userid), None)
        if target is None:
            raise server_error(f"no such user/token '{userid}'")
        principal = Principal(token_id=target.token_id, privsep=target.privsep,
                              user_grants=target.user_grants, token_grants=target.token_grants)
    else:
        principal = ctx.principal
    path = ctx.str_param("path")
    paths = [path] if path is not None else sorted(set(_STD_PATHS) | principal.acl_paths())
    out: dict[str, dict[str, int]] = {}
    for p in paths:
        privs = principal.privileges_on(p)
        if privs or path is not None:
            out[p] = dict.fromkeys(sorted(privs), 1)
    return out


# -- vzdump ----------------------------------------------------------------------------------
def vzdump(ctx: Ctx) -> str:
    """POST /nodes/{node}/vzdump: one task for the guests on this node (or ``"OK"``)."""
    p = ctx.params
    for key in ("tmpdir", "dumpdir", "script", "job-id"):
        if key in p:
            raise param_error({key: "Only root may set this option."})
    rt = ctx.rt
    storage = str(p.get("storage", "local"))
    with rt.state.cond:
        if storage not in rt.state.storages:
            raise server_error(f"storage '{storage}' does not exist")
        ctx.require(f"/storage/{storage}", "Datastore.AllocateSpace")
        if int(p.get("all", 0)):
            wanted = sorted(rt.state.guests)
        else:
            raw = str(p.get("vmid", ""))
            try:
                wanted = sorted({int(v) for v in raw.replace(";", ",").split(",") if v})
            except ValueError:
                raise param_error({"vmid": "invalid format - value does not look like a "
                                           "valid VM ID"}) from None
            if not wanted:
                raise param_error({"vmid": "property is missing and it is not optional"})
        local = [v for v in wanted if v in rt.state.guests]
        if not local:
            return "OK"
        mode = str(p.get("mode", "snapshot"))
        failed: list[int] = []
        locked: list[int] = []

        def begin(log: TaskLog) -> None:
            for vmid in local:
                g = rt.state.guests[vmid]
                log.line(f"INFO: Starting Backup of VM {vmid} ({g.type})")
                reason = None
                if not ctx.has(f"/vms/{vmid}", "VM.Backup"):
                    reason = f"Permission check failed (/vms/{vmid}, VM.Backup)"
                elif g.lock:
                    reason = f"{g.kind_word} is locked ({g.lock})"
                if reason is not None:
                    log.line(f"ERROR: Backup of VM {vmid} failed - {reason}")
                    failed.append(vmid)
                    continue
                g.config["lock"] = "backup"
                locked.append(vmid)

        def end(log: TaskLog) -> None:
            stamp = "2026_01_01-00_00_00"
            for vmid in locked:
                g = rt.state.guests.get(vmid)
                if g is None:
                    continue
                kind = "qemu" if g.type == "qemu" else "lxc"
                ext = "vma.zst" if kind == "qemu" else "tar.zst"
                rt.state.storages[storage].volumes.append(
                    {"volid": f"{storage}:backup/vzdump-{kind}-{vmid}-{stamp}.{ext}",
                     "content": "backup", "format": ext, "size": 1_000_000, "vmid": vmid,
                     "ctime": int(rt.clock()), "notes": f"mode={mode}"})
                log.line(f"INFO: Finished Backup of VM {vmid}")
            if failed:
                log.line("INFO: Backup job finished with errors")
                raise TaskError("job errors")
            log.line("INFO: Backup job finished successfully")

        def cleanup() -> None:
            for vmid in locked:
                g = rt.state.guests.get(vmid)
                if g is not None and g.config.get("lock") == "backup":
                    del g.config["lock"]

        task_id = str(local[0]) if len(local) == 1 else ""
        return rt.fork(TaskPlan(type="vzdump", vmid=local[0] if len(local) == 1 else None,
                                id=task_id, begin=begin, end=end, cleanup=cleanup),
                       ctx.principal.token_id)
