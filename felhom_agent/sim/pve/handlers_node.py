"""Node-level handlers: version, nodes, node status, cluster resources, disks and effective
permissions (storage handlers: :mod:`felhom_agent.sim.pve.handlers_storage`).

Visibility rules follow the schema descriptions: lists silently drop entries the caller may
not see (guests without VM.Audit, storages without Datastore.Audit/AllocateSpace, other
users' tasks without Sys.Audit on ``/nodes/<node>``), and node stats are omitted without
Sys.Audit. The task list follows ``docs/pve-facts.md`` ("Task list"): archive = finished only,
running entries keep the full token id in ``user``, finished ones split off ``tokenid``.
"""

from __future__ import annotations

from typing import Any

from felhom_agent.sim.pve.apierror import param_error, server_error
from felhom_agent.sim.pve.context import Ctx
from felhom_agent.sim.pve.handlers_guests import guest_summary
from felhom_agent.sim.pve.handlers_storage import storage_visible
from felhom_agent.sim.pve.privileges import Principal

__all__ = [
    "access_permissions", "cluster_resources", "disks_list", "disks_smart", "node_status",
    "nodes", "version",
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
                if g.pool is not None:
                    item["pool"] = g.pool
                out.append(item)
        if rtype in (None, "storage"):
            for name, st in sorted(ctx.rt.state.storages.items()):
                if storage_visible(ctx, name):
                    e = st.status_entry()
                    out.append({"id": f"storage/{ctx.rt.node}/{name}", "type": "storage",
                                "node": ctx.rt.node, "storage": name,
                                "status": "available" if e["active"] else "unknown",
                                "plugintype": e["type"], "content": e["content"],
                                "disk": e["used"], "maxdisk": e["total"],
                                "shared": e["shared"]})
    return out


def disks_list(ctx: Ctx) -> list[dict[str, Any]]:
    """GET /nodes/{node}/disks/list."""
    return [dict(d) for d in ctx.rt.scenario.disks]


def disks_smart(ctx: Ctx) -> dict[str, Any]:
    """GET /nodes/{node}/disks/smart?disk=/dev/X, shaped like PVE's ``get_smart_data``: ATA
    disks give ``attributes`` (``type: ata``), NVMe ones smartctl's text (``type: text``);
    ``healthonly`` gives ``health`` alone."""
    disk = str(ctx.params["disk"])
    found = next((d for d in ctx.rt.scenario.disks if d.get("devpath") == disk), None)
    if found is None:
        raise param_error({"disk": f"no such disk '{disk}'"})
    health = str(found.get("health", "UNKNOWN"))
    if int(ctx.params.get("healthonly", 0)):
        return {"health": health}
    if found.get("type") == "nvme":
        return {"health": health, "type": "text",
                "text": "SMART/Health Information (NVMe Log 0x02)\nCritical Warning: 0x00\n"}
    ok = health == "PASSED"
    return {"health": health, "type": "ata", "attributes": [
        {"id": "  5", "name": "Reallocated_Sector_Ct", "value": 200 if ok else 100,
         "worst": 200 if ok else 100, "threshold": 140, "fail": "-" if ok else "FAILING_NOW",
         "flags": "PO--CK", "normalized": 200 if ok else 100, "raw": "0" if ok else "1432"},
        {"id": "194", "name": "Temperature_Celsius", "value": 114, "worst": 98,
         "threshold": 0, "fail": "-", "flags": "-O---K", "normalized": 114, "raw": "36"},
    ]}


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
