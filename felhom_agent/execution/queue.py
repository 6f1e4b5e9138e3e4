"""The per-guest serializer queue: one FIFO lane per vmid, drained by W worker threads.

The single choke point every guest mutation goes through (``docs/architecture.md``, "The queue"):

1. Jobs of one vmid run one at a time, in submit order: a lane is held by at most one worker
   (``_running``) and jobs leave it from the head only.
2. Different vmids run in parallel, at most W at once (exactly W worker threads exist).
3. No coalescing: every ``submit`` is one execution (op_id dedupe belongs to the journal).
4. Fairness: runnable lanes wait in one explicit FIFO (``_ready``) ordered by when their head
   job became runnable — submitted to an idle lane, or its predecessor finished. A free worker
   serves the lane whose head has waited longest *for a worker*; time spent behind the lane's
   own running job does not count, so a deep lane re-enters at the tail after each job (as
   client-go's workqueue does) and cannot starve the others: with one lane of K jobs and M
   single-job lanes, each single lane starts within ceil((M+1)/W) rounds (target T5). It never
   depends on which thread ``Condition.notify`` wakes (CPython promises no order).
5. ``submit`` returns a :class:`JobHandle` (value, :class:`JobFailed`, :class:`JobCancelled`,
   :class:`JobWaitTimeout`). A raising job (even a ``BaseException``) is recorded and its worker
   carries on. Handles resolve under the queue lock together with the lane release, so once
   ``done()`` the job no longer makes :meth:`SerializerQueue.busy` true, and one lane's handles
   resolve in submit order.
6. Shutdown stops accepting, cancels queued jobs (logged as unstarted), waits up to a grace
   period for running jobs and reports those still running; they keep their daemon thread until
   they return (a PVE task runs on anyway; its UPID is in the journal for re-attach).
7. Idle workers block in ``Condition.wait()`` *without* a timeout, so an idle queue costs no
   CPU and no wake-ups (T6). It is the one deliberate untimed wait: every event a worker cares
   about (new work, shutdown, a group slot freed) notifies it.
8. Group limits: a job may belong to a named group with a node-wide limit (``backup``: at
   most ``backup.max_concurrent`` backups at once). A limit keyed ``<family>:*`` applies to
   each group ``<family>:<anything>`` on its own (``clone-source:*``: 1 -- the clones of one
   container template run one at a time, clones of different templates in parallel). A lane
   whose head job's group is full keeps its place in ``_ready`` but is skipped, so a waiting
   backup never holds a worker and the other lanes keep flowing; it starts as soon as a slot
   is free, in ``_ready`` order.

9. The host lane: lane :data:`HOST_LANE` (0, never a guest's vmid: those are 100 and up)
   carries the host kinds' jobs (``host.mount_usb``...), which act on no guest. They run one
   at a time in submit order, like one guest's jobs, and in parallel with the guests' lanes.

Timestamps and the shutdown deadline come from an injectable monotonic ``clock``.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import attrs

from felhom_agent.errors import AgentError
from felhom_agent.execution.job import (
    InvalidJob,
    JobCancelled,
    JobFailed,
    JobHandle,
    JobInfo,
    JobState,
    JobWaitTimeout,
    LaneDepth,
    QueueClosed,
    QueueError,
    QueueSnapshot,
    QueueStateError,
    ShutdownReport,
    failure_reason,
)

__all__ = [
    "HOST_LANE", "Clock", "InvalidJob", "JobCancelled", "JobFailed", "JobHandle", "JobInfo",
    "JobState",
    "JobWaitTimeout", "LaneDepth", "QueueClosed", "QueueError", "QueueSnapshot",
    "QueueStateError", "SerializerQueue", "ShutdownReport"
]

T = TypeVar("T")

#: The lane of the host kinds' jobs (no guest has vmid 0).
HOST_LANE = 0

Clock = Callable[[], float]
"""Monotonic seconds; ``time.monotonic`` in production, a fake in tests."""

_log = logging.getLogger(__name__)


class _Phase(enum.Enum):
    NEW = "new"
    STARTED = "started"
    STOPPING = "stopping"
    CLOSED = "closed"


@attrs.frozen
class _Job:
    fn: Callable[[], Any]
    handle: JobHandle[Any]
    group: str | None = None


class SerializerQueue:
    """Per-vmid FIFO lanes drained by ``workers`` threads (see the module docstring).

    Usage::

        q = SerializerQueue(workers=8)
        q.start()
        h = q.submit(101, do_start, label="start 101", source="plan:7")
        h.result(timeout=60)
        report = q.shutdown(grace_s=30)

    Args:
        workers: the number of worker threads W (config ``reconcile.workers``), at least 1.
        limits: the most jobs of a group that run at once (``{"backup": 1}``); a key
            ``<family>:*`` limits each group ``<family>:<x>`` separately; a group without a
            limit is unbounded (up to W).
        clock: monotonic seconds, used for timestamps and the shutdown deadline.
        logger: where job failures and shutdown leftovers are logged.
        name: prefix of the worker thread names.
    """

    def __init__(
        self,
        *,
        workers: int = 8,
        limits: Mapping[str, int] | None = None,
        clock: Clock = time.monotonic,
        logger: logging.Logger | None = None,
        name: str = "felhom-queue",
    ) -> None:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise InvalidJob(f"workers must be an integer >= 1, got {workers!r}")
        for group, limit in (limits or {}).items():
            if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
                raise InvalidJob(f"limit of group {group!r} must be an integer >= 1, "
                                 f"got {limit!r}")
        self._workers = workers
        self._limits: dict[str, int] = dict(limits or {})
        # group -> jobs of that group running now (only groups with a limit are counted).
        self._in_group: dict[str, int] = {}
        self._clock = clock
        self._log = logger if logger is not None else _log
        self._name = name
        self._lock = threading.Lock()
        # Workers wait on _work for runnable lanes; shutdown and wait_idle wait on _idle.
        self._work = threading.Condition(self._lock)
        self._idle = threading.Condition(self._lock)
        # vmid -> queued (not yet started) jobs; a key exists only while its deque is non-empty.
        self._lanes: dict[int, deque[_Job]] = {}
        # vmids whose lane has a queued head and no running job, oldest-runnable first.
        self._ready: deque[int] = deque()
        # vmid -> the handle of the job a worker is running for it.
        self._running: dict[int, JobHandle[Any]] = {}
        self._next_seq = 0
        self._next_start = 0
        self._phase = _Phase.NEW
        self._report: ShutdownReport | None = None

    @property
    def workers(self) -> int:
        """The number of worker threads W."""
        return self._workers

    def start(self) -> None:
        """Start the W worker threads; jobs submitted before this call wait until now.

        Raises:
            QueueClosed: the queue has been shut down.
            QueueStateError: the queue is already started.
        """
        with self._lock:
            if self._phase in (_Phase.STOPPING, _Phase.CLOSED):
                raise QueueClosed("cannot start a queue that has been shut down")
            if self._phase is not _Phase.NEW:
                raise QueueStateError("the queue is already started")
            self._phase = _Phase.STARTED
            for n in range(self._workers):
                # Daemon threads: a job abandoned at shutdown must not keep the process alive.
                name = f"{self._name}-{n}"
                threading.Thread(target=self._worker, name=name, daemon=True).start()

    def submit(
        self, vmid: int, fn: Callable[[], T], *, label: str, source: str = "",
        group: str | None = None,
    ) -> JobHandle[T]:
        """Queue ``fn`` at the tail of ``vmid``'s lane and return its handle.

        Args:
            vmid: the guest (or :data:`HOST_LANE` for a host job); jobs of one vmid run one
                at a time in submit order.
            fn: the job, called with no arguments on a worker thread; its return value is the
                handle's result.
            label: short human text for logs and reports (``"start 101"``).
            source: who asked (``"plan:7"``, ``"op:<op_id>"``, ``"selftest"``).
            group: the job's limit group (``"backup"``), or ``None``.

        Raises:
            QueueClosed: the queue is shutting down or shut down.
            InvalidJob: ``vmid`` is not a non-negative int or ``fn`` is not callable.
        """
        if isinstance(vmid, bool) or not isinstance(vmid, int) or vmid < 0:
            raise InvalidJob(f"vmid must be a non-negative integer, got {vmid!r}", label=label)
        if not callable(fn):
            raise InvalidJob(f"job {label!r} is not callable: {fn!r}", vmid=vmid, label=label)
        with self._lock:
            if self._phase in (_Phase.STOPPING, _Phase.CLOSED):
                msg = f"queue is shut down; refused job {label!r} for vmid {vmid}"
                raise QueueClosed(msg, vmid=vmid, label=label)
            info = JobInfo(seq=self._next_seq, vmid=vmid, label=label, source=source)
            self._next_seq += 1
            handle: JobHandle[T] = JobHandle(info, self._clock())
            lane = self._lanes.get(vmid)
            if lane is None:
                lane = self._lanes[vmid] = deque()
                if vmid not in self._running:
                    self._ready.append(vmid)
                    self._work.notify()
            lane.append(_Job(fn, handle, group))
            return handle

    def busy(self, vmid: int) -> bool:
        """True while ``vmid``'s lane holds a queued or running job (the planner's no-pile-up)."""
        with self._lock:
            return vmid in self._lanes or vmid in self._running

    def depths(self) -> dict[int, int]:
        """Jobs not yet done (queued + running) per busy vmid; idle lanes are absent."""
        with self._lock:
            out = {vmid: len(lane) for vmid, lane in self._lanes.items()}
            for vmid in self._running:
                out[vmid] = out.get(vmid, 0) + 1
            return out

    def snapshot(self) -> QueueSnapshot:
        """A consistent view of every busy lane, sorted by vmid."""
        with self._lock:
            running = {v: h.info for v, h in self._running.items()}
            lanes = tuple(
                LaneDepth(vmid=v, queued=len(self._lanes.get(v, ())), running=running.get(v))
                for v in sorted(set(self._lanes) | set(running))
            )
            queued = sum(len(lane) for lane in self._lanes.values())
            return QueueSnapshot(self._workers, len(running), queued, lanes)

    def wait_idle(self, timeout: float | None) -> bool:
        """Block until no job is queued or running (or ``timeout`` passed); True if idle."""
        with self._lock:
            return self._idle.wait_for(lambda: not self._lanes and not self._running, timeout)

    def shutdown(self, grace_s: float) -> ShutdownReport:
        """Stop accepting, cancel queued jobs, give running jobs ``grace_s`` seconds to finish.

        Queued jobs are resolved as cancelled (:class:`JobCancelled`) and logged as unstarted.
        Running jobs are never interrupted; those still running when the grace period ends are
        reported as abandoned (their handles resolve whenever they do finish). A second call
        returns the first call's report.

        Raises:
            InvalidJob: ``grace_s`` is negative.
            QueueStateError: another thread's shutdown is still in progress.
        """
        if grace_s < 0:
            raise InvalidJob(f"grace_s must be >= 0, got {grace_s!r}")
        with self._lock:
            if self._report is not None:
                return self._report
            if self._phase is _Phase.STOPPING:
                raise QueueStateError("shutdown already in progress in another thread")
            self._phase = _Phase.STOPPING
            now = self._clock()
            queued = sorted(
                (job.handle for lane in self._lanes.values() for job in lane),
                key=lambda h: h.info.seq,
            )
            self._lanes.clear()
            self._ready.clear()
            for h in queued:
                h._resolve(JobState.CANCELLED, None, None, now)
            at_stop = sorted(self._running.values(), key=lambda h: h.info.seq)
            self._work.notify_all()
            self._idle.notify_all()
            deadline = now + grace_s
            while self._running:
                remaining = deadline - self._clock()
                # A timed-out wait ends the grace period even if an injected clock stands still.
                if remaining <= 0 or not self._idle.wait(remaining):
                    break
            abandoned = sorted(self._running.values(), key=lambda h: h.info.seq)
            self._phase = _Phase.CLOSED
            self._work.notify_all()
            left = {h.info.seq for h in abandoned}
            report = ShutdownReport(
                finished=tuple(h.info for h in at_stop if h.info.seq not in left),
                abandoned_running=tuple(h.info for h in abandoned),
                unstarted=tuple(h.info for h in queued),
            )
            self._report = report
        self._log_shutdown(report, grace_s)
        return report

    def _log_shutdown(self, report: ShutdownReport, grace_s: float) -> None:
        left, abandoned = report.unstarted, report.abandoned_running
        if left:
            msg = "queue shutdown: %d queued job(s) left unstarted: %s"
            self._log.warning(msg, len(left), _describe(left))
        if abandoned:
            msg = "queue shutdown: %d job(s) still running after the %.1f s grace period: %s"
            self._log.warning(msg, len(abandoned), grace_s, _describe(abandoned))
        msg = "queue shut down: %d finished during grace, %d still running, %d unstarted"
        self._log.info(msg, len(report.finished), len(abandoned), len(left))

    def _next_ready(self) -> int | None:
        """The oldest ready lane whose head job's group has a free slot (lock held)."""
        if not self._in_group:
            return 0 if self._ready else None  # fast path: nothing is being held back
        for i, vmid in enumerate(self._ready):
            group = self._lanes[vmid][0].group
            limit = self._limit_of(group)
            if limit is None or self._in_group.get(group or "", 0) < limit:
                return i
        return None

    def _limit_of(self, group: str | None) -> int | None:
        """The limit of ``group``: its own, else its family's (``clone-source:*``)."""
        if group is None:
            return None
        limit = self._limits.get(group)
        if limit is None and ":" in group:
            limit = self._limits.get(group.split(":", 1)[0] + ":*")
        return limit

    def _take(self) -> _Job | None:
        """Wait for a runnable lane and claim its head job; None when the worker must exit."""
        with self._lock:
            while (index := self._next_ready()) is None and self._phase is _Phase.STARTED:
                self._work.wait()  # untimed on purpose: idle workers cost no CPU (module doc)
            if self._phase is not _Phase.STARTED or index is None:
                return None
            now = self._clock()  # read before any state changes, in case a fake clock raises
            vmid = self._ready[index]
            del self._ready[index]
            lane = self._lanes[vmid]
            job = lane.popleft()
            if not lane:
                del self._lanes[vmid]
            if job.group is not None and self._limit_of(job.group) is not None:
                self._in_group[job.group] = self._in_group.get(job.group, 0) + 1
            h = job.handle
            self._running[vmid] = h
            h._state = JobState.RUNNING
            h.started_at = now
            h.start_index = self._next_start
            self._next_start += 1
            return job

    def _finish(self, job: _Job, value: object, error: BaseException | None) -> None:
        """Resolve the handle and release its lane (and its group slot), atomically."""
        h = job.handle
        with self._lock:
            now = self._clock()
            vmid = h.info.vmid
            group = job.group
            if group is not None and group in self._in_group:
                self._in_group[group] -= 1
                if not self._in_group[group]:
                    del self._in_group[group]
                # A lane held back by this group may be runnable now: wake a waiting worker
                # (this one loops back too, but another may be idle while this one is busy).
                self._work.notify()
            del self._running[vmid]
            state = JobState.SUCCEEDED if error is None else JobState.FAILED
            h._resolve(state, value, error, now)
            if vmid in self._lanes:
                # Re-enter at the tail: this lane's next job now starts waiting for a worker.
                # No notify: this worker loops straight back into _take and claims one lane.
                self._ready.append(vmid)
            if self._phase is _Phase.STOPPING or (not self._lanes and not self._running):
                self._idle.notify_all()

    def _worker(self) -> None:
        while True:
            job = self._take()
            if job is None:
                return
            value: object = None
            error: BaseException | None = None
            try:
                value = job.fn()
            except BaseException as exc:  # a job must never take its worker down with it
                error = exc
            h = job.handle
            self._finish(job, value, error)
            del job
            if error is not None:
                self._log_failure(h, error)

    def _log_failure(self, h: JobHandle[Any], error: BaseException) -> None:
        i = h.info
        # Our own errors are expected outcomes; anything else is a bug worth a traceback.
        self._log.warning(
            "job %r (vmid %d, source %s) failed: %s",
            i.label,
            i.vmid,
            i.source or "-",
            failure_reason(error),
            exc_info=None if isinstance(error, AgentError) else error,
        )


def _describe(infos: tuple[JobInfo, ...]) -> str:
    return ", ".join(f"{i.label!r} (vmid {i.vmid}, {i.source or '-'})" for i in infos)
