"""Guest handlers: lists, status, power operations and config read/write.

Where each check happens (synchronously in the request or later in the task) follows the facts in
``docs/pve-facts.md`` ("Calls: synchronous or a task", "Locks"): qemu start/stop/shutdown check
locks *in the task*; LXC start and stop/shutdown refuse synchronously when the container is already
running / not running; qemu PUT config and LXC PUT config are synchronous (LXC returns ``null``),
qemu POST config forks ``qmconfig`` and answers with a UPID.
"""

from __future__ import annotations

import re
from typing import Any

from felhom_agent.sim.pve.apierror import param_error, perm_error, server_error
from felhom_agent.sim.pve.context import Ctx
from felhom_agent.sim.pve.state import Guest, normalise_tags
from felhom_agent.sim.pve.tasks import TaskError, TaskLog, TaskPlan

__all__ = [
    "config_get", "config_post_qemu", "config_put", "guest_list", "power", "status_current",
]

_SIZE_RE = re.compile(r"size=(\d+)([KMGT]?)")
_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
CONTROL_KEYS = ("node", "vmid", "digest", "delete", "revert", "skiplock", "force",
                "background_delay")

# Per-key privilege groups (qemu $check_vm_modify_config_perm, LXC check_ct_modify_config_perm).
_QEMU_KEY_PRIV = {
    "cores": "VM.Config.CPU", "sockets": "VM.Config.CPU", "cpulimit": "VM.Config.CPU",
    "memory": "VM.Config.Memory", "balloon": "VM.Config.Memory", "scsihw": "VM.Config.HWType",
}
_LXC_KEY_PRIV = {
    "cores": "VM.Config.CPU", "cpulimit": "VM.Config.CPU", "memory": "VM.Config.Memory",
    "swap": "VM.Config.Memory", "hostname": "VM.Config.Network",
    "nameserver": "VM.Config.Network", "searchdomain": "VM.Config.Network",
}


def _key_priv(gtype: str, key: str) -> str:
    if key.startswith("net") and key[3:].isdigit():
        return "VM.Config.Network"
    if gtype == "qemu" and key.startswith("serial") and key[6:].isdigit():
        return "VM.Config.HWType"
    table = _QEMU_KEY_PRIV if gtype == "qemu" else _LXC_KEY_PRIV
    return table.get(key, "VM.Config.Options")


def _disk_bytes(guest: Guest) -> int:
    for key in ("rootfs", "scsi0", "virtio0", "sata0", "ide0"):
        m = _SIZE_RE.search(str(guest.config.get(key, "")))
        if m:
            return int(m.group(1)) * _UNITS[m.group(2)]
    return 0


def guest_summary(ctx: Ctx, guest: Guest) -> dict[str, Any]:
    """The list/status fields PVE's ``vmstatus`` reports for ``guest``."""
    running = guest.status == "running"
    mem_mib = int(str(guest.config.get("memory", 512 if guest.type == "lxc" else 2048)))
    maxmem = mem_mib * 2**20
    cpus = int(guest.config.get("cores", 1)) * int(guest.config.get("sockets", 1))
    out: dict[str, Any] = {
        "vmid": guest.vmid, "name": guest.name, "status": guest.status, "cpus": cpus,
        "maxmem": maxmem, "maxdisk": _disk_bytes(guest), "mem": maxmem // 4 if running else 0,
        "cpu": 0.01 if running else 0, "netin": 0, "netout": 0, "diskread": 0, "diskwrite": 0,
        "uptime": int(ctx.rt.clock() - guest.started_at) if running and guest.started_at else 0,
    }
    if guest.type == "lxc":
        out.update(type="lxc", maxswap=int(guest.config.get("swap", 512)) * 2**20, swap=0,
                   disk=out["maxdisk"] // 5 if running else 0)
    if running:
        out["pid"] = guest.pid if guest.pid is not None else 100_000 + guest.vmid
    if guest.lock:
        out["lock"] = guest.lock
    if int(guest.config.get("template", 0)):
        out["template"] = 1
    if guest.config.get("tags"):
        out["tags"] = guest.config["tags"]
    return out


def guest_list(ctx: Ctx, gtype: str) -> list[dict[str, Any]]:
    """GET /nodes/{node}/{qemu|lxc}: guests of that type the caller may VM.Audit."""
    with ctx.rt.state.cond:
        return [guest_summary(ctx, g) for g in sorted(ctx.rt.state.guests.values(),
                                                      key=lambda g: g.vmid)
                if g.type == gtype and ctx.has(f"/vms/{g.vmid}", "VM.Audit")]


def status_current(ctx: Ctx, gtype: str) -> dict[str, Any]:
    """GET .../status/current."""
    with ctx.rt.state.cond:
        guest = ctx.guest(gtype)
        out = guest_summary(ctx, guest)
        out["ha"] = {"managed": 1, "state": "started"} if guest.ha_managed else {"managed": 0}
        if gtype == "qemu":
            out["qmpstatus"] = guest.status
            if guest.config.get("agent"):
                out["agent"] = 1
        return out


def _no_skiplock(ctx: Ctx) -> None:
    if "skiplock" in ctx.params:
        raise param_error({"skiplock": "Only root may use this option."})


def _lock_msg(guest: Guest) -> str:
    return f"{guest.kind_word} is locked ({guest.lock})"


def power(ctx: Ctx, gtype: str, action: str) -> str:
    """POST .../status/{start|stop|shutdown}: fork the power task."""
    _no_skiplock(ctx)
    rt, vmid = ctx.rt, ctx.vmid
    with rt.state.cond:
        guest = rt.state.guests.get(vmid)
        if guest is not None and guest.type != gtype:
            guest = None
        if gtype == "lxc":
            if action == "start" and guest is not None and guest.status == "running":
                raise server_error(f"CT {vmid} already running")
            if action != "start" and (guest is None or guest.status != "running"):
                raise server_error(f"CT {vmid} not running")
        ha = guest is not None and guest.ha_managed
        prefix = "qm" if gtype == "qemu" else "vz"
        ttype = ("hastart" if action == "start" else "hastop") if ha else prefix + action

        def live() -> Guest:
            g = rt.state.guests.get(vmid)
            if g is None or g.type != gtype:
                if gtype == "qemu" and action != "start":
                    raise TaskError(f"unable to find configuration file for VM {vmid} "
                                    f"on node '{rt.node}'")
                sub = "qemu-server" if gtype == "qemu" else "lxc"
                raise TaskError(f"Configuration file 'nodes/{rt.node}/{sub}/{vmid}.conf' "
                                "does not exist")
            return g

        def begin(log: TaskLog) -> None:
            g = live()
            tolerated = {"start": ("suspended", "mounted"), "stop": ("mounted",)}
            if action == "start":
                if g.lock and g.lock not in tolerated["start"]:
                    raise TaskError(_lock_msg(g))
                if g.status == "running":
                    raise TaskError(f"VM {vmid} already running")
                if int(g.config.get("template", 0)):
                    raise TaskError("you can't start a vm if it's a template")
            elif g.status == "running" and g.lock and (
                    action == "shutdown" or g.lock not in tolerated["stop"]):
                raise TaskError(_lock_msg(g))
            if ha:
                log.line(f"Requesting HA {action} for VM {vmid}")

        def end(log: TaskLog) -> None:
            g = live()
            if action == "start":
                g.status, g.started_at = "running", rt.clock()
            elif g.status == "running":
                g.status, g.started_at = "stopped", None
            else:
                log.line(f"VM {vmid} not running - nothing to do")

        plan = TaskPlan(type=ttype, vmid=vmid, id=str(vmid), begin=begin, end=end,
                        hold_flock=True)
        return rt.fork(plan, ctx.principal.token_id)


def config_get(ctx: Ctx, gtype: str) -> dict[str, Any]:
    """GET .../config (``snapshot=<name>`` returns that snapshot's config)."""
    with ctx.rt.state.cond:
        guest = ctx.guest(gtype)
        snap = ctx.str_param("snapshot")
        if snap is None:
            return guest.config_view()
        s = guest.snapshots.get(snap)
        if s is None:
            raise server_error(f"snapshot '{snap}' does not exist")
        view = dict(s.config)
        view.update(snaptime=s.snaptime)
        if s.parent:
            view["parent"] = s.parent
        view["digest"] = guest.digest()
        return view


def _check_config_perms(ctx: Ctx, guest: Guest, keys: list[str]) -> None:
    path = f"/vms/{guest.vmid}"
    for key in keys:
        if guest.type == "qemu" and key in ("args", "hookscript", "lock"):
            raise server_error(f"only root can set '{key}' config")
        if guest.type == "lxc" and key == "hookscript":
            raise perm_error("changing the hookscript is only allowed for root@pam")
        if guest.type == "lxc" and key.startswith("dev"):
            raise perm_error("configuring device passthrough is only allowed for root@pam")
        if guest.type == "lxc" and key == "features":
            check_features(ctx, guest, str(ctx.params.get("features", "")))
            continue
        ctx.require(path, _key_priv(guest.type, key))
        if guest.type == "qemu" and key == "startup":
            ctx.require("/", "Sys.Modify")


def check_features(ctx: Ctx, guest: Guest, value: str) -> None:
    if int(guest.config.get("unprivileged", 0)) != 1:
        raise perm_error(
            "changing feature flags for privileged container is only allowed for root@pam")
    flags = {p.split("=", 1)[0] for p in value.split(",") if p}
    old = {p.split("=", 1)[0] for p in str(guest.config.get("features", "")).split(",") if p}
    if (flags | old) - {"nesting"}:
        raise perm_error("changing feature flags (except nesting) is only allowed for root@pam")
    ctx.require(f"/vms/{guest.vmid}", "VM.Allocate")


def _changes(ctx: Ctx) -> tuple[dict[str, Any], list[str]]:
    sets = {k: v for k, v in ctx.params.items() if k not in CONTROL_KEYS}
    deletes = [k for k in str(ctx.params.get("delete", "")).replace(";", ",").split(",") if k]
    both = sorted(set(sets) & set(deletes))
    if both:
        raise param_error({"delete": f"you can't use '-{both[0]}' and '-delete {both[0]}' "
                                     "at the same time"})
    if not sets and not deletes and "revert" not in ctx.params:
        raise server_error("no options specified")
    return sets, deletes


def _apply(guest: Guest, sets: dict[str, Any], deletes: list[str]) -> None:
    for key, value in sets.items():
        stored = value
        if key == "tags":
            stored = normalise_tags(str(value))
        elif key == "memory" and guest.type == "qemu":
            stored = str(value)  # string-typed property string since PVE 8.1
        guest.config[key] = stored
    for key in deletes:
        guest.config.pop(key, None)


def _sync_checks(ctx: Ctx, guest: Guest) -> None:
    if guest.lock:
        raise server_error(_lock_msg(guest))
    digest = ctx.str_param("digest")
    if digest is not None and digest != guest.digest():
        if guest.type == "qemu":
            raise server_error("checksum mismatch (file change by other user?)")
        raise server_error("detected modified configuration - file changed by other user? "
                           "Try again.")


def config_put(ctx: Ctx, gtype: str) -> None:
    """PUT .../config: synchronous update under the config flock; answers ``null``."""
    if gtype == "qemu":
        _no_skiplock(ctx)
    rt = ctx.rt
    owner = f"request-{id(ctx)}"
    with rt.state.cond:
        guest = ctx.guest(gtype)
        sets, deletes = _changes(ctx)
        _check_config_perms(ctx, guest, list(sets) + deletes)
        if not rt.state.acquire_flock(guest.vmid, owner, rt.scenario.lock_wait_s):
            raise server_error(f"can't lock file '{guest.flock_path()}' - got timeout")
        try:
            _sync_checks(ctx, guest)
            _apply(guest, sets, deletes)
        finally:
            rt.state.release_flock(guest.vmid, owner)


def config_post_qemu(ctx: Ctx) -> str | None:
    """POST qemu config: early checks, then a ``qmconfig`` task (or ``null`` with
    ``background_delay`` when the task finishes OK in time)."""
    _no_skiplock(ctx)
    rt = ctx.rt
    with rt.state.cond:
        guest = ctx.guest("qemu")
        sets, deletes = _changes(ctx)
        _check_config_perms(ctx, guest, list(sets) + deletes)
        _sync_checks(ctx, guest)
        vmid = guest.vmid

        def end(_log: TaskLog) -> None:
            g = rt.state.guests.get(vmid)
            if g is None:
                raise TaskError(f"Configuration file 'nodes/{rt.node}/qemu-server/{vmid}.conf'"
                                " does not exist")
            if g.lock:
                raise TaskError(_lock_msg(g))
            _apply(g, sets, deletes)

        upid = rt.fork(TaskPlan(type="qmconfig", vmid=vmid, id=str(vmid), end=end,
                                hold_flock=True), ctx.principal.token_id)
    delay = ctx.int_param("background_delay")
    if delay is None:
        return upid
    if rt.tasks.wait(upid, float(delay)):
        rec = rt.tasks.get(upid)
        if rec is not None and rec.exitstatus != "OK":
            raise server_error(f"failed to update VM {vmid}: {rec.exitstatus}")
        return None
    return upid
