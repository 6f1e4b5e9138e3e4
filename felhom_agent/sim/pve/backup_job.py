"""One vzdump task: the node-wide lock, then each guest in vmid order, logged like PVE.

The task body (``VzdumpJob.run``) follows ``PVE::VZDump``: the storage is checked first
(inactive, missing or not a backup storage: the task dies), then the node-wide lock
``/var/run/vzdump.lock`` is taken -- a second vzdump task logs ``INFO: trying to get global lock
- waiting...`` and waits, it is queued, not refused -- then VM.Backup is checked for every
selected guest (a missing one kills the task; with ``all`` the guest is skipped). Per guest
(:mod:`felhom_agent.sim.pve.backup_guest`) a failure is logged as ``ERROR: Backup of VM <id>
failed - <reason>`` and the job goes on; the job ends ``INFO: Backup job finished with errors``
and the task ``TASK ERROR: job errors``. Warnings (a notes failure) end ``TASK WARNINGS: n``.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping

import attrs

from felhom_agent.sim.pve.backup_guest import GuestOutcome, backup_guest
from felhom_agent.sim.pve.privileges import Principal
from felhom_agent.sim.pve.runtime import NodeRuntime
from felhom_agent.sim.pve.tasks import TaskCrash, Worker

__all__ = ["DEFAULT_LOCKWAIT_MIN", "LOCKFILE", "VzdumpJob", "command_line"]

LOCKFILE = "/var/run/vzdump.lock"
#: vzdump's default ``lockwait``: minutes a task waits for the node-wide lock.
DEFAULT_LOCKWAIT_MIN = 180


def command_line(vmids: list[int], params: Mapping[str, object]) -> str:
    """The ``vzdump ...`` line of ``starting new backup job`` (sorted ``--key value``)."""
    parts = ["vzdump", *(str(v) for v in vmids)]
    for key in sorted(params):
        if key in ("vmid", "node"):
            continue
        parts += [f"--{key}", shlex.quote(str(params[key]))]
    return " ".join(parts)


@attrs.define
class VzdumpJob:
    """Everything the task needs, captured when the API call forked it."""

    rt: NodeRuntime
    principal: Principal
    storage: str
    vmids: list[int]
    skiplist: list[int]
    select_all: bool
    params: Mapping[str, object]
    keep: dict[str, int] | None
    remove: bool
    lockwait_min: int = DEFAULT_LOCKWAIT_MIN

    def _storage_errors(self) -> list[str]:
        st = self.rt.state.storages.get(self.storage)
        sid = self.storage
        if st is None:
            missing = f"storage '{sid}' does not exist"
            return [f"could not activate storage '{sid}': {missing}",
                    f"could not get storage information for '{sid}': {missing}"]
        errors = []
        if not st.active or not st.spec.enabled:
            errors.append(f"could not activate storage '{sid}': storage '{sid}' is not online")
        if not st.has_content("backup"):
            errors.append(f"could not get storage information for '{sid}': can't use storage "
                          f"'{sid}' for backups - wrong content type")
        return errors

    def _get_lock(self, w: Worker) -> None:
        """Take the node-wide vzdump lock (cond held), waiting like ``getlock``."""
        state = self.rt.state
        upid = w.rec.upid_str
        if state.vzdump_lock not in (None, upid):
            w.log.line("INFO: trying to get global lock - waiting...")
            state.cond.notify_all()
            got = state.cond.wait_for(lambda: state.vzdump_lock is None or w.stopped,
                                      timeout=self.lockwait_min * 60)
            if w.stopped or not got:
                why = "interrupted by signal" if w.stopped else "got timeout"
                w.log.line(f"ERROR: can't acquire lock '{LOCKFILE}' - {why}")
                raise TaskCrash(why)  # the worker exits without a TASK line
            w.log.line("INFO: got global lock")
        state.vzdump_lock = upid

    def run(self, w: Worker) -> str | None:
        """The task body; returns the task error (None = success) or raises TaskCrash."""
        state = self.rt.state
        with state.cond:
            errors = self._storage_errors()
            if errors:
                return "\n".join(errors)
            self._get_lock(w)
        try:
            return self._exec(w)
        finally:
            with state.cond:
                if state.vzdump_lock == w.rec.upid_str:
                    state.vzdump_lock = None
                state.cond.notify_all()

    def _exec(self, w: Worker) -> str | None:
        state = self.rt.state
        with state.cond:
            w.log.line(f"INFO: starting new backup job: {command_line(self.vmids, self.params)}")
            if self.skiplist:
                w.log.line("INFO: skip external VMs: " + ", ".join(map(str, self.skiplist)))
            tasks: list[int] = []
            for vmid in sorted(self.vmids):
                if vmid in state.guests and not self.principal.has(f"/vms/{vmid}", "VM.Backup"):
                    if self.select_all:
                        continue
                    return f"Permission check failed (/vms/{vmid}, VM.Backup)"
                tasks.append(vmid)
        errcount = 0
        for vmid in tasks:
            outcome = backup_guest(self, w, vmid)
            if outcome is GuestOutcome.INTERRUPTED:
                with state.cond:
                    w.log.line("ERROR: Backup job failed - interrupted by signal")
                return "interrupted by signal"
            errcount += outcome is GuestOutcome.FAILED
        with state.cond:
            fault = w.rec.fault
            if fault is not None and fault.kind == "task_fail":
                if not fault.message.startswith("WARNINGS: "):
                    w.log.line(f"ERROR: Backup job failed - {fault.message}")
                    return fault.message
                for i in range(int(fault.message.removeprefix("WARNINGS: ") or 0)):
                    w.log.warn(f"simulated job warning {i + 1}")
            w.log.line("INFO: Backup job finished with errors" if errcount
                       else "INFO: Backup job finished successfully")
        return "job errors" if errcount else None
