"""Background tasks: UPIDs, the worker threads, status, logs and the guest locks they hold.

Every mutation in PVE forks a worker and answers with its UPID; the work, and many of the
checks, happen in the worker. :class:`TaskRunner` models that: :meth:`TaskRunner.fork` mints a
real-format UPID and starts a thread that (1) takes the guest's config flock, waiting up to
``lock_wait_s`` and failing with PVE's ``can't lock file ... - got timeout`` text, (2) runs the
plan's ``begin`` step (lock checks, setting ``lock: snapshot`` ...), (3) waits the configured
duration for its task type, then (4) runs ``end`` (the state change) and ``cleanup`` and
writes ``TASK OK`` / ``TASK WARNINGS: n`` / ``TASK ERROR: <msg>``; ``exitstatus`` is derived
from that last line exactly as ``PVE::UPID::read_status`` does.

When the flock is free at fork time, steps 1-2 run before the UPID is returned, so a test
sees ``lock`` in status/current right after the POST (PVE sets it within milliseconds).
Durations are waits on a per-task event, so tests can release tasks early
(:meth:`TaskRunner.release_all`) and shutdown interrupts every wait; all threads are joined.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from felhom_agent.errors import AgentError
from felhom_agent.sim.pve.faults import Fault, FaultBook
from felhom_agent.sim.pve.state import NodeState
from felhom_agent.sim.pve.upid import Upid

__all__ = ["DEFAULT_TASK_DURATION_S", "TaskCrash", "TaskError", "TaskPlan", "TaskRecord",
           "TaskRunner", "Worker"]

DEFAULT_TASK_DURATION_S = 0.2
_WARN_RE = re.compile(r"^WARNINGS: (\d+)$")
_POLL_S = 1.0  # upper bound of any single wait in a task thread


class TaskError(AgentError):
    """Raised inside a task step: the task ends with this message as its exitstatus."""


class TaskCrash(AgentError):
    """Raised by a worker that dies hard: no ``TASK`` line, exitstatus ``unexpected status``."""


def _noop(_log: TaskLog) -> None:
    return None


def _noop0() -> None:
    return None


@attrs.define
class TaskLog:
    """A task's log lines and warning count (``WARN:`` lines count, like ``log_warn``)."""

    lines: list[str] = attrs.field(factory=list)
    warnings: int = 0

    def line(self, text: str) -> None:
        """Append one log line."""
        self.lines.append(text)

    def warn(self, text: str) -> None:
        """Append a ``WARN:`` line and count it."""
        self.lines.append(f"WARN: {text}")
        self.warnings += 1


@attrs.frozen
class TaskPlan:
    """What one task does; every step runs with the state condition held."""

    type: str
    vmid: int | None
    id: str
    begin: Callable[[TaskLog], None] = _noop
    end: Callable[[TaskLog], None] = _noop
    cleanup: Callable[[], None] = _noop0
    #: hold the guest's config flock for the whole duration (power ops, qemu config POST).
    hold_flock: bool = False
    #: a custom body run on the task thread instead of flock/begin/duration/end (vzdump):
    #: it returns the error text (None = success) or raises :class:`TaskCrash`.
    worker: Callable[[Worker], str | None] | None = None


@attrs.define
class TaskRecord:
    """One task as the node's task list and status endpoints report it."""

    upid: Upid
    vmid: int | None
    status: str = "running"
    exitstatus: str | None = None
    endtime: int | None = None
    log: TaskLog = attrs.field(factory=TaskLog)
    fault: Fault | None = None
    interrupted: bool = False
    holds_flock: bool = False
    begun: bool = False
    gate: threading.Event = attrs.field(factory=threading.Event)

    @property
    def upid_str(self) -> str:
        """The UPID as sent on the wire."""
        return str(self.upid)

    def snapshot(self) -> dict[str, Any]:
        """A plain copy for test assertions."""
        return {"upid": self.upid_str, "type": self.upid.type, "id": self.upid.id,
                "user": self.upid.user, "status": self.status, "exitstatus": self.exitstatus,
                "starttime": self.upid.starttime, "endtime": self.endtime,
                "log": list(self.log.lines)}


class Worker:
    """What a custom task body gets: its record, the node state, and interruptible waits."""

    def __init__(self, rec: TaskRecord, state: NodeState) -> None:
        self.rec = rec
        self.state = state

    @property
    def log(self) -> TaskLog:
        """The task's log."""
        return self.rec.log

    @property
    def stopped(self) -> bool:
        """Whether the task was interrupted or the simulator is shutting down."""
        return self.rec.interrupted or self.state.stopping

    def wait(self, seconds: float) -> bool:
        """Sleep ``seconds`` (cut short by release/interrupt/stop); False when stopped."""
        self.rec.gate.wait(timeout=seconds)
        return not self.stopped

    def hang(self) -> None:
        """Wait until interrupted or stopped (a ``task_hang`` fault)."""
        while not self.stopped:
            self.rec.gate.wait(timeout=_POLL_S)
            if self.rec.gate.is_set() and not self.stopped:
                self.rec.gate.clear()


class TaskRunner:
    """Forks, runs and records tasks for one node."""

    def __init__(self, state: NodeState, faults: FaultBook, durations: Mapping[str, float],
                 lock_wait_s: float) -> None:
        self._state = state
        self._faults = faults
        self._durations = dict(durations)
        self._lock_wait_s = lock_wait_s
        self._records: dict[str, TaskRecord] = {}
        self._threads: list[threading.Thread] = []
        self._next_pid = 0x3A100
        self._pstart = 0x01C9F3E4

    # -- configuration -------------------------------------------------------------------
    def set_duration(self, task_type: str, seconds: float) -> None:
        """Make tasks of ``task_type`` (or ``default``) take ``seconds``."""
        with self._state.cond:
            self._durations[task_type] = float(seconds)

    def duration(self, task_type: str) -> float:
        """The configured duration for ``task_type``."""
        with self._state.cond:
            return self._durations.get(
                task_type, self._durations.get("default", DEFAULT_TASK_DURATION_S))

    # -- lookup --------------------------------------------------------------------------
    def get(self, upid: str) -> TaskRecord | None:
        """The record for ``upid`` (exact string), if this node ran it."""
        with self._state.cond:
            return self._records.get(upid)

    def records(self) -> list[TaskRecord]:
        """All records, oldest first."""
        with self._state.cond:
            return list(self._records.values())

    def wait(self, upid: str, timeout: float) -> bool:
        """Block until ``upid`` is stopped; False on timeout or unknown task."""
        with self._state.cond:
            rec = self._records.get(upid)
            if rec is None:
                return False
            return self._state.cond.wait_for(lambda: rec.status == "stopped", timeout=timeout)

    # -- lifecycle -----------------------------------------------------------------------
    def fork(self, plan: TaskPlan, user: str) -> str:
        """Start ``plan`` as a task of ``user`` (full token id); return its UPID."""
        st = self._state
        with st.cond:
            self._next_pid += 1
            upid = Upid(node=st.node, pid=self._next_pid, pstart=self._pstart + self._next_pid,
                        starttime=int(st.clock()), type=plan.type, id=plan.id, user=user)
            rec = TaskRecord(upid=upid, vmid=plan.vmid)
            rec.fault = self._faults.take_task_fault(plan.type, plan.vmid)
            self._records[rec.upid_str] = rec
            guest = st.guests.get(plan.vmid) if plan.vmid is not None else None
            if guest is not None:
                guest.pending_tasks.append(rec.upid_str)
            if plan.worker is not None:
                return self._start(rec, plan, self._run_worker)
            if plan.vmid is None or st.flock_free(plan.vmid, rec.upid_str):
                self._begin(rec, plan)
            if rec.status == "stopped":
                return rec.upid_str
            return self._start(rec, plan, self._run)

    def _start(self, rec: TaskRecord, plan: TaskPlan,
               target: Callable[[TaskRecord, TaskPlan], None]) -> str:
        thread = threading.Thread(target=target, args=(rec, plan),
                                  name=f"pve-sim-task-{plan.type}", daemon=True)
        self._threads.append(thread)
        thread.start()
        return rec.upid_str

    def _run_worker(self, rec: TaskRecord, plan: TaskPlan) -> None:
        worker = plan.worker
        if worker is None:  # pragma: no cover - fork() only starts this with a worker
            return
        try:
            error = worker(Worker(rec, self._state))
        except TaskCrash:
            with self._state.cond:
                self._finish(rec, None, crashed=True)
            return
        with self._state.cond:
            self._finish(rec, error)

    def _begin(self, rec: TaskRecord, plan: TaskPlan) -> None:
        """Take the flock (already known free) and run ``begin``; caller holds the cond."""
        if plan.vmid is not None:
            self._state.acquire_flock(plan.vmid, rec.upid_str, 0)
            rec.holds_flock = True
        rec.begun = True
        try:
            plan.begin(rec.log)
        except TaskError as err:
            self._release(rec)
            self._finish(rec, str(err))
            return
        if not plan.hold_flock:
            self._release(rec)

    def _release(self, rec: TaskRecord) -> None:
        if rec.holds_flock and rec.vmid is not None:
            self._state.release_flock(rec.vmid, rec.upid_str)
            rec.holds_flock = False

    def _run(self, rec: TaskRecord, plan: TaskPlan) -> None:
        st = self._state
        if not rec.begun:
            with st.cond:
                rec.log.line("trying to acquire lock...")
                guest = st.guests.get(plan.vmid) if plan.vmid is not None else None
                path = guest.flock_path() if guest is not None else "config"
                if plan.vmid is None or not st.acquire_flock(
                        plan.vmid, rec.upid_str, self._lock_wait_s):
                    self._finish(rec, f"can't lock file '{path}' - got timeout")
                    return
                rec.holds_flock = True
                rec.log.line(" OK")
                self._begin(rec, plan)
                if rec.status == "stopped":
                    return
        hang = rec.fault is not None and rec.fault.kind == "task_hang"
        if hang:
            while not rec.gate.wait(timeout=_POLL_S):
                pass
        else:
            rec.gate.wait(timeout=self.duration(plan.type))
        with st.cond:
            error: str | None = None
            if rec.fault is not None and rec.fault.kind == "task_crash" and not rec.interrupted:
                self._release(rec)  # a dead process holds no flock; its config locks stay
                self._finish(rec, None, crashed=True)
                return
            if rec.interrupted or (hang and st.stopping):
                error = "received interrupt"
            elif rec.fault is not None and rec.fault.kind == "task_fail":
                m = _WARN_RE.match(rec.fault.message)
                if m is None:
                    error = rec.fault.message
                else:
                    error = self._end(rec, plan)
                    for i in range(int(m.group(1))):
                        rec.log.warn(f"simulated warning {i + 1}")
            else:
                error = self._end(rec, plan)
            plan.cleanup()
            self._release(rec)
            self._finish(rec, error)

    def _end(self, rec: TaskRecord, plan: TaskPlan) -> str | None:
        try:
            plan.end(rec.log)
        except TaskError as err:
            return str(err)
        return None

    def _finish(self, rec: TaskRecord, error: str | None, *, crashed: bool = False) -> None:
        """Write the final log line, set exitstatus and wake waiters (cond held)."""
        if crashed:
            rec.exitstatus = "unexpected status"
        elif error is not None:
            text = error.rstrip("\n").replace("\n", " ")
            rec.log.line(f"TASK ERROR: {text}")
            rec.exitstatus = text
        elif rec.log.warnings:
            rec.log.line(f"TASK WARNINGS: {rec.log.warnings}")
            rec.exitstatus = f"WARNINGS: {rec.log.warnings}"
        else:
            rec.log.line("TASK OK")
            rec.exitstatus = "OK"
        rec.status = "stopped"
        rec.endtime = int(self._state.clock())
        for guest in self._state.guests.values():
            if rec.upid_str in guest.pending_tasks:
                guest.pending_tasks.remove(rec.upid_str)
        self._state.cond.notify_all()

    def interrupt(self, upid: str) -> bool:
        """Stop a running task like ``DELETE .../tasks/{upid}`` (ends ``received interrupt``)."""
        with self._state.cond:
            rec = self._records.get(upid)
            if rec is None:
                return False
            if rec.status == "running":
                rec.interrupted = True
                rec.gate.set()
                self._state.cond.notify_all()
            return True

    def release_all(self) -> None:
        """Let every running (non-hanging) task finish now instead of after its duration."""
        with self._state.cond:
            for rec in self._records.values():
                if rec.fault is None or rec.fault.kind != "task_hang":
                    rec.gate.set()

    def stop(self, timeout: float) -> None:
        """Wake every task thread and join them (each within ``timeout``)."""
        with self._state.cond:
            self._state.stopping = True
            self._state.cond.notify_all()
            for rec in self._records.values():
                rec.gate.set()
            threads = list(self._threads)
        for t in threads:
            t.join(timeout=timeout)
