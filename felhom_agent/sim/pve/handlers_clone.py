"""Clone (``vzclone``/``qmclone``), template conversion (``vztemplate``/``qmtemplate``) and
``GET /cluster/nextid``.

Clone. The UPID's id is the **source** vmid. ``full`` defaults to 0 (linked) for a template and
1 otherwise; ``storage`` is refused for a linked clone (``parameter 'storage' not allowed for
linked clones``), a linked clone needs the source's base volume (a template), a full clone of a
running container needs ``snapname``. Every source key is copied unchecked (``features``
included) except snapshot keys, ``unusedN`` and ``template``; every ``netN`` gets a new MAC;
``hostname``/``name`` and ``description`` come from the parameters (a VM's name defaults to
``Copy-of-VM-<name>``, its smbios1 uuid is new).

* Container: the source takes the config lock ``disk`` before the fork and keeps it for the
  whole clone -- a second clone or a backup of it fails ``CT is locked (disk)`` -- and the new
  container exists at once, locked ``create``. ``newid`` taken: ``CT 200 already exists on node
  'pve1'`` (the source is unlocked again).
* VM: all checks run before the fork too (``VM is locked (backup)``, ``unable to create VM 200:
  config file already exists``), but the new VM appears only in the task, locked ``clone``;
  the task holds the source's config flock **shared** when the source is stopped (clones of a
  stopped template run in parallel; an exclusive writer such as a backup waits) and exclusively
  when it runs.
* A failed task (``task_fail``, or an interrupt) removes the new guest, unlocks the source and
  ends ``clone failed: <reason>``; a killed one (``task_crash``) leaves the partial guest with
  its lock (and a container source locked ``disk``).

Template conversion refuses a guest with snapshots (``unable to create template, because CT
contains snapshots``), a running one and a template (``you can't convert a template to a
template``) before the fork; qemu answers the ``qmtemplate`` UPID, a container answers
``null`` while its ``vztemplate`` task runs on. The volumes become ``base-<vmid>-disk-<n>``.

``/cluster/nextid`` returns the lowest free vmid of the cluster (guests on other nodes
count) in the scenario's ``next_id`` range, or with ``vmid=N`` echoes N when it is free and
answers 400 ``VM N already exists`` when not; nothing is reserved. PVE's Perl stringifies the
number when it looks it up, so the JSON value is a string (``"104"``).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Any

import attrs

from felhom_agent.sim.pve.apierror import ApiError, param_error, server_error
from felhom_agent.sim.pve.archive import (
    base_volume,
    disk_keys,
    volume_of,
    with_new_mac,
    with_new_uuid,
    with_volume,
)
from felhom_agent.sim.pve.context import Ctx
from felhom_agent.sim.pve.guestops import (
    check_pool,
    fault_error,
    fault_warnings,
    flock_or_timeout,
    storage_enabled,
    work,
)
from felhom_agent.sim.pve.runtime import NodeRuntime
from felhom_agent.sim.pve.state import Guest
from felhom_agent.sim.pve.tasks import TaskError, TaskLog, TaskPlan, Worker

__all__ = ["clone", "nextid", "template"]

_SNAPSHOT_KEYS = frozenset({"snapshots", "parent", "snaptime", "vmstate", "snapstate",
                            "runningcpu", "runningmachine", "pending", "lock"})


def _is_base(volid: str) -> bool:
    return re.search(r":base-\d+-disk-\d+$", volid) is not None


def _check_target(ctx: Ctx) -> None:
    target = ctx.str_param("target")
    if target and target not in (ctx.rt.node, "localhost"):
        raise server_error(f"no such cluster node '{target}'")


# -- clone -------------------------------------------------------------------------------------

def clone(ctx: Ctx, gtype: str) -> str:
    """POST /nodes/{node}/{qemu|lxc}/{vmid}/clone."""
    _check_target(ctx)
    return _lxc_clone(ctx) if gtype == "lxc" else _qemu_clone(ctx)


@attrs.define
class _Plan:
    """What a clone copies: the new config and the disks it must create."""

    newconf: dict[str, Any]
    disks: dict[str, str]  # config key -> source value
    full: bool
    running: bool
    source_name: str


def _plan(ctx: Ctx, src: Guest, gtype: str) -> _Plan:
    """The checks both clone types make before anything is created (raises ApiError)."""
    p = ctx.params
    storage = ctx.str_param("storage")
    snapname = ctx.str_param("snapname")
    running = src.status == "running"
    full = bool(p["full"]) if "full" in p else not int(src.config.get("template", 0))
    if storage is not None and not full:
        raise server_error("parameter 'storage' not allowed for linked clones")
    if gtype == "qemu" and "format" in p and not full:
        raise server_error("parameter 'format' not allowed for linked clones")
    if snapname is not None and snapname not in src.snapshots:
        raise server_error(f"snapshot '{snapname}' does not exist")
    srcconf = src.snapshots[snapname].config if snapname is not None else src.config
    newconf: dict[str, Any] = {}
    disks: dict[str, str] = {}
    keys = disk_keys(gtype, srcconf)
    for opt in sorted(srcconf):
        value = srcconf[opt]
        if opt in _SNAPSHOT_KEYS or (opt.startswith("unused") and opt[6:].isdigit()):
            continue
        if opt in keys:
            volid = volume_of(str(value))
            sid = storage if storage is not None else volid.split(":", 1)[0]
            ctx.require(f"/storage/{sid}", "Datastore.AllocateSpace")
            if full:
                if gtype == "lxc" and running and snapname is None:
                    raise server_error("Full clone of a running container is only possible "
                                       "from a snapshot")
            elif not _is_base(volid):
                raise server_error(f"Linked clone feature for '{volid}' is not available"
                                   if gtype == "lxc" else
                                   f"Linked clone feature is not supported for '{volid}' "
                                   f"({opt})")
            disks[opt] = str(value)
        elif opt.startswith("net") and opt[3:].isdigit():
            newconf[opt] = with_new_mac(str(value))
        else:
            newconf[opt] = copy.deepcopy(value)
    newconf.pop("template", None)
    name_key = "hostname" if gtype == "lxc" else "name"
    src_name = str(srcconf.get(name_key, src.vmid))
    if p.get(name_key):
        newconf[name_key] = str(p[name_key])
    elif gtype == "qemu":
        newconf["name"] = f"Copy-of-VM-{src_name}"
    if p.get("description"):
        newconf["description"] = str(p["description"])
    return _Plan(newconf=newconf, disks=disks, full=full, running=running,
                 source_name=src_name)


def _lxc_clone(ctx: Ctx) -> str:
    rt, vmid = ctx.rt, ctx.vmid
    newid = int(ctx.params["newid"])
    pool = ctx.str_param("pool")
    storage = ctx.str_param("storage")
    with rt.state.cond:
        if storage is not None:
            storage_enabled(ctx, storage)
        src = ctx.guest("lxc")
        owner = f"request-{id(ctx)}"
        flock_or_timeout(ctx, src, owner)
        try:
            if src.lock:
                raise server_error(f"CT is locked ({src.lock})")
            src.config["lock"] = "disk"
        finally:
            rt.state.release_flock(vmid, owner)
        try:
            existing = rt.state.guests.get(newid)
            if existing is not None:
                raise server_error(f"{existing.kind_word} {newid} already exists on node "
                                   f"'{rt.node}'")
            check_pool(ctx, pool)
            plan = _plan(ctx, src, "lxc")
        except ApiError:
            if src.config.get("lock") == "disk":
                del src.config["lock"]
            rt.state.cond.notify_all()
            raise
        plan.newconf["lock"] = "create"
        rt.state.guests[newid] = Guest(vmid=newid, type="lxc", status="stopped",
                                       config=plan.newconf, backup_size=src.backup_size)
        rt.state.cond.notify_all()
        job = _Clone(rt=rt, gtype="lxc", vmid=vmid, newid=newid, plan=plan, storage=storage,
                     pool=pool)
        return rt.fork(TaskPlan(type="vzclone", vmid=vmid, id=str(vmid), worker=job.run),
                       ctx.principal.token_id)


def _qemu_checks(ctx: Ctx, newid: int) -> _Plan:
    """``load_and_check``: run before the fork and again inside the task."""
    rt = ctx.rt
    storage = ctx.str_param("storage")
    check_pool(ctx, ctx.str_param("pool"))
    if storage is not None:
        st = storage_enabled(ctx, storage)
        if not st.has_content("images"):
            raise param_error({"storage": f"storage '{storage}' does not support vm images"})
    src = ctx.guest("qemu")
    if src.lock:
        raise server_error(f"VM is locked ({src.lock})")
    plan = _plan(ctx, src, "qemu")
    if newid in rt.state.guests:
        raise server_error(f"unable to create VM {newid}: config file already exists")
    return plan


def _qemu_clone(ctx: Ctx) -> str:
    rt, vmid = ctx.rt, ctx.vmid
    newid = int(ctx.params["newid"])
    with rt.state.cond:
        plan = _qemu_checks(ctx, newid)
        job = _Clone(rt=rt, gtype="qemu", vmid=vmid, newid=newid, plan=plan,
                     storage=ctx.str_param("storage"), pool=ctx.str_param("pool"), ctx=ctx)
        return rt.fork(TaskPlan(type="qmclone", vmid=vmid, id=str(vmid), worker=job.run),
                       ctx.principal.token_id)


@attrs.define
class _Clone:
    """One clone task."""

    rt: NodeRuntime
    gtype: str
    vmid: int
    newid: int
    plan: _Plan
    storage: str | None
    pool: str | None
    ctx: Ctx | None = None
    shared: bool = False

    def run(self, w: Worker) -> str | None:
        state = self.rt.state
        if self.gtype == "lxc":
            return self._lxc(w)
        owner = w.rec.upid_str
        try:
            with state.cond:
                error = self._qemu_locks(w, owner)
            return error if error is not None else self._qemu(w)
        finally:
            with state.cond:
                if self.shared:
                    state.release_shared_flock(self.vmid, owner)
                else:
                    state.release_flock(self.vmid, owner)
                state.release_flock(self.newid, owner)

    # -- container ---------------------------------------------------------------------------
    def _lxc(self, w: Worker) -> str | None:
        state = self.rt.state
        with state.cond:
            w.log.line(f"creating a clone of container {self.vmid} with ID {self.newid}")
            src = state.guests.get(self.vmid)
            if src is None or (src.status == "running") != self.plan.running:
                return self._failed("unexpected state change")
            for opt, value in sorted(self.plan.disks.items()):
                kind = "full clone of mountpoint" if self.plan.full else \
                    "linked clone of mount point"
                w.log.line(f"create {kind} {opt} ({volume_of(value)})")
            if self.plan.full and self.storage is not None:
                st = state.storages.get(self.storage)
                if st is not None and not st.has_content("rootdir"):
                    return self._failed(f"storage '{self.storage}' does not support container "
                                        "directories")
        work(w, self.rt.tasks.duration("vzclone"))
        with state.cond:
            error = fault_error(w)
            if error is not None:
                return self._failed(error)
            return self._finish(w, "create")

    # -- VM ----------------------------------------------------------------------------------
    def _qemu_locks(self, w: Worker, owner: str) -> str | None:
        state = self.rt.state
        wait = self.rt.scenario.lock_wait_s
        src = state.guests.get(self.vmid)
        self.shared = src is not None and src.status != "running"
        got = (state.acquire_shared_flock(self.vmid, owner, wait) if self.shared
               else state.acquire_flock(self.vmid, owner, wait))
        if not got:
            self.shared = False
            return f"can't lock file '/var/lock/qemu-server/lock-{self.vmid}.conf' - got timeout"
        if not state.acquire_flock(self.newid, owner, wait):
            return f"can't lock file '/var/lock/qemu-server/lock-{self.newid}.conf' - got timeout"
        if self.ctx is not None:
            try:
                self.plan = _qemu_checks(self.ctx, self.newid)
            except ApiError as err:
                return err.message.rstrip("\n")
        w.log.line(f"creating a clone of VM {self.vmid} with ID {self.newid}")
        conf = self.plan.newconf
        conf["smbios1"] = with_new_uuid(str(conf.get("smbios1", "")))
        if conf.get("vmgenid"):
            conf["vmgenid"] = with_new_uuid("").removeprefix("uuid=")
        state.guests[self.newid] = Guest(vmid=self.newid, type="qemu", status="stopped",
                                         config={"lock": "clone"})
        for opt, value in sorted(self.plan.disks.items()):
            kind = "full" if self.plan.full else "linked"
            w.log.line(f"create {kind} clone of drive {opt} ({volume_of(value)})")
        state.cond.notify_all()
        return None

    def _qemu(self, w: Worker) -> str | None:
        work(w, self.rt.tasks.duration("qmclone"))
        with self.rt.state.cond:
            error = fault_error(w)
            if error is not None:
                return self._failed(error)
            return self._finish(w, "clone")

    # -- both --------------------------------------------------------------------------------
    def _new_disks(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for n, (opt, value) in enumerate(sorted(self.plan.disks.items())):
            volid = volume_of(value)
            sid = volid.split(":", 1)[0]
            if self.plan.full:
                new = f"{self.storage or sid}:vm-{self.newid}-disk-{n}"
            else:
                new = f"{volid}/vm-{self.newid}-disk-{n}"
            out[opt] = with_volume(value, new)
        return out

    def _finish(self, w: Worker, lock: str) -> str | None:
        state = self.rt.state
        target = state.guests.get(self.newid)
        if target is None or target.lock != lock:
            return self._failed(f"Lost '{lock}' config lock, aborting.")
        conf = dict(self.plan.newconf)
        conf.pop("lock", None)
        conf.update(self._new_disks())
        target.config = conf
        if self.pool is not None:
            target.pool = self.pool
        src = state.guests.get(self.vmid)
        if src is not None:
            target.backup_size = src.backup_size
            if self.gtype == "lxc" and src.config.get("lock") == "disk":
                del src.config["lock"]
        fault_warnings(w)
        state.cond.notify_all()
        return None

    def _failed(self, why: str) -> str:
        """PVE's cleanup: the new guest removed, the container source unlocked."""
        state = self.rt.state
        state.guests.pop(self.newid, None)
        src = state.guests.get(self.vmid)
        if self.gtype == "lxc" and src is not None and src.config.get("lock") == "disk":
            del src.config["lock"]
        state.cond.notify_all()
        return f"clone failed: {why}"


# -- template conversion -----------------------------------------------------------------------

def _template_refusal(g: Guest) -> str | None:
    word = g.kind_word
    if g.lock:
        return f"{word} is locked ({g.lock})"
    if g.snapshots:
        return f"unable to create template, because {word} contains snapshots"
    if int(g.config.get("template", 0)):
        return "you can't convert a template to a template"
    if g.status == "running":
        return (f"you can't convert a {word} to template if the CT is running" if word == "CT"
                else "you can't convert a VM to template if VM is running")
    return None


def _make_template(g: Guest) -> None:
    g.config["template"] = 1
    for key in disk_keys(g.type, g.config):
        value = str(g.config[key])
        g.config[key] = with_volume(value, base_volume(volume_of(value)))


def template(ctx: Ctx, gtype: str) -> str | None:
    """POST /nodes/{node}/{qemu|lxc}/{vmid}/template: qemu a UPID, lxc ``null``."""
    rt, vmid = ctx.rt, ctx.vmid
    with rt.state.cond:
        g = ctx.guest(gtype)
        owner = f"request-{id(ctx)}"
        if gtype == "lxc":
            flock_or_timeout(ctx, g, owner)
        try:
            refusal = _template_refusal(g)
            if refusal is not None:
                raise server_error(refusal)
        finally:
            if gtype == "lxc":
                rt.state.release_flock(vmid, owner)

        def begin(_log: TaskLog) -> None:
            live = rt.state.guests.get(vmid)
            if live is None or live.type != gtype:
                raise TaskError(f"Configuration file '{g.conf_path(rt.node)}' does not exist")
            again = _template_refusal(live)
            if again is not None:
                raise TaskError(again)

        def end(_log: TaskLog) -> None:
            live = rt.state.guests.get(vmid)
            if live is None:
                raise TaskError(f"Configuration file '{g.conf_path(rt.node)}' does not exist")
            _make_template(live)

        upid = rt.fork(TaskPlan(type="qmtemplate" if gtype == "qemu" else "vztemplate",
                                vmid=vmid, id=str(vmid), begin=begin, end=end,
                                hold_flock=True), ctx.principal.token_id)
    return upid if gtype == "qemu" else None


# -- nextid ------------------------------------------------------------------------------------

def nextid(ctx: Ctx) -> str:
    """GET /cluster/nextid[?vmid=N] (the id as a JSON string, like PVE)."""
    wanted = ctx.int_param("vmid")
    state = ctx.rt.state
    with state.cond:
        taken: Mapping[int, object] = {**state.guests, **state.other_node_guests}
        if wanted is not None:
            if wanted in taken:
                raise param_error({"vmid": f"VM {wanted} already exists"})
            return str(wanted)
        lower, upper = state.next_id
        for vmid in range(lower, upper):
            if vmid not in taken:
                return str(vmid)
    raise server_error(f"unable to get any free VMID in range [{lower}, {upper}]")
