"""Guest creation: ``POST /nodes/{node}/lxc`` (``vzcreate``) and ``POST /nodes/{node}/qemu``
(``qmcreate``).

Both endpoints are ``user: all`` in the schema and check privileges in code: VM.Allocate on
``/vms/<vmid>``, Datastore.AllocateSpace on the storages used, Sys.Modify on ``/`` for a
privileged container, VM.PowerMgmt for qemu ``start=1``. A vmid in use is a synchronous 500
(``CT 100 already exists on node 'pve1'`` for LXC, ``unable to create VM 100 - VM 100 already
exists on node 'pve1'`` for qemu). The new guest carries ``lock: create`` while the task runs;
feature flags other than ``nesting`` are root@pam only, so API tokens are refused.
"""

from __future__ import annotations

import random
import uuid
from typing import Any

from felhom_agent.sim.pve.apierror import server_error
from felhom_agent.sim.pve.context import Ctx
from felhom_agent.sim.pve.handlers_guests import check_features
from felhom_agent.sim.pve.state import Guest, normalise_tags
from felhom_agent.sim.pve.tasks import TaskError, TaskLog, TaskPlan

__all__ = ["lxc_create", "qemu_create"]


def _live(ctx: Ctx, gtype: str, vmid: int) -> Guest:
    g = ctx.rt.state.guests.get(vmid)
    if g is None or g.type != gtype:
        raise TaskError(f"unable to find configuration file for {gtype} {vmid}")
    return g


_CREATE_KEYS = ("hostname", "memory", "swap", "cores", "unprivileged", "features", "onboot",
                "description", "tags", "ostype", "arch", "nameserver", "searchdomain",
                "protection", "cpulimit", "startup")


def lxc_create(ctx: Ctx) -> str:
    """POST /nodes/{node}/lxc: in-code permission checks, then ``vzcreate``."""
    rt, vmid = ctx.rt, ctx.vmid
    ctx.require(f"/vms/{vmid}", "VM.Allocate")
    template = str(ctx.params["ostemplate"])
    tstore = template.split(":", 1)[0]
    if not (ctx.has(f"/storage/{tstore}", "Datastore.AllocateSpace")
            or ctx.has(f"/storage/{tstore}", "Datastore.Audit")):
        ctx.require(f"/storage/{tstore}", "Datastore.AllocateSpace")
    storage = str(ctx.params.get("storage", "local"))
    rootfs = str(ctx.params.get("rootfs", f"{storage}:8"))
    ctx.require(f"/storage/{rootfs.split(':', 1)[0]}", "Datastore.AllocateSpace")
    unpriv = int(ctx.params.get("unprivileged", 1))
    if not unpriv:
        ctx.require("/", "Sys.Modify")
    with rt.state.cond:
        existing = rt.state.guests.get(vmid)
        if existing is not None:
            raise server_error(f"{existing.kind_word} {vmid} already exists on node "
                               f"'{rt.node}'")
        config: dict[str, Any] = {k: ctx.params[k] for k in _CREATE_KEYS if k in ctx.params}
        config.update({k: v for k, v in ctx.params.items() if k.startswith("net")})
        config["unprivileged"] = unpriv
        config["rootfs"] = rootfs if "size=" in rootfs else (
            f"{rootfs.split(':', 1)[0]}:vm-{vmid}-disk-0,size={rootfs.split(':', 1)[-1]}G")
        if "tags" in config:
            config["tags"] = normalise_tags(str(config["tags"]))
        if "features" in config:
            probe = Guest(vmid=vmid, type="lxc", status="stopped", config={"unprivileged": unpriv})
            check_features(ctx, probe, str(config["features"]))
        start = bool(ctx.params.get("start", 0))

        return _fork_create(ctx, "lxc", config, start=start, task_type="vzcreate",
                            exists=f"CT {vmid} already exists on node '{rt.node}'",
                            first_line=f"extracting archive '{template}'")


_QEMU_CREATE_KEYS = ("name", "memory", "balloon", "cores", "sockets", "cpulimit", "onboot",
                     "description", "tags", "ostype", "agent", "boot", "scsihw", "protection",
                     "startup")


def _mac(vmid: int, index: int) -> str:
    # Proxmox's OUI BC:24:11 plus deterministic-per-guest bytes (PVE uses random ones).
    rnd = random.Random(vmid * 256 + index)  # noqa: S311 - not security relevant
    return "BC:24:11:" + ":".join(f"{rnd.randrange(256):02X}" for _ in range(3))


def qemu_create(ctx: Ctx) -> str:
    """POST /nodes/{node}/qemu: in-code permission checks, then ``qmcreate``."""
    rt, vmid = ctx.rt, ctx.vmid
    ctx.require(f"/vms/{vmid}", "VM.Allocate")
    start = bool(ctx.params.get("start", 0))
    if start:
        ctx.require(f"/vms/{vmid}", "VM.PowerMgmt")
    for key, value in ctx.params.items():
        if key.startswith("scsi") and key[4:].isdigit():
            ctx.require(f"/storage/{str(value).split(':', 1)[0]}", "Datastore.AllocateSpace")
    with rt.state.cond:
        existing = rt.state.guests.get(vmid)
        if existing is not None:
            raise server_error(f"unable to create VM {vmid} - {existing.kind_word} {vmid} "
                               f"already exists on node '{rt.node}'")
        config: dict[str, Any] = {k: ctx.params[k] for k in _QEMU_CREATE_KEYS
                                  if k in ctx.params}
        for key, value in ctx.params.items():
            if key.startswith("net") and key[3:].isdigit():
                text = str(value)
                model, _, rest = text.partition(",")
                if "=" not in model:  # "virtio" without a MAC gets one, like PVE
                    text = f"{model}={_mac(vmid, int(key[3:]))}" + (f",{rest}" if rest else "")
                config[key] = text
            elif key.startswith("scsi") and key[4:].isdigit():
                store, _, size = str(value).partition(":")
                config[key] = (str(value) if "size=" in str(value)
                               else f"{store}:vm-{vmid}-disk-{key[4:]},size={size}G")
        if "memory" in config:
            config["memory"] = str(config["memory"])
        if "tags" in config:
            config["tags"] = normalise_tags(str(config["tags"]))
        config.setdefault("boot", "order=" + ";".join(
            k for k in sorted(config) if k.startswith(("scsi", "net"))))
        config["smbios1"] = f"uuid={uuid.uuid4()}"
        config["vmgenid"] = str(uuid.uuid4())
        config["meta"] = f"creation-qemu=9.2.0,ctime={int(rt.clock())}"

        return _fork_create(ctx, "qemu", config, start=start, task_type="qmcreate",
                            exists=f"unable to create VM {vmid} - VM {vmid} already exists "
                            f"on node '{rt.node}'",
                            first_line=f"creating VM {vmid}")


def _fork_create(ctx: Ctx, gtype: str, config: dict[str, Any], *, start: bool, task_type: str,
                 exists: str, first_line: str) -> str:
    """Fork the create task: the guest appears locked ``create`` and unlocks when it ends.

    A failed or cancelled task removes the half-created guest again, as PVE does.
    """
    rt, vmid = ctx.rt, ctx.vmid

    def begin(log: TaskLog) -> None:
        if vmid in rt.state.guests:
            raise TaskError(exists)
        rt.state.guests[vmid] = Guest(vmid=vmid, type=gtype, status="stopped",
                                      config={**config, "lock": "create"})
        log.line(first_line)

    def end(_log: TaskLog) -> None:
        g = _live(ctx, gtype, vmid)
        del g.config["lock"]
        if start:
            g.status, g.started_at = "running", rt.clock()

    def cleanup() -> None:
        g = rt.state.guests.get(vmid)
        if g is not None and g.config.get("lock") == "create":
            del rt.state.guests[vmid]

    return rt.fork(TaskPlan(type=task_type, vmid=vmid, id=str(vmid), begin=begin, end=end,
                            cleanup=cleanup), ctx.principal.token_id)
