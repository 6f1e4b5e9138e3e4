"""One guest inside a vzdump task (``exec_backup_task``), logged with PVE's exact lines.

Order: unknown vmid / HA stop-mode / retention-limit failures come before ``Starting Backup``;
then ``set_lock(backup)`` (any other lock fails the guest: ``CT is locked (snapshot)``), the
archive is "written" for the guest's backup duration, and the volume appears with its real
volid only when it fits: a storage whose ``avail`` is below the backup size fails with a write
error and creates nothing (vzdump never checks free space itself). After the archive: notes
from ``notes-template`` (a failure is only a warning), ``protected``, then pruning when
``remove`` is on and the retention is finite. The ``backup`` lock is removed in every outcome
except a hard crash (the ``backup_crash`` fault), which leaves the stale lock behind.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

from felhom_agent.sim.pve.handlers_prune import prune_marks, remove_backup
from felhom_agent.sim.pve.handlers_storage import max_protected_for
from felhom_agent.sim.pve.prune import format_keep
from felhom_agent.sim.pve.state import Guest, render_section
from felhom_agent.sim.pve.storage import LOG_STAMP, Backup, SimStorage, backup_volid, node_time
from felhom_agent.sim.pve.tasks import TaskCrash, Worker

if TYPE_CHECKING:
    from felhom_agent.sim.pve.backup_job import VzdumpJob

__all__ = ["GuestOutcome", "backup_guest", "expand_notes", "format_size"]


class GuestOutcome(enum.Enum):
    """How one guest's backup ended."""

    OK = "ok"
    FAILED = "failed"
    INTERRUPTED = "interrupted"


class _GuestFailed(Exception):
    """This guest's backup failed with the message."""


def format_size(size: int) -> str:
    """vzdump's ``archive file size`` rendering (KB/MB integers, GB/TB two decimals)."""
    kb = size / 1024
    if kb < 1024:
        return f"{int(kb)}KB"
    mb = kb / 1024
    if mb < 1024:
        return f"{int(mb)}MB"
    gb = mb / 1024
    return f"{gb:.2f}GB" if gb < 1024 else f"{gb / 1024:.2f}TB"


def _hms(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def expand_notes(template: str, *, guestname: str, vmid: int, node: str,
                 cluster: str | None) -> str:
    """Unescape ``\\n``/``\\\\`` and replace ``{{guestname}}``, ``{{vmid}}``, ``{{node}}``,
    ``{{cluster}}`` (``standalone node`` outside a cluster)."""
    out: list[str] = []
    i = 0
    while i < len(template):
        if template[i] == "\\" and i + 1 < len(template):
            out.append("\n" if template[i + 1] == "n" else template[i + 1])
            i += 2
            continue
        out.append(template[i])
        i += 1
    text = "".join(out)
    values = {"guestname": guestname, "vmid": str(vmid), "node": node,
              "cluster": cluster or "standalone node"}
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", value)
    return text


def _local(job: VzdumpJob, epoch: float) -> str:
    return node_time(epoch, job.rt.state.tz, LOG_STAMP)


def _precheck(job: VzdumpJob, guest: Guest | None, vmid: int, st: SimStorage) -> Guest:
    """Failures vzdump raises before ``Starting Backup`` (cond held)."""
    if guest is None:
        raise _GuestFailed(f"unable to find VM '{vmid}'")
    mode = str(job.params.get("mode", "snapshot"))
    if mode == "stop" and guest.ha_managed and guest.status == "running":
        raise _GuestFailed("Cannot execute a backup with stop mode on a HA managed and enabled "
                           "Service. Use snapshot mode or disable the Service.")
    keep = job.keep or {}
    limit = 0 if keep.get("keep-all") else sum(keep.values())
    protect = bool(job.params.get("protected"))
    if (limit and not job.remove) or protect:
        mine = [b for b in st.backups if b.vmid == vmid and b.subtype == guest.type]
        protected = sum(1 for b in mine if b.protected)
        if protect:
            most = max_protected_for(job.principal, st)
            if -1 < most <= protected:
                raise _GuestFailed(f"The number of protected backups per guest is limited to "
                                   f"{most} on storage '{st.name}'")
        elif len(mine) - protected >= limit:
            raise _GuestFailed(f"There is a max backup limit of {limit} enforced by the target "
                               "storage or the vzdump parameters. Either increase the limit or "
                               "delete old backups.")
    return guest


def _archive_line(st: SimStorage, volid: str) -> str:
    name = volid.split(":backup/", 1)[1]
    if st.is_pbs:
        return f"INFO: creating Proxmox Backup Server archive '{name}'"
    return (f"INFO: creating vzdump archive "
            f"'{st.spec.config.get('path', '/var/lib/vz')}/dump/{name}'")


def _describe(w: Worker, g: Guest, mode: str) -> None:
    w.log.line(f"INFO: backup mode: {mode if g.status == 'running' else 'stop'}")
    w.log.line("INFO: ionice priority: 7")
    if g.type == "lxc":
        w.log.line(f"INFO: CT Name: {g.name}")
        w.log.line("INFO: including mount point rootfs ('/') in backup")
        return
    w.log.line(f"INFO: VM Name: {g.name}")
    for key in sorted(k for k in g.config if k[:4] in ("scsi", "virt", "sata") and k[-1].isdigit()
                      and k != "scsihw"):
        volume, _, opts = str(g.config[key]).partition(",")
        size = next((o[5:] for o in opts.split(",") if o.startswith("size=")), "")
        w.log.line(f"INFO: include disk '{key}' '{volume}' {size}".rstrip())


def _lock(job: VzdumpJob, w: Worker, g: Guest) -> None:
    """``set_lock(backup)``: the config flock, then refuse any existing lock (cond held)."""
    state = job.rt.state
    owner = w.rec.upid_str
    if not state.acquire_flock(g.vmid, owner, job.rt.scenario.lock_wait_s):
        raise _GuestFailed(f"can't lock file '{g.flock_path()}' - got timeout")
    try:
        if g.lock:
            raise _GuestFailed(f"{g.kind_word} is locked ({g.lock})")
        g.config["lock"] = "backup"
    finally:
        state.release_flock(g.vmid, owner)


def _finish_archive(job: VzdumpJob, w: Worker, g: Guest, st: SimStorage, b: Backup) -> None:
    """Create the volume and apply notes, protection and pruning (cond held)."""
    faults = job.rt.faults
    fail = faults.take_backup_fault("backup_fail", g.vmid)
    if fail is not None:
        raise _GuestFailed(fail.message)
    if b.size is not None and b.size > st.avail:
        raise _GuestFailed("zstd: error 70 : Write error : cannot write block : No space left "
                           "on device" if not st.is_pbs else
                           "backup write data failed: command error: write_data upload error: "
                           "No space left on device (os error 28)")
    st.backups.append(b)
    st.consume(b.size or 0)
    if not st.is_pbs:
        w.log.line(f"INFO: archive file size: {format_size(b.size or 0)}")
    template = job.params.get("notes-template")
    if template:
        w.log.line("INFO: adding notes to backup")
        warn = faults.take_backup_fault("backup_warn", g.vmid)
        if warn is not None:
            w.log.warn(f"unable to add notes - {warn.message}")
        else:
            b.notes = expand_notes(str(template), guestname=g.name, vmid=g.vmid,
                                   node=job.rt.node, cluster=job.rt.state.cluster_name)
    if job.params.get("protected"):
        w.log.line("INFO: marking backup as protected")
        b.protected = True
    if job.remove and job.keep:
        w.log.line(f"INFO: prune older backups with retention: {format_keep(job.keep)}")
        pruned = 0
        for entry in prune_marks(st, job.keep, g.vmid, g.type, job.rt.state.tz):
            old = st.find(entry["volid"]) if entry["mark"] == "remove" else None
            if old is not None and remove_backup(st, old) is None:
                w.log.line(f"INFO: removing backup '{entry['volid']}'")
                pruned += 1
        extra = " not covered by keep-retention policy" if pruned else ""
        w.log.line(f"INFO: pruned {pruned} backup(s){extra}")


def _unlock(job: VzdumpJob, guest: Guest | None) -> None:
    if guest is not None and guest.config.get("lock") == "backup":
        del guest.config["lock"]
        job.rt.state.cond.notify_all()


def backup_guest(job: VzdumpJob, w: Worker, vmid: int) -> GuestOutcome:
    """Back up one guest inside the running task; the outcome for the job's error count."""
    state = job.rt.state
    clock = job.rt.clock
    start = clock()
    locked: Guest | None = None
    try:
        with state.cond:
            st = state.storages[job.storage]
            g = _precheck(job, state.guests.get(vmid), vmid, st)
            w.log.line(f"INFO: Starting Backup of VM {vmid} ({g.type})")
            w.log.line(f"INFO: Backup started at {_local(job, clock())}")
            w.log.line(f"INFO: status = {g.status}")
            _lock(job, w, g)
            locked = g
            _describe(w, g, str(job.params.get("mode", "snapshot")))
            ctime = int(start)
            volid, fmt = backup_volid(st.spec, g.type, vmid, ctime, tz=state.tz,
                                      compress=str(job.params.get("compress", "0")))
            if st.find(volid) is not None:
                raise _GuestFailed(f"backup '{volid}' already exists (one backup per guest and "
                                   "second)")
            w.log.line(_archive_line(st, volid))
            if job.rt.faults.take_backup_fault("backup_crash", vmid) is not None:
                locked = None  # a hard-killed vzdump never runs its cleanup
                raise TaskCrash(f"vzdump killed while backing up {vmid}")
            cfg = {k: v for k, v in g.config.items() if k not in ("lock", "parent")}
            backup = Backup(storage=st.name, volid=volid, vmid=vmid, subtype=g.type,
                            format=fmt, size=g.backup_size, ctime=ctime,
                            encrypted=(str(st.spec.config["encryption-key"])
                                       if st.is_pbs and "encryption-key" in st.spec.config
                                       else None),
                            config=render_section(cfg), pbs=st.is_pbs)
            duration = (g.backup_duration_s if g.backup_duration_s is not None
                        else job.rt.tasks.duration("vzdump"))
        fault = w.rec.fault
        if fault is not None and fault.kind == "task_hang" and fault.vmid in (None, vmid):
            w.hang()
        else:
            w.wait(duration)
        with state.cond:
            if w.stopped:
                raise _GuestFailed("interrupted by signal")
            _finish_archive(job, w, g, st, backup)
            _unlock(job, locked)
            locked = None
            w.log.line(f"INFO: Finished Backup of VM {vmid} ({_hms(clock() - start)})")
            w.log.line(f"INFO: Backup finished at {_local(job, clock())}")
            return GuestOutcome.OK
    except _GuestFailed as err:
        with state.cond:
            _unlock(job, locked)
            w.log.line(f"ERROR: Backup of VM {vmid} failed - {err}")
            w.log.line(f"INFO: Failed at {_local(job, clock())}")
            if str(err) == "interrupted by signal":
                return GuestOutcome.INTERRUPTED
            return GuestOutcome.FAILED
