"""Restore: ``POST /nodes/{node}/lxc`` with ``restore=1`` (``vzrestore``) and
``POST /nodes/{node}/qemu`` with ``archive`` (``qmrestore``); both answer a UPID whose id is
the target vmid.

Before the fork (500 unless noted):

* an existing vmid needs ``force`` -- without it ``CT 100 already exists on node 'pve1'`` (the
  word is the existing guest's type; qemu prefixes ``unable to restore VM 100 -``); a container
  restore with ``force`` refuses a running target (``can't overwrite running container``) and a
  protected one (``unable to restore CT 100 - protection mode enabled``);
* an unknown ``pool`` is a 400; VM.Allocate on the vmid or the pool is needed, or -- restoring
  over an existing guest with ``force`` -- VM.Backup on it, else the bare 403;
* the archive: its storage must exist, its name must be a backup (``unable to use volume ... -
  content type needs to be 'backup'``) and readable (403); a qemu restore of a missing file
  says ``can't find file '<volid>'``; drive keys beside ``archive`` are a 400;
* a container's target ``storage`` (default ``local``) must hold container directories (400
  ``storage 'local' does not support container directories``) and be writable
  (Datastore.AllocateSpace); ``features`` other than ``nesting`` are root-only (403);
* the target takes the ``create`` lock now (another lock: ``... CT is locked (backup)``), so a
  new vmid shows up at once as a locked, empty guest.

In the task: the config is recovered from the archive (a missing container archive fails here:
a new target is removed, an existing one keeps its config and loses the lock); the wrong guest
type fails (``got unexpected backup format 'pbs-vm'``, ``ERROR: archive contains no
configuration file``, ``ERROR: file '...' does not look like a QemuServer vzdump backup``).
Then it becomes destructive: the old disks are freed and the snapshots dropped. The new config
is the archived one -- the old one is gone -- with new volumes on the target storage (a qemu
disk keeps the storage it was backed up from unless ``storage`` is given), given parameters
overriding archived keys, ``unique`` giving every ``netN`` a new MAC (qemu also a new smbios1
uuid), qemu ``vmgenid`` always new, a template staying a template, and ``pool``/``start``
applied at the end. A container restore that fails after that point destroys the container
(``task_fail`` on ``vzrestore`` models it); a failed qemu restore only drops the lock and leaves
the VM as it was ("state is NOT cleaned up": a new vmid stays an empty VM).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import attrs

from felhom_agent.sim.pve import handlers_create as hc
from felhom_agent.sim.pve.apierror import param_error, perm_error, server_error
from felhom_agent.sim.pve.archive import (
    base_volume,
    disk_keys,
    next_disk_index,
    parse_config,
    size_gib,
    volume_of,
    with_new_mac,
    with_new_uuid,
    with_volume,
)
from felhom_agent.sim.pve.context import Ctx
from felhom_agent.sim.pve.guestops import (
    check_lxc_features,
    check_pool,
    check_vm_perm,
    fault_error,
    fault_warnings,
    flock_or_timeout,
    may_allocate,
    storage_enabled,
    volume_access,
    work,
)
from felhom_agent.sim.pve.privileges import Principal
from felhom_agent.sim.pve.runtime import NodeRuntime
from felhom_agent.sim.pve.state import Guest
from felhom_agent.sim.pve.storage import Backup, SimStorage
from felhom_agent.sim.pve.tasks import TaskPlan, Worker

__all__ = ["lxc_post", "lxc_restore", "qemu_post", "qemu_restore"]

_LXC_CONFIG_KEYS = ("hostname", "memory", "swap", "cores", "cpulimit", "features", "onboot",
                    "description", "tags", "ostype", "arch", "nameserver", "searchdomain",
                    "protection", "startup")
_LXC_PRIV = {"cores": "VM.Config.CPU", "cpulimit": "VM.Config.CPU",
             "memory": "VM.Config.Memory", "swap": "VM.Config.Memory",
             "hostname": "VM.Config.Network", "nameserver": "VM.Config.Network",
             "searchdomain": "VM.Config.Network", "rootfs": "VM.Config.Disk"}
_QEMU_PRIV = {"cores": "VM.Config.CPU", "sockets": "VM.Config.CPU", "cpulimit": "VM.Config.CPU",
              "memory": "VM.Config.Memory", "balloon": "VM.Config.Memory",
              "scsihw": "VM.Config.HWType"}
_QEMU_DRIVE_RE = re.compile(r"^(?:(?:ide|sata|scsi|virtio)\d+|efidisk0|tpmstate0)$")
#: request parameters of a qemu restore that are not config overrides.
_QEMU_CONTROL = ("node", "vmid", "archive", "storage", "force", "unique", "pool", "start",
                 "bwlimit")
_NOT_MERGED = re.compile(r"^(?:rootfs|mp\d+|unused\d+|unprivileged|parent|snapshots|digest|"
                         r"template|lock)$")


class _Fail(Exception):
    """The task fails with this text."""


def _net_key(key: str) -> bool:
    return key.startswith("net") and key[3:].isdigit()


# -- dispatch of the shared create endpoints ---------------------------------------------------

def lxc_post(ctx: Ctx) -> str:
    """POST /nodes/{node}/lxc: a restore with ``restore=1``, else a create from a template."""
    if ctx.params.get("restore"):
        return lxc_restore(ctx)
    with ctx.rt.state.cond:
        existing = ctx.rt.state.guests.get(ctx.vmid)
        if existing is not None:
            raise server_error(f"{existing.kind_word} {ctx.vmid} already exists on node "
                               f"'{ctx.rt.node}'")
        check_pool(ctx, ctx.str_param("pool"))
        if "features" in ctx.params:
            unpriv = bool(ctx.int_param("unprivileged", 1))
            check_lxc_features(ctx, ctx.vmid, ctx.str_param("pool"),
                               str(ctx.params["features"]), unpriv)
        volume_access(ctx, str(ctx.params["ostemplate"]), ctx.vmid, "vztmpl")
        if "rootfs" not in ctx.params:
            _rootdir_storage(ctx, ctx.str_param("storage") or "local")
    return hc.lxc_create(ctx)


def qemu_post(ctx: Ctx) -> str:
    """POST /nodes/{node}/qemu: a restore with ``archive``, else a create."""
    if "archive" in ctx.params:
        return qemu_restore(ctx)
    with ctx.rt.state.cond:
        check_pool(ctx, ctx.str_param("pool"))
    return hc.qemu_create(ctx)


def _rootdir_storage(ctx: Ctx, sid: str) -> SimStorage:
    st = storage_enabled(ctx, sid)
    if not st.has_content("rootdir"):
        raise param_error({"storage": f"storage '{sid}' does not support container "
                                      "directories"})
    ctx.require(f"/storage/{sid}", "Datastore.AllocateSpace")
    return st


def _take_create_lock(ctx: Ctx, gtype: str, existing: Guest | None, emsg: str) -> Guest:
    """``create_and_lock_config``: the flock, refuse any lock, then ``lock: create``."""
    state = ctx.rt.state
    if existing is None:
        guest = Guest(vmid=ctx.vmid, type=gtype, status="stopped", config={"lock": "create"})
        state.guests[ctx.vmid] = guest
        state.cond.notify_all()
        return guest
    owner = f"request-{id(ctx)}"
    flock_or_timeout(ctx, existing, owner, emsg + " ")
    try:
        if existing.lock:
            raise server_error(f"{emsg} {existing.kind_word} is locked ({existing.lock})")
        existing.config["lock"] = "create"
    finally:
        state.release_flock(existing.vmid, owner)
    state.cond.notify_all()
    return existing


# -- container restore -------------------------------------------------------------------------

def lxc_restore(ctx: Ctx) -> str:
    """POST /nodes/{node}/lxc with ``restore=1``: the checks above, then ``vzrestore``."""
    rt, vmid, p = ctx.rt, ctx.vmid, ctx.params
    archive = str(p["ostemplate"])
    force = bool(p.get("force", 0))
    pool = ctx.str_param("pool")
    unpriv_param = ctx.int_param("unprivileged")
    storage = ctx.str_param("storage") or "local"
    with rt.state.cond:
        existing = rt.state.guests.get(vmid)
        same = existing is not None and existing.type == "lxc"
        if existing is not None and not (same and force):
            raise server_error(f"{existing.kind_word} {vmid} already exists on node "
                               f"'{rt.node}'")
        if existing is not None:
            if existing.status == "running":
                raise server_error("can't overwrite running container")
            if int(existing.config.get("protection", 0)):
                raise server_error(f"unable to restore CT {vmid} - protection mode enabled")
        check_pool(ctx, pool)
        if not may_allocate(ctx, vmid, pool):
            if not (existing is not None and ctx.has(f"/vms/{vmid}", "VM.Backup")):
                raise perm_error()
            if int(existing.config.get("unprivileged", 0)) and unpriv_param == 0:
                ctx.require("/", "Sys.Modify")
        for key in [*_LXC_CONFIG_KEYS, *(k for k in p if _net_key(k)), "rootfs"]:
            if key not in p:
                continue
            if key == "features":
                check_lxc_features(ctx, vmid, pool, str(p[key]), bool(unpriv_param))
            elif key != "tags":
                check_vm_perm(ctx, vmid, pool, _LXC_PRIV.get(
                    key, "VM.Config.Network" if _net_key(key) else "VM.Config.Options"))
        st, backup = volume_access(ctx, archive, vmid, "backup")
        rootfs = ctx.str_param("rootfs")
        target = (_rootdir_storage(ctx, storage) if rootfs is None
                  else _rootdir_storage(ctx, rootfs.split(":", 1)[0])).name
        guest = _take_create_lock(ctx, "lxc", existing if same else None,
                                  f"unable to restore CT {vmid} -")
        job = _LxcRestore(rt=rt, principal=ctx.principal, vmid=vmid, archive=archive,
                          storage=st, backup=backup, target=target, rootfs=rootfs,
                          given={k: p[k] for k in p if k in _LXC_CONFIG_KEYS or _net_key(k)},
                          unprivileged=unpriv_param, same=guest is existing,
                          unique=bool(p.get("unique", 0)), start=bool(p.get("start", 0)),
                          pool=pool)
        return rt.fork(TaskPlan(type="vzrestore", vmid=vmid, id=str(vmid), worker=job.run),
                       ctx.principal.token_id)


def _recover(st: SimStorage, backup: Backup | None, archive: str, gtype: str) -> Backup:
    """The archive as the task finds it, or the task's error text."""
    if backup is None:
        if st.is_pbs:
            cfg = st.spec.config
            raise _Fail(f"command 'proxmox-backup-client restore {archive.split(':', 1)[1]} "
                        f"{'pct.conf' if gtype == 'lxc' else 'index.json'} - --repository "
                        f"{cfg.get('username', 'root@pam')}@{cfg.get('server', '')}:"
                        f"{cfg.get('datastore', '')}' failed: exit code 255")
        raise _Fail(f"can't find file '{archive}'")
    if st.is_pbs:
        want = "pbs-ct" if gtype == "lxc" else "pbs-vm"
        if backup.format != want:
            raise _Fail(f"got unexpected backup format '{backup.format}'")
    elif gtype == "lxc" and backup.subtype not in ("lxc", "openvz"):
        raise _Fail("ERROR: archive contains no configuration file")
    return backup


@attrs.define
class _LxcRestore:
    """One ``vzrestore`` task."""

    rt: NodeRuntime
    principal: Principal
    vmid: int
    archive: str
    storage: SimStorage
    backup: Backup | None
    target: str
    rootfs: str | None
    given: Mapping[str, Any]
    unprivileged: int | None
    same: bool
    unique: bool
    start: bool
    pool: str | None

    @property
    def emsg(self) -> str:
        return f"unable to restore CT {self.vmid} -"

    def run(self, w: Worker) -> str | None:
        state = self.rt.state
        owner = w.rec.upid_str
        with state.cond:
            guest = state.guests.get(self.vmid)
            if guest is None or not state.acquire_flock(self.vmid, owner,
                                                        self.rt.scenario.lock_wait_s):
                path = guest.flock_path() if guest is not None else "config"
                return self._early(f"can't lock file '{path}' - got timeout")
        try:
            return self._body(w, guest)
        finally:
            with state.cond:
                state.release_flock(self.vmid, owner)

    def _early(self, why: str) -> str:
        """Failed before any disk changed: a new CT is removed, an old one only unlocked."""
        state = self.rt.state
        g = state.guests.get(self.vmid)
        if g is not None and g.lock == "create":
            if self.same:
                del g.config["lock"]
            else:
                del state.guests[self.vmid]
        state.cond.notify_all()
        return f"{self.emsg} {why}"

    def _late(self, why: str) -> str:
        """Failed after the disks were replaced: the container is gone (PVE's behaviour)."""
        self.rt.state.guests.pop(self.vmid, None)
        self.rt.state.cond.notify_all()
        return f"{self.emsg} {why}"

    def _body(self, w: Worker, g: Guest) -> str | None:
        state = self.rt.state
        with state.cond:
            if g.status == "running":
                return self._early("can't overwrite running container")
            w.log.line(f"recovering backed-up configuration from '{self.archive}'")
            try:
                backup = _recover(self.storage, self.backup, self.archive, "lxc")
            except _Fail as err:
                return self._early(str(err))
            archived, raw_lxc = parse_config("lxc", backup.config)
            was_template = bool(archived.pop("template", 0))
            unpriv = (self.unprivileged if self.unprivileged is not None
                      else int(archived.get("unprivileged", 0)))
            if not unpriv and (not self.same or int(g.config.get("unprivileged", 0))) \
                    and not self.principal.has("/", "Sys.Modify"):
                return self._early("Permission check failed (/, Sys.Modify)")
            if self.rootfs is not None:
                sid, _, rest = self.rootfs.partition(":")
                size = size_gib(rest) or (f"{rest}G" if rest.replace(".", "").isdigit() else None)
            else:
                sid = self.target
                if "rootfs" not in archived:
                    return self._early("rootfs configuration could not be recovered, please "
                                       "check and specify manually!")
                size = size_gib(str(archived["rootfs"]))
            if size is None:
                return self._early("unable to detect disk size - please specify rootfs (size)")
            old = [volume_of(str(g.config[k])) for k in disk_keys("lxc", g.config)]
            volid = f"{sid}:vm-{self.vmid}-disk-{next_disk_index(self.vmid, old)}"
            # destructive from here: the new disk exists, the old volumes are destroyed
            g.config = {"lock": "create"}
            g.snapshots = {}
            w.log.line(f"restoring '{self.archive}' now..")
            state.cond.notify_all()
        work(w, self.rt.tasks.duration("vzrestore"))
        with state.cond:
            error = fault_error(w)
            if error is not None:
                return self._late(error)
            w.log.line("merging backed-up and given configuration..")
            conf = self._merge(w, archived, raw_lxc, unpriv, f"{volid},size={size}")
            if was_template:
                w.log.line("Convert restored container to template...")
                conf["template"] = 1
                conf["rootfs"] = with_volume(str(conf["rootfs"]), base_volume(volid))
            live = state.guests.get(self.vmid)
            if live is None:
                return f"{self.emsg} Configuration file 'nodes/{self.rt.node}/lxc/" \
                       f"{self.vmid}.conf' does not exist"
            live.config = conf
            live.backup_size = backup.size or live.backup_size
            if self.pool is not None:
                live.pool = self.pool
            fault_warnings(w)
            if self.start and not was_template:
                live.status, live.started_at = "running", self.rt.clock()
            state.cond.notify_all()
            return None

    def _merge(self, w: Worker, archived: Mapping[str, Any], raw_lxc: list[tuple[str, str]],
               unpriv: int, rootfs: str) -> dict[str, Any]:
        conf: dict[str, Any] = dict(self.given)
        if unpriv:
            conf["unprivileged"] = 1
        conf["rootfs"] = rootfs
        restricted = self.principal.user != "root@pam"
        for key, value in archived.items():
            if _NOT_MERGED.match(key):
                continue
            if restricted and key == "features" and not unpriv \
                    and int(archived.get("unprivileged", 0)):
                w.log.warn("changing from unprivileged to privileged, skipping features")
                continue
            if self.unique and _net_key(key):
                conf[key] = with_new_mac(str(value))
                continue
            conf.setdefault(key, value)
        if raw_lxc and restricted:
            w.log.warn("skipping custom lxc options, restore manually as root:")
            for key, value in raw_lxc:
                w.log.line(f"{key}: {value}")
        conf.setdefault("hostname", f"CT{self.vmid}")
        conf.setdefault("memory", 512)
        conf.setdefault("swap", 512)
        return conf


# -- VM restore --------------------------------------------------------------------------------

def qemu_restore(ctx: Ctx) -> str:
    """POST /nodes/{node}/qemu with ``archive``: the checks above, then ``qmrestore``."""
    rt, vmid, p = ctx.rt, ctx.vmid, ctx.params
    archive = str(p["archive"])
    force = bool(p.get("force", 0))
    pool = ctx.str_param("pool")
    storage = ctx.str_param("storage")
    emsg = f"unable to restore VM {vmid} -"
    with rt.state.cond:
        check_pool(ctx, pool)
        if storage is not None:
            ctx.require(f"/storage/{storage}", "Datastore.AllocateSpace")
        if p.get("start"):
            check_vm_perm(ctx, vmid, pool, "VM.PowerMgmt")
        existing = rt.state.guests.get(vmid)
        same = existing is not None and existing.type == "qemu"
        if not may_allocate(ctx, vmid, pool) and not (
                force and same and ctx.has(f"/vms/{vmid}", "VM.Backup")):
            raise perm_error()
        drives = sorted(k for k in p if _QEMU_DRIVE_RE.match(k))
        if drives:
            raise param_error({drives[0]: "option conflicts with option 'archive'"})
        st, backup = volume_access(ctx, archive, vmid, "backup")
        if not st.is_pbs and backup is None:
            raise server_error(f"can't find file '{archive}'")
        overrides = {k: v for k, v in p.items() if k not in _QEMU_CONTROL}
        for key in overrides:
            check_vm_perm(ctx, vmid, pool, _QEMU_PRIV.get(
                key, "VM.Config.Network" if _net_key(key) else "VM.Config.Options"))
        if existing is not None and not (force and same):
            raise server_error(f"{emsg} {existing.kind_word} {vmid} already exists on node "
                               f"'{rt.node}'")
        _take_create_lock(ctx, "qemu", existing, emsg)
        job = _QemuRestore(rt=rt, principal=ctx.principal, vmid=vmid, archive=archive,
                           storage=st, backup=backup, target=storage, overrides=overrides,
                           new=existing is None, unique=bool(p.get("unique", 0)),
                           start=bool(p.get("start", 0)), pool=pool)
        return rt.fork(TaskPlan(type="qmrestore", vmid=vmid, id=str(vmid), worker=job.run),
                       ctx.principal.token_id)


@attrs.define
class _QemuRestore:
    """One ``qmrestore`` task."""

    rt: NodeRuntime
    principal: Principal
    vmid: int
    archive: str
    storage: SimStorage
    backup: Backup | None
    target: str | None
    overrides: Mapping[str, Any]
    new: bool
    unique: bool
    start: bool
    pool: str | None
    restored: bool = False

    @property
    def emsg(self) -> str:
        return f"unable to restore VM {self.vmid} -"

    def run(self, w: Worker) -> str | None:
        state = self.rt.state
        owner = w.rec.upid_str
        with state.cond:
            guest = state.guests.get(self.vmid)
            if guest is None or not state.acquire_flock(self.vmid, owner,
                                                        self.rt.scenario.lock_wait_s):
                path = guest.flock_path() if guest is not None else "config"
                return self._fail(w, f"can't lock file '{path}' - got timeout")
        try:
            return self._body(w, guest)
        finally:
            with state.cond:
                state.release_flock(self.vmid, owner)

    def _fail(self, w: Worker, why: str) -> str:
        """PVE removes the ``create`` lock and leaves the VM as it is."""
        g = self.rt.state.guests.get(self.vmid)
        if g is not None and g.lock == "create":
            del g.config["lock"]
        if self.restored:
            w.log.line("error after data was restored, VM disks should be OK but config may "
                       f"require adaptions. VM {self.vmid} state is NOT cleaned up.")
        else:
            w.log.line("error before or during data restore, some or all disks were not "
                       f"completely restored. VM {self.vmid} state is NOT cleaned up.")
        self.rt.state.cond.notify_all()
        return why

    def _check_archive(self) -> Backup:
        backup = _recover(self.storage, self.backup, self.archive, "qemu")
        if not self.storage.is_pbs and backup.subtype != "qemu":
            if self.overrides:
                raise _Fail(f"cannot pass along options ({' '.join(sorted(self.overrides))}) "
                            "when restoring from tar archive")
            path = f"{self.storage.spec.config.get('path', '/var/lib/vz')}/dump/" \
                   f"{backup.filename}"
            raise _Fail(f"ERROR: file '{path}' does not look like a QemuServer vzdump backup")
        return backup

    def _targets(self, archived: Mapping[str, Any]) -> dict[str, str]:
        """Each archived disk's target storage (checked like ``parse_backup_hints``)."""
        out: dict[str, str] = {}
        for key in disk_keys("qemu", archived):
            sid = self.target or volume_of(str(archived[key])).split(":", 1)[0] or "local"
            st = self.rt.state.storages.get(sid)
            if st is None:
                raise _Fail(f"storage '{sid}' does not exist")
            if not st.has_content("images"):
                raise _Fail(f"Content type 'images' is not available on storage '{sid}'")
            if not self.principal.has(f"/storage/{sid}", "Datastore.AllocateSpace"):
                raise _Fail(f"Permission check failed (/storage/{sid}, "
                            "Datastore.AllocateSpace)")
            out[key] = sid
        return out

    def _body(self, w: Worker, g: Guest) -> str | None:
        state = self.rt.state
        with state.cond:
            if int(g.config.get("protection", 0)):
                return self._fail(w, f"{self.emsg} - protection mode enabled")
            if g.status == "running":
                return self._fail(w, f"{self.emsg} vm is running")
            try:
                backup = self._check_archive()
                archived, _ = parse_config("qemu", backup.config)
                targets = self._targets(archived)
            except _Fail as err:
                return self._fail(w, str(err))
            self._log_start(w, backup)
            # destructive from here: the old disks the backup covers are freed, snapshots go
            old = dict(g.config)
            kept = [volume_of(str(old[k])) for k in disk_keys("qemu", old) if k not in targets]
            g.snapshots = {}
            taken = list(kept)
            new_vols: dict[str, str] = {}
            for key, sid in targets.items():
                volid = f"{sid}:vm-{self.vmid}-disk-{next_disk_index(self.vmid, taken)}"
                taken.append(volid)
                new_vols[key] = volid
                w.log.line(f"new volume ID is '{volid}'")
            state.cond.notify_all()
        work(w, self.rt.tasks.duration("qmrestore"))
        with state.cond:
            error = fault_error(w)
            if error is not None:
                return self._fail(w, error)
            self.restored = True
            w.log.line("rescan volumes...")
            conf = self._config(archived, new_vols, kept)
            live = state.guests.get(self.vmid)
            if live is None:
                return self._fail(w, f"Configuration file 'nodes/{self.rt.node}/qemu-server/"
                                     f"{self.vmid}.conf' does not exist")
            if int(conf.get("template", 0)):
                w.log.line("Convert to template.")
                for key in disk_keys("qemu", conf):
                    conf[key] = with_volume(str(conf[key]),
                                            base_volume(volume_of(str(conf[key]))))
            live.config = conf
            live.backup_size = backup.size or live.backup_size
            if self.pool is not None:
                live.pool = self.pool
            fault_warnings(w)
            if self.start:
                w.log.line("Execute autostart")
                if int(conf.get("template", 0)):
                    w.log.line("you can't start a vm if it's a template")
                else:
                    live.status, live.started_at = "running", self.rt.clock()
            state.cond.notify_all()
            return None

    def _log_start(self, w: Worker, backup: Backup) -> None:
        if self.storage.is_pbs:
            w.log.line(f"restore proxmox backup archive '{self.archive}'")
            return
        path = f"{self.storage.spec.config.get('path', '/var/lib/vz')}/dump/{backup.filename}"
        tmp = f"/var/tmp/vzdumptmp{w.rec.upid.pid}"  # noqa: S108 - a log line, not a file
        w.log.line(f"restore vma archive: zstd -q -d -c {path} | vma extract -v -r "
                   f"{tmp}.fifo - {tmp}")

    def _config(self, archived: Mapping[str, Any], new_vols: Mapping[str, str],
                kept: list[str]) -> dict[str, Any]:
        conf: dict[str, Any] = {}
        for key, value in archived.items():
            if key in ("lock", "parent") or (key.startswith("unused") and key[6:].isdigit()):
                continue
            text = str(value)
            if key in new_vols:
                conf[key] = with_volume(text, new_vols[key])
            elif _net_key(key) and self.unique:
                conf[key] = with_new_mac(text)
            elif key == "smbios1" and self.unique:
                conf[key] = with_new_uuid(text)
            elif key == "vmgenid" and text != "0":
                conf[key] = with_new_uuid("").removeprefix("uuid=")
            else:
                conf[key] = value
        for key, value in self.overrides.items():
            conf[key] = str(value) if key == "memory" else value
        for i, volid in enumerate(kept):
            conf[f"unused{i}"] = volid
        return conf
