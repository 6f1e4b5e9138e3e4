"""Jobs of the serializer queue: their handles, identities, states, reports and errors.

Split from :mod:`felhom_agent.execution.queue` so the queue module holds only the lane
machinery; everything here is re-exported from there.
"""

from __future__ import annotations

import enum
import threading
from typing import Generic, TypeVar, cast

import attrs

from felhom_agent.errors import ReconcileError

__all__ = [
    "InvalidJob", "JobCancelled", "JobFailed", "JobHandle", "JobInfo", "JobState",
    "JobWaitTimeout", "LaneDepth", "QueueClosed", "QueueError", "QueueSnapshot",
    "QueueStateError", "ShutdownReport", "failure_reason",
]

T = TypeVar("T")


class QueueError(ReconcileError):
    """A queue operation or a queued job failed; carries the job's vmid and label if known.

    Args:
        message: operator-readable text.
        vmid: the guest the job was for, if the error concerns one job.
        label: the job's label (``"start 101"``), if the error concerns one job.
    """

    def __init__(self, message: str, *, vmid: int | None = None, label: str | None = None) -> None:
        super().__init__(message)
        self.vmid = vmid
        self.label = label


class JobFailed(QueueError):
    """The job ran and raised; ``reason`` is ``"ExcType: message"``, ``__cause__`` the exception."""

    def __init__(self, message: str, *, vmid: int, label: str, reason: str) -> None:
        super().__init__(message, vmid=vmid, label=label)
        self.reason = reason


class JobCancelled(QueueError):
    """The job never started: the queue shut down while it was still queued."""


class JobWaitTimeout(QueueError, TimeoutError):
    """Waiting for a job's result timed out; the job itself is unaffected and may still run."""


class QueueStateError(QueueError, RuntimeError):
    """The queue is in the wrong phase for the call (started twice, shutdown in progress)."""


class QueueClosed(QueueStateError):
    """The queue has been shut down and accepts no more jobs."""


class InvalidJob(QueueError, ValueError):
    """An argument is invalid (vmid not a non-negative int, fn not callable, negative grace)."""


class JobState(enum.Enum):
    """Where a job is in its life; the last three are terminal."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


@attrs.frozen
class JobInfo:
    """Identity of one submitted job, as reports and logs show it."""

    seq: int
    vmid: int
    label: str
    source: str


@attrs.frozen
class ShutdownReport:
    """What :meth:`SerializerQueue.shutdown` left behind, each tuple in submit order.

    Attributes:
        finished: jobs that were running at shutdown and finished within the grace period.
        abandoned_running: jobs still running when the grace period ended.
        unstarted: jobs that were queued and were cancelled without ever starting.
    """

    finished: tuple[JobInfo, ...]
    abandoned_running: tuple[JobInfo, ...]
    unstarted: tuple[JobInfo, ...]

    @property
    def clean(self) -> bool:
        """True when nothing was left running or unstarted."""
        return not self.abandoned_running and not self.unstarted


@attrs.frozen
class LaneDepth:
    """One busy lane: how many jobs wait in it and which one (if any) is running."""

    vmid: int
    queued: int
    running: JobInfo | None


@attrs.frozen
class QueueSnapshot:
    """A consistent point-in-time view of the queue, for reports and the planner."""

    workers: int
    running: int
    queued: int
    lanes: tuple[LaneDepth, ...]


class JobHandle(Generic[T]):
    """The awaitable result of one submitted job.

    Timestamps (``submitted_at``, ``started_at``, ``finished_at``) are readings of the queue's
    clock; ``start_index`` is the job's position in the global start order (0 = first job the
    queue ever started), which is how fairness is measured.
    """

    __slots__ = ("_done", "_error", "_gate", "_state", "_value", "finished_at", "info",
                 "start_index", "started_at", "submitted_at")

    def __init__(self, info: JobInfo, submitted_at: float) -> None:
        self.info = info
        self.submitted_at = submitted_at
        self.started_at: float | None = None
        self.finished_at: float | None = None
        self.start_index: int | None = None
        self._state = JobState.QUEUED
        self._value: T | None = None
        self._error: BaseException | None = None
        # A plain lock held until the job is resolved: waiters acquire it with their timeout
        # and pass it on at once. Much cheaper to create than an Event (which builds a
        # Condition), and submit() cost matters when a plan submits hundreds of jobs.
        self._gate = threading.Lock()
        self._gate.acquire()
        self._done = False

    def __repr__(self) -> str:
        i = self.info
        return f"<JobHandle #{i.seq} vmid={i.vmid} {i.label!r} {self._state.value}>"

    @property
    def vmid(self) -> int:
        """The guest this job is for."""
        return self.info.vmid

    @property
    def label(self) -> str:
        """The job's label, as given to ``submit``."""
        return self.info.label

    @property
    def state(self) -> JobState:
        """The job's current state."""
        return self._state

    @property
    def error(self) -> BaseException | None:
        """The exception the job raised, once it has failed; None otherwise."""
        return self._error

    def done(self) -> bool:
        """True once the job succeeded, failed or was cancelled."""
        return self._done

    def wait(self, timeout: float | None) -> bool:
        """Block until the job is done or ``timeout`` seconds passed; True if done.

        ``timeout`` is required so that a caller never waits forever by accident; pass None
        explicitly to wait without a bound.
        """
        if self._done:
            return True
        limit = -1.0 if timeout is None else min(max(timeout, 0.0), threading.TIMEOUT_MAX)
        if self._gate.acquire(timeout=limit):
            self._gate.release()  # let the next waiter through
            return True
        return self._done

    def result(self, timeout: float | None) -> T:
        """Return the job's value, waiting at most ``timeout`` seconds.

        Raises:
            JobWaitTimeout: the job was not done in time (it keeps running or queued).
            JobFailed: the job raised; the exception is the ``__cause__``.
            JobCancelled: the job never started because the queue shut down.
        """
        vmid, label = self.info.vmid, self.info.label
        what = f"job {label!r} (vmid {vmid})"
        if not self.wait(timeout):
            state = self._state.value
            msg = f"{what} not done after {timeout} s (state {state})"
            raise JobWaitTimeout(msg, vmid=vmid, label=label)
        if self._state is JobState.SUCCEEDED:
            return cast(T, self._value)
        if self._state is JobState.CANCELLED:
            msg = f"{what} was not started: the queue shut down"
            raise JobCancelled(msg, vmid=vmid, label=label)
        reason = failure_reason(self._error)
        msg = f"{what} failed: {reason}"
        raise JobFailed(msg, vmid=vmid, label=label, reason=reason) from self._error

    # Called by the queue with its lock held.
    def _resolve(
        self, state: JobState, value: object, error: BaseException | None, t: float
    ) -> None:
        self._value = cast(T, value)
        self._error = error
        self._state = state
        self.finished_at = t
        self._done = True
        self._gate.release()


def failure_reason(error: BaseException | None) -> str:
    """``"ExcType: message"`` for logs and :class:`JobFailed` (the type alone if no text)."""
    if error is None:
        return "unknown"
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
