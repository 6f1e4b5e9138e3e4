"""One poller for every in-flight PVE task: a task-list read per tick, status reads on exit only.

``docs/control-core.md`` ("Failure lessons") and target T9 (``docs/control-core.md``, "Targets").
Polling each UPID's status separately costs one GET per task per tick, and ``pveproxy`` has three
workers. :class:`TaskWatcher` instead reads ``GET /nodes/{node}/tasks?source=active`` once per tick,
which covers *all* in-flight tasks, and reads ``.../tasks/{upid}/status`` only for watched UPIDs
that are no longer in the active list (to learn their exit status). Status GETs per tick are
therefore bounded by the number of tasks that *finished*, not by how many are running.

Waiters (executor jobs on queue workers) block on one :class:`threading.Condition` with their
own deadline. The poller thread only reads the active list: a watched task that left it is
marked *exited*, and one of its waiters reads its status on its own thread (outside the
lock) and resolves it. Tasks that end together -- a round of starts of equal length -- are
thereby confirmed in parallel, each in one request time, instead of one after another on the
poller thread (where the last of W waited W request times). The read count is unchanged:
one status read per task that left the list. A waiter may pass an ``on_exit`` probe (the
executor's post-task re-read of the guest): it runs on a helper thread *while* that status
read is in flight -- the task has already left the active list, so it has ended -- and its
value comes back as :attr:`TaskResult.exit_probe` when that read found the task stopped; the
re-read no longer waits for the status read to come back. The tick is adaptive: the delay
to the next tick grows with the age of the *youngest* watched task (``WatchPolicy``), so a
fresh task is seen quickly and a 30-minute backup is polled every ``cap_s``. On top of that,
each new watch whose task type ended recently gets one tick timed to when that type was
last seen finished (:class:`DurationMemory`): tasks of one type often take about as long as
each other, and the tick then finds them gone at once instead of up to an interval later
(at most one extra list read per task). With nothing watched the poller sleeps on the
condition without waking (zero wake-ups when idle, T6). See ``docs/architecture.md``
("Waiting for tasks").

Terminal mapping is :func:`felhom_agent.proxmox.tasks.result_from_exitstatus` (``OK``,
``WARNINGS: n`` -> results; ``unexpected status`` -> TaskUnknown; other text -> TaskFailed).
A deadline (or :meth:`TaskWatcher.stop`) raises :class:`TaskTimeout`: still running, never a
failure. Transient poll errors (transport, 5xx) are logged and retried on the next tick.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

import attrs

from felhom_agent.backoff import Attempt, Proportional
from felhom_agent.proxmox.errors import (
    ParameterError,
    PveError,
    ServerError,
    TaskError,
    TaskTimeout,
    TransportError,
)
from felhom_agent.proxmox.models import TaskList, TaskStatus
from felhom_agent.proxmox.tasks import TaskResult, result_from_exitstatus
from felhom_agent.proxmox.upid import Upid, parse_upid

__all__ = ["DurationMemory", "TaskWatcher", "WatchPolicy", "WatchSource", "WatchStats"]

_log = logging.getLogger(__name__)
_IDLE_WAIT_S = 3600.0  # nothing watched: sleep until notified (bounded only for hygiene)
_PAGE = 500


class WatchSource(Protocol):
    """The two reads the watcher uses (the :class:`~felhom_agent.proxmox.ProxmoxClient`)."""

    def tasks(self, *, source: str = "archive", start: int = 0, limit: int = 50) -> TaskList:
        """A page of the node's task list."""
        ...

    def task_status(self, upid: Upid | str) -> TaskStatus:
        """One task's status."""
        ...


@attrs.frozen
class WatchPolicy:
    """Delay before the next tick, from the age of the youngest watched task (pure).

    ``first_s`` after a new watch arrives; then ``base_s + growth * youngest_age`` capped at
    ``cap_s`` (:class:`felhom_agent.backoff.Proportional`): the detection lag stays a small
    fraction of a task's age. ``expect_margin_s`` is added to a task's expected duration (see
    :class:`DurationMemory`) for the one extra tick timed to its expected end.
    """

    first_s: float = 0.02
    base_s: float = 0.02
    growth: float = 0.03
    cap_s: float = 5.0
    expect_margin_s: float = 0.005

    def __call__(self, youngest_age_s: float) -> float:
        """Seconds until the next tick."""
        return Proportional(self.base_s, self.growth, self.cap_s)(Attempt(0, youngest_age_s))


@attrs.define
class DurationMemory:
    """How long recent tasks of each type took, as the watcher saw them (pure; the caller
    locks).

    A sample is the age of a watch (from the start of its wait) when the list read that no
    longer showed the task returned -- an upper bound of how long the task ran from there.
    :meth:`expected` is the smallest of the last ``keep`` samples of that type: the earliest
    point at which a task of the type was seen finished. Tasks of one type often take about
    as long as each other (a round of starts of similar guests); a tick timed to that point
    finds them gone at once instead of up to a whole tick interval later.
    """

    keep: int = 8
    _seen: dict[str, deque[float]] = attrs.field(factory=dict)

    def note(self, task_type: str, seconds: float) -> None:
        """Record one observed duration of ``task_type``."""
        if seconds >= 0:
            self._seen.setdefault(task_type, deque(maxlen=self.keep)).append(seconds)

    def expected(self, task_type: str) -> float | None:
        """The expected duration of ``task_type``, or None before the first sample."""
        seen = self._seen.get(task_type)
        return min(seen) if seen else None


@attrs.frozen
class WatchStats:
    """Counters since start: ticks, active-list reads, status reads, failed reads."""

    ticks: int
    list_reads: int
    status_reads: int
    errors: int
    watched: int


@attrs.define
class _Watch:
    upid: Upid
    since: float
    refs: int = 0
    polls: int = 0
    done: bool = False
    result: TaskResult | None = None
    error: PveError | None = None
    last_status: str | None = None
    #: left the active list: a waiter is to read its status (the poller never does).
    exited: bool = False
    #: a waiter is reading its status right now (the others keep waiting).
    reading: bool = False
    #: when the tick timed to this task's expected end is due (None: none, or done).
    expect_at: float | None = None
    #: when the list read that no longer showed the task returned.
    gone_at: float | None = None


class TaskWatcher:
    """Polls all watched tasks of one node with one active-list read per tick.

    Args:
        source: the client.
        policy: tick delays.
        clock: monotonic seconds.
        logger: poll failures are logged here at WARNING.
        no_such_task_grace_s: how long a status read may answer ``no such task`` (the task's
            log file is not there yet) before it counts as an error.
        name: the poller thread's name.
        memory: recent task durations by type (a fresh one by default; tests seed it).
    """

    def __init__(
        self,
        source: WatchSource,
        *,
        policy: WatchPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
        logger: logging.Logger | None = None,
        no_such_task_grace_s: float = 5.0,
        name: str = "felhom-taskwatch",
        memory: DurationMemory | None = None,
    ) -> None:
        self._source = source
        self._policy = policy or WatchPolicy()
        self._clock = clock
        self._log = logger or _log
        self._grace = no_such_task_grace_s
        self._name = name
        self._cond = threading.Condition()
        self._watches: dict[str, _Watch] = {}
        self._next_tick: float | None = None
        self._memory = memory if memory is not None else DurationMemory()
        self._list_s = 0.0  # how long the last active-list read took
        self._stopped = False
        self._thread: threading.Thread | None = None
        self._ticks = self._list_reads = self._status_reads = self._errors = 0

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start the poller thread (idempotent)."""
        with self._cond:
            if self._thread is not None or self._stopped:
                return
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop polling; every waiter gets :class:`TaskTimeout` (the tasks run on). True if
        the poller thread ended within ``timeout``."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
            thread = self._thread
        if thread is None:
            return True
        thread.join(timeout)
        return not thread.is_alive()

    def stats(self) -> WatchStats:
        """Counters since start."""
        with self._cond:
            return WatchStats(self._ticks, self._list_reads, self._status_reads, self._errors,
                              sum(1 for w in self._watches.values() if not w.done))

    # ------------------------------------------------------------------ waiting

    def wait(self, upid: Upid | str, *, timeout_s: float,
             on_exit: Callable[[], object] | None = None) -> TaskResult:
        """Block until the task stops (or ``timeout_s`` passes); never re-dispatches.

        Several callers may wait on one UPID; each gets the same result. ``on_exit`` runs
        concurrently with each status read this caller makes of the task after it left the
        active list; the result's ``exit_probe`` is what it returned during the read that
        found the task stopped (None otherwise: not run, raised, or another waiter read it).

        Raises:
            UpidError: ``upid`` is malformed.
            TaskFailed, TaskUnknown: the task stopped without success.
            TaskTimeout: the deadline passed or the watcher stopped: *still running*.
            PveError: a non-transient error reading the task (permission, no such task).
        """
        parsed = upid if isinstance(upid, Upid) else parse_upid(upid)
        self.start()
        with self._cond:
            now = self._clock()
            watch = self._watches.get(parsed.raw)
            if watch is None:
                watch = self._watches[parsed.raw] = _Watch(parsed, now)
                expected = self._memory.expected(parsed.type)
                if expected is not None:
                    # Start that read so that it answers when the task is expected to end.
                    watch.expect_at = (now + expected + self._policy.expect_margin_s
                                       - self._list_s)
                due = now + self._policy.first_s
                if self._next_tick is None or due < self._next_tick:
                    self._next_tick = due
                self._cond.notify_all()
            watch.refs += 1
            deadline = now + timeout_s
            probed: object = None
            try:
                while not watch.done and not self._stopped:
                    if watch.exited and not watch.reading:
                        probed = self._read_exited(watch, on_exit)
                        continue
                    remaining = deadline - self._clock()
                    if remaining <= 0:
                        break
                    self._cond.wait(min(remaining, threading.TIMEOUT_MAX))
                if watch.done:
                    if watch.error is not None:
                        raise watch.error
                    assert watch.result is not None  # noqa: S101 - set with done
                    return attrs.evolve(watch.result, waited_s=self._clock() - now,
                                        exit_probe=probed)
                why = "watcher stopped" if self._stopped else f"still running after {timeout_s:g} s"
                raise TaskTimeout(
                    f"task {parsed.raw} {why} (last status: {watch.last_status})",
                    upid=parsed.raw, last_status=watch.last_status,
                )
            finally:
                watch.refs -= 1
                if watch.refs <= 0:
                    del self._watches[parsed.raw]

    def _read_exited(self, watch: _Watch, on_exit: Callable[[], object] | None) -> object:
        """Read the status of ``watch`` (it left the active list) on the calling waiter's
        thread, with ``on_exit`` running alongside on a helper thread; the caller holds the
        condition, which is released meanwhile. Returns the probe's value if this read found
        the task stopped, else None."""
        watch.reading = True
        watch.exited = False
        self._cond.release()
        box: list[object] = []
        helper = None
        try:
            if on_exit is not None:
                helper = threading.Thread(target=self._probe, args=(on_exit, box),
                                          name=f"{self._name}-probe", daemon=True)
                helper.start()
            self._check(watch)
        finally:
            if helper is not None:
                helper.join()
            self._cond.acquire()
            watch.reading = False
            self._cond.notify_all()
        return box[0] if box and watch.done else None

    def _probe(self, on_exit: Callable[[], object], box: list[object]) -> None:
        try:
            box.append(on_exit())
        except Exception:  # the caller re-reads without it; never lose the status read
            self._log.exception("task exit probe failed")

    # ------------------------------------------------------------------ polling

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._stopped:
                        return
                    pending = self._polled()
                    if not pending:
                        self._next_tick = None
                        self._cond.wait(_IDLE_WAIT_S)
                        continue
                    now = self._clock()
                    if self._next_tick is None:
                        self._next_tick = now + self._policy.first_s
                    if now >= self._next_tick:
                        break
                    self._cond.wait(self._next_tick - now)
                started = now
                for w in pending:
                    if w.expect_at is not None and w.expect_at <= started:
                        w.expect_at = None  # this tick is the one timed to its end
            pages = [0]
            try:
                self._tick(pending, pages)
            except Exception:  # a bug in one tick must not end polling for every waiter
                self._log.exception("task watcher tick failed")
            with self._cond:
                # Counted together once the tick is over, so stats() never sees half a tick.
                self._ticks += 1
                self._list_reads += pages[0]
                now = self._clock()
                alive = self._polled()
                youngest = min((now - w.since for w in alive), default=0.0)
                self._next_tick = now + self._policy(youngest)
                timed = [w.expect_at for w in alive if w.expect_at is not None]
                if timed:
                    self._next_tick = min(self._next_tick, max(now, min(timed)))
                self._cond.notify_all()

    def _polled(self) -> list[_Watch]:
        """Watches the next tick must look for (caller holds the condition): not resolved,
        and not left to a waiter's status read -- a read that finds the task still running
        hands it back (``exited`` cleared, poller notified)."""
        return [w for w in self._watches.values()
                if not (w.done or w.exited or w.reading)]

    def _active(self, pages: list[int]) -> set[str]:
        """UPIDs in the node's active task list (all pages; ``pages[0]`` counts the reads)."""
        upids: set[str] = set()
        start = 0
        while True:
            page = self._source.tasks(source="active", start=start, limit=_PAGE)
            pages[0] += 1
            upids.update(e.upid for e in page.entries)
            start += len(page.entries)
            if not page.entries or start >= page.total:
                return upids

    def _tick(self, pending: list[_Watch], pages: list[int]) -> None:
        started = self._clock()
        try:
            active = self._active(pages)
        except (TransportError, ServerError) as err:
            with self._cond:
                self._errors += 1
            self._log.warning("reading the active task list failed (will retry): %s", err)
            return
        with self._cond:
            now = self._clock()
            self._list_s = now - started
            for watch in pending:
                if watch.upid.raw in active:
                    watch.last_status = "running"
                elif not watch.reading:
                    watch.exited = True  # a waiter reads its status (see _read_exited)
                    watch.gone_at = now

    def _check(self, watch: _Watch) -> None:
        """Read the status of a task that left the active list and resolve it if stopped;
        otherwise (still running, not started yet, a transient error) the next tick that
        misses it in the active list marks it again. Called without the condition held."""
        result: TaskResult | None = None
        error: PveError | None = None
        try:
            status = self._source.task_status(watch.upid)
        except ParameterError as err:
            if err.no_such_task and self._clock() - watch.since < self._grace:
                self._note(watch, "no such task (not started yet)", status_read=True)
                return
            error = err
        except (TransportError, ServerError) as err:
            self._note(watch, f"poll failed: {err}", status_read=True, failed=True)
            self._log.warning("polling task %s failed (will retry): %s", watch.upid.raw, err)
            return
        except PveError as err:
            error = err
        else:
            if status.running:
                self._note(watch, status.status, status_read=True)
                return
            try:
                result = result_from_exitstatus(watch.upid, status.exitstatus,
                                                polls=watch.polls + 1)
            except TaskError as err:
                error = err
        with self._cond:
            if watch.gone_at is not None and result is not None:
                # A success is how long the type takes; a failure may end early.
                self._memory.note(watch.upid.type, watch.gone_at - watch.since)
            self._status_reads += 1
            watch.polls += 1
            watch.done = True
            watch.result, watch.error = result, error
            self._cond.notify_all()

    def _note(self, watch: _Watch, status: str, *, status_read: bool, failed: bool = False
              ) -> None:
        with self._cond:
            watch.last_status = status
            watch.polls += 1
            if status_read:
                self._status_reads += 1
            if failed:
                self._errors += 1
