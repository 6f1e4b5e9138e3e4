"""Behaviour of the per-guest serializer queue, one rule per test.

The rules are those of ``docs/architecture.md`` ("The queue").

Synchronisation is by Events, Barriers and a Condition-backed counter, never by sleeping.
"""

from __future__ import annotations

import logging
import pickle
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from felhom_agent.errors import AgentError
from felhom_agent.execution.queue import (
    InvalidJob,
    JobCancelled,
    JobFailed,
    JobInfo,
    JobState,
    JobWaitTimeout,
    LaneDepth,
    QueueClosed,
    QueueError,
    QueueStateError,
    SerializerQueue,
    ShutdownReport,
)

T_OUT = 10.0  # generous bound for any wait; tests never rely on it being reached


class Counter:
    """A thread-safe counter that can be awaited until it reaches a value."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.value = 0

    def incr(self) -> None:
        with self._cond:
            self.value += 1
            self._cond.notify_all()

    def wait_for(self, n: int, timeout: float = T_OUT) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self.value >= n, timeout)


class Recorder:
    """Records job starts in global order and the highest concurrency seen."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.starts: list[str] = []
        self.active = 0
        self.max_active = 0
        self.started = Counter()

    def job(self, name: str, gate: threading.Event | None = None) -> Callable[[], str]:
        def run() -> str:
            with self._lock:
                self.starts.append(name)
                self.active += 1
                self.max_active = max(self.max_active, self.active)
            self.started.incr()
            try:
                if gate is not None:
                    assert gate.wait(T_OUT), "gate never opened"
                return name
            finally:
                with self._lock:
                    self.active -= 1

        return run


@pytest.fixture
def make_queue() -> Iterator[Callable[..., SerializerQueue]]:
    """Build queues and shut each one down at the end of the test."""
    made: list[SerializerQueue] = []

    def make(workers: int = 4, start: bool = True, **kw: object) -> SerializerQueue:
        q = SerializerQueue(workers=workers, **kw)  # type: ignore[arg-type]
        if start:
            q.start()
        made.append(q)
        return q

    yield make
    for q in made:
        q.shutdown(grace_s=T_OUT)


def test_result_returns_the_jobs_value(make_queue: Callable[..., SerializerQueue]) -> None:
    """A handle's result is the value the job returned, and the handle ends SUCCEEDED."""
    q = make_queue()
    h = q.submit(101, lambda: {"upid": "UPID:x"}, label="start 101", source="plan:7")
    assert h.result(timeout=T_OUT) == {"upid": "UPID:x"}
    assert h.done() and h.state is JobState.SUCCEEDED and h.error is None
    assert h.info == JobInfo(seq=0, vmid=101, label="start 101", source="plan:7")
    assert "start 101" in repr(h) and "succeeded" in repr(h)


def test_same_vmid_jobs_run_in_submit_order_one_at_a_time(
    make_queue: Callable[..., SerializerQueue],
) -> None:
    """Jobs of one vmid run one at a time, in submit order, even with many free workers."""
    q = make_queue(workers=8)
    rec = Recorder()
    gate = threading.Event()
    handles = [q.submit(7, rec.job(f"j{i}", gate if i == 0 else None), label=f"j{i}")
               for i in range(20)]
    assert rec.started.wait_for(1)
    assert q.depths() == {7: 20}  # the first is held by the gate, nothing else may start
    gate.set()
    assert [h.result(timeout=T_OUT) for h in handles] == [f"j{i}" for i in range(20)]
    assert rec.starts == [f"j{i}" for i in range(20)]
    assert rec.max_active == 1
    finished = [h.finished_at for h in handles]
    assert all(f is not None for f in finished)


def test_different_vmids_run_in_parallel(make_queue: Callable[..., SerializerQueue]) -> None:
    """Jobs of W different vmids run at the same time (they meet at a barrier of W)."""
    w = 4
    q = make_queue(workers=w)
    barrier = threading.Barrier(w, timeout=T_OUT)
    handles = [q.submit(100 + i, barrier.wait, label=f"b{i}") for i in range(w)]
    assert sorted(h.result(timeout=T_OUT) for h in handles) == list(range(w))


def test_in_flight_never_exceeds_w(make_queue: Callable[..., SerializerQueue]) -> None:
    """At most W jobs run at once; the rest of the ready lanes stay queued until a worker frees."""
    w = 3
    q = make_queue(workers=w)
    rec = Recorder()
    gate = threading.Event()
    handles = [q.submit(200 + i, rec.job(f"v{i}", gate), label=f"v{i}") for i in range(w + 4)]
    assert rec.started.wait_for(w)
    snap = q.snapshot()
    assert snap.workers == w and snap.running == w and snap.queued == 4
    gate.set()
    for h in handles:
        h.result(timeout=T_OUT)
    assert rec.max_active == w


def test_no_coalescing(make_queue: Callable[..., SerializerQueue]) -> None:
    """Submitting the same callable five times for one vmid executes it five times."""
    q = make_queue()
    calls = Counter()

    def job() -> None:
        calls.incr()

    handles = [q.submit(5, job, label="same") for _ in range(5)]
    for h in handles:
        h.result(timeout=T_OUT)
    assert calls.value == 5
    assert len({h.info.seq for h in handles}) == 5


def test_raising_job_fails_its_handle_and_the_worker_survives(
    make_queue: Callable[..., SerializerQueue], caplog: pytest.LogCaptureFixture
) -> None:
    """A raising job resolves FAILED with JobFailed wrapping the exception; the worker lives on."""
    q = make_queue(workers=1)

    def boom() -> None:
        raise ValueError("boom")

    class Fatal(BaseException):
        pass

    def fatal() -> None:
        raise Fatal("not even an Exception")

    with caplog.at_level(logging.WARNING, logger="felhom_agent.execution.queue"):
        bad = q.submit(9, boom, label="bad job", source="op:1")
        worse = q.submit(9, fatal, label="worse job")
        good = q.submit(9, lambda: "still alive", label="good job")
        assert good.result(timeout=T_OUT) == "still alive"
    with pytest.raises(JobFailed) as info:
        bad.result(timeout=T_OUT)
    err = info.value
    assert isinstance(err, QueueError) and isinstance(err, AgentError)
    assert isinstance(err.__cause__, ValueError)
    assert err.reason == "ValueError: boom"
    assert err.vmid == 9 and err.label == "bad job"
    assert "bad job" in str(err) and "boom" in str(err)
    assert bad.state is JobState.FAILED and isinstance(bad.error, ValueError)
    with pytest.raises(JobFailed) as info2:
        worse.result(timeout=T_OUT)
    assert isinstance(info2.value.__cause__, Fatal)
    logged = caplog.text
    assert "bad job" in logged and "ValueError: boom" in logged and "op:1" in logged
    assert "worse job" in logged


def test_deep_lane_does_not_starve_single_job_lanes(
    make_queue: Callable[..., SerializerQueue],
) -> None:
    """With one worker, a lane of K jobs re-enters at the tail after each job (no starvation)."""
    q = make_queue(workers=1, start=False)
    rec = Recorder()
    deep = [q.submit(1, rec.job(f"a{i}"), label=f"a{i}") for i in range(4)]
    singles = [q.submit(10 + i, rec.job(f"b{i}"), label=f"b{i}") for i in range(3)]
    q.start()
    for h in deep + singles:
        h.result(timeout=T_OUT)
    assert rec.starts == ["a0", "b0", "b1", "b2", "a1", "a2", "a3"]


@pytest.mark.parametrize("workers", [1, 2, 4, 7])
def test_t5_single_job_lanes_start_within_the_fairness_bound(
    make_queue: Callable[..., SerializerQueue], workers: int
) -> None:
    """T5: with one lane of K jobs and M single-job lanes, each single lane starts in round
    ceil((M+1)/W) at the latest (start indices, independent of thread timing)."""
    k, m = 25, 12
    q = make_queue(workers=workers, start=False)
    deep = [q.submit(1, lambda: None, label=f"a{i}") for i in range(k)]
    singles = [q.submit(100 + i, lambda: None, label=f"b{i}") for i in range(m)]
    q.start()
    assert q.wait_idle(T_OUT)
    rounds = -(-(m + 1) // workers)
    for h in singles:
        assert h.start_index is not None
        assert h.start_index // workers < rounds
    assert sorted(h.start_index for h in deep + singles if h.start_index is not None) == list(
        range(k + m)
    )


def test_free_worker_serves_the_longest_waiting_lane_not_the_lowest_vmid(
    make_queue: Callable[..., SerializerQueue],
) -> None:
    """Lanes are served in the order their head job became runnable, not by vmid."""
    q = make_queue(workers=1)
    rec = Recorder()
    gate = threading.Event()
    blocker = q.submit(1, rec.job("blocker", gate), label="blocker")
    assert rec.started.wait_for(1)
    later = [q.submit(v, rec.job(f"v{v}"), label=f"v{v}") for v in (50, 30, 40, 20)]
    gate.set()
    for h in [blocker, *later]:
        h.result(timeout=T_OUT)
    assert rec.starts == ["blocker", "v50", "v30", "v40", "v20"]


def test_busy_depths_and_snapshot(make_queue: Callable[..., SerializerQueue]) -> None:
    """busy() is true while a lane holds a queued or running job; depths counts both."""
    q = make_queue(workers=1)
    rec = Recorder()
    gate = threading.Event()
    hs = [q.submit(101, rec.job("r", gate), label="run 101")]
    assert rec.started.wait_for(1)
    hs += [q.submit(101, rec.job("q1"), label="q1"), q.submit(101, rec.job("q2"), label="q2")]
    hs.append(q.submit(102, rec.job("q3"), label="q3"))
    assert q.busy(101) and q.busy(102) and not q.busy(103)
    assert q.depths() == {101: 3, 102: 1}
    snap = q.snapshot()
    assert snap.running == 1 and snap.queued == 3
    assert snap.lanes == (
        LaneDepth(vmid=101, queued=2, running=hs[0].info),
        LaneDepth(vmid=102, queued=1, running=None),
    )
    gate.set()
    for h in hs:
        h.result(timeout=T_OUT)
    assert q.depths() == {} and not q.busy(101)


def test_done_handle_means_lane_released(make_queue: Callable[..., SerializerQueue]) -> None:
    """Once a handle is done its lane no longer counts it: the planner sees no stale busy lane."""
    q = make_queue(workers=2)
    for i in range(50):
        h = q.submit(300, lambda: None, label=f"x{i}")
        assert h.wait(T_OUT)
        assert not q.busy(300)


def test_jobs_submitted_before_start_wait_for_start(
    make_queue: Callable[..., SerializerQueue],
) -> None:
    """A queue that is not started holds jobs queued; start() runs them."""
    q = make_queue(start=False)
    h = q.submit(1, lambda: 42, label="early")
    assert not h.wait(0) and h.state is JobState.QUEUED and q.busy(1)
    q.start()
    assert h.result(timeout=T_OUT) == 42


def test_result_wait_timeout_is_a_timeout_error(make_queue: Callable[..., SerializerQueue]) -> None:
    """Waiting on an unfinished job times out with JobWaitTimeout (a TimeoutError), job unharmed."""
    q = make_queue(workers=1)
    gate = threading.Event()
    h = q.submit(1, gate.wait, label="slow")
    assert not h.wait(0)
    with pytest.raises(TimeoutError) as info:
        h.result(timeout=0)
    assert isinstance(info.value, JobWaitTimeout) and isinstance(info.value, AgentError)
    assert info.value.label == "slow"
    gate.set()
    assert h.result(timeout=T_OUT) is True


def test_submit_after_shutdown_is_refused_clearly(
    make_queue: Callable[..., SerializerQueue],
) -> None:
    """submit() after shutdown raises QueueClosed naming the job; start() after it too."""
    q = make_queue()
    q.shutdown(grace_s=T_OUT)
    with pytest.raises(QueueClosed, match=r"shut down.*'stop 104'.*vmid 104") as info:
        q.submit(104, lambda: None, label="stop 104")
    assert isinstance(info.value, RuntimeError) and isinstance(info.value, AgentError)
    with pytest.raises(QueueClosed):
        q.start()


def test_start_twice_is_refused(make_queue: Callable[..., SerializerQueue]) -> None:
    """A started queue cannot be started again (that would double the worker pool)."""
    q = make_queue(workers=2)
    with pytest.raises(QueueStateError, match="already started"):
        q.start()
    assert sum(t.name.startswith("felhom-queue-") for t in threading.enumerate()) >= 2


def test_shutdown_lets_running_jobs_finish_and_leaves_queued_unstarted(
    make_queue: Callable[..., SerializerQueue], caplog: pytest.LogCaptureFixture
) -> None:
    """shutdown(grace): running jobs finish within grace, queued jobs are cancelled and logged."""
    q = make_queue(workers=2)
    rec = Recorder()
    gate = threading.Event()
    running = [q.submit(v, rec.job(f"r{v}", gate), label=f"run {v}", source="plan:1")
               for v in (1, 2)]
    assert rec.started.wait_for(2)
    queued = [q.submit(v, rec.job(f"q{v}"), label=f"queued {v}", source="op:x")
              for v in (1, 2, 3)]
    box: list[ShutdownReport] = []
    with caplog.at_level(logging.INFO, logger="felhom_agent.execution.queue"):
        t = threading.Thread(target=lambda: box.append(q.shutdown(grace_s=T_OUT)))
        t.start()
        # Queued jobs are cancelled at the start of shutdown: that is our sign it has begun.
        assert queued[-1].wait(T_OUT)
        with pytest.raises(QueueClosed):
            q.submit(4, lambda: None, label="too late")
        gate.set()
        t.join(T_OUT)
    assert not t.is_alive()
    (report,) = box
    assert report == q.shutdown(grace_s=0)  # idempotent
    assert [i.label for i in report.finished] == ["run 1", "run 2"]
    assert report.abandoned_running == ()
    assert [i.label for i in report.unstarted] == [
        "queued 1", "queued 2", "queued 3"]
    assert not report.clean
    assert [h.result(timeout=0) for h in running] == ["r1", "r2"]
    for h in queued:
        assert h.state is JobState.CANCELLED
        with pytest.raises(JobCancelled, match="not started"):
            h.result(timeout=0)
    assert sorted(rec.starts) == ["r1", "r2"]  # nothing queued ever ran
    assert "left unstarted" in caplog.text and "'queued 3' (vmid 3, op:x)" in caplog.text
    assert q.depths() == {}


def test_shutdown_reports_jobs_still_running_after_grace(
    make_queue: Callable[..., SerializerQueue], caplog: pytest.LogCaptureFixture
) -> None:
    """A job still running when the grace ends is reported abandoned, and resolves later."""
    q = make_queue(workers=1)
    rec = Recorder()
    gate = threading.Event()
    h = q.submit(11, rec.job("long", gate), label="long task", source="op:7")
    assert rec.started.wait_for(1)
    with caplog.at_level(logging.WARNING, logger="felhom_agent.execution.queue"):
        report = q.shutdown(grace_s=0)
    assert [i.label for i in report.abandoned_running] == ["long task"]
    assert report.finished == () and report.unstarted == ()
    assert "still running after the 0.0 s grace" in caplog.text
    assert h.state is JobState.RUNNING
    gate.set()
    assert h.result(timeout=T_OUT) == "long"


def test_shutdown_grace_ends_even_if_the_injected_clock_stands_still(
    make_queue: Callable[..., SerializerQueue],
) -> None:
    """The grace period is bounded by a timed wait, so a frozen fake clock cannot hang shutdown."""
    q = make_queue(workers=1, clock=lambda: 1000.0)
    gate = threading.Event()
    started = threading.Event()

    def job() -> None:
        started.set()
        gate.wait(T_OUT)

    h = q.submit(1, job, label="held")
    assert started.wait(T_OUT)
    report = q.shutdown(grace_s=0.05)
    assert [i.label for i in report.abandoned_running] == ["held"]
    gate.set()
    assert h.wait(T_OUT)


def test_shutdown_of_a_never_started_queue_cancels_everything(
    make_queue: Callable[..., SerializerQueue],
) -> None:
    """Shutting down a queue that never started reports all its jobs unstarted."""
    q = make_queue(start=False)
    hs = [q.submit(v, lambda: None, label=f"j{v}") for v in (3, 1, 2)]
    report = q.shutdown(grace_s=0)
    assert [i.label for i in report.unstarted] == ["j3", "j1", "j2"]
    assert all(h.state is JobState.CANCELLED for h in hs)


def test_workers_exit_after_shutdown(make_queue: Callable[..., SerializerQueue]) -> None:
    """After a clean shutdown every worker thread ends (no leaked threads)."""
    q = make_queue(workers=3, name="leakcheck")
    q.submit(1, lambda: None, label="one").result(timeout=T_OUT)
    workers = [t for t in threading.enumerate() if t.name.startswith("leakcheck-")]
    assert len(workers) == 3
    assert q.shutdown(grace_s=T_OUT).clean
    for t in workers:
        t.join(T_OUT)
        assert not t.is_alive()


def test_wait_idle(make_queue: Callable[..., SerializerQueue]) -> None:
    """wait_idle returns False while a job runs and True once every lane is empty."""
    q = make_queue(workers=2)
    gate = threading.Event()
    q.submit(1, gate.wait, label="held")
    assert not q.wait_idle(0)
    gate.set()
    assert q.wait_idle(T_OUT)
    assert q.depths() == {}


def test_timestamps_come_from_the_injected_clock(
    make_queue: Callable[..., SerializerQueue],
) -> None:
    """submitted_at/started_at/finished_at are readings of the injected clock, in order."""
    ticks = iter(range(1000))
    lock = threading.Lock()

    def clock() -> float:
        with lock:
            return float(next(ticks))

    q = make_queue(workers=1, clock=clock, start=False)
    h = q.submit(1, lambda: None, label="t")
    q.start()
    h.result(timeout=T_OUT)
    assert h.submitted_at == 0.0
    assert h.started_at is not None and h.finished_at is not None
    assert 0.0 < h.started_at < h.finished_at < 10.0


@pytest.mark.parametrize("vmid", [-1, True, "101", 1.5])
def test_invalid_vmid_is_refused(make_queue: Callable[..., SerializerQueue], vmid: object) -> None:
    """A vmid that is not a non-negative int is refused with InvalidJob (a ValueError)."""
    q = make_queue()
    with pytest.raises(InvalidJob, match="vmid") as info:
        q.submit(vmid, lambda: None, label="x")  # type: ignore[arg-type]
    assert isinstance(info.value, ValueError)


def test_invalid_arguments_are_refused(make_queue: Callable[..., SerializerQueue]) -> None:
    """Non-callable jobs, workers < 1 and a negative grace are refused with InvalidJob."""
    q = make_queue()
    with pytest.raises(InvalidJob, match="not callable"):
        q.submit(1, "start", label="x")  # type: ignore[arg-type]
    for bad in (0, -3, True):
        with pytest.raises(InvalidJob, match="workers"):
            SerializerQueue(workers=bad)
    with pytest.raises(InvalidJob, match="grace_s"):
        q.shutdown(grace_s=-1)


def test_queue_errors_survive_pickling() -> None:
    """Queue errors keep their message, type and context through pickle (urllib3 pattern)."""
    errors: list[QueueError] = [
        JobFailed("job 'x' failed: E: m", vmid=3, label="x", reason="E: m"),
        JobWaitTimeout("late", vmid=4, label="y"),
        QueueClosed("closed", vmid=5, label="z"),
        JobCancelled("cancelled", vmid=6, label="w"),
    ]
    for err in errors:
        back = pickle.loads(pickle.dumps(err))  # noqa: S301 - our own bytes
        assert type(back) is type(err) and str(back) == str(err)
        assert back.vmid == err.vmid and back.label == err.label
    back_failed = pickle.loads(pickle.dumps(errors[0]))  # noqa: S301
    assert back_failed.reason == "E: m"


def test_idle_workers_are_not_woken(make_queue: Callable[..., SerializerQueue]) -> None:
    """T6 structurally: idle workers block without a timeout, so they see zero context switches.

    Reads /proc (the agent targets Linux only).
    """
    q = make_queue(workers=4, name="idlecheck")
    q.submit(1, lambda: None, label="warm").result(timeout=T_OUT)
    assert q.wait_idle(T_OUT)
    workers = [t for t in threading.enumerate() if t.name.startswith("idlecheck-")]

    def switches() -> int:
        total = 0
        for t in workers:
            status = Path(f"/proc/self/task/{t.native_id}/status").read_text()
            for line in status.splitlines():
                if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                    total += int(line.split()[1])
        return total

    # Let every worker reach its wait first: a worker that just finished the warm-up job may
    # still be on its way back into Condition.wait().
    before = switches()
    for _ in range(100):
        threading.Event().wait(0.02)
        now = switches()
        if now == before:
            break
        before = now
    else:
        pytest.fail("idle workers kept switching context")
    # The measurement window (not synchronisation): a timed wait or a poll loop of any period
    # up to 0.3 s would show up here as at least one wake-up.
    threading.Event().wait(0.3)
    assert switches() == before


def test_many_waiters_on_one_handle_all_wake(make_queue: Callable[..., SerializerQueue]) -> None:
    """Every thread waiting on one handle wakes when the job finishes, and results repeat."""
    q = make_queue(workers=1)
    gate = threading.Event()
    h = q.submit(1, lambda: gate.wait(T_OUT) and "v", label="shared")
    n = 6
    waiting = threading.Barrier(n + 1, timeout=T_OUT)
    seen: list[bool] = []
    lock = threading.Lock()

    def waiter() -> None:
        waiting.wait()
        ok = h.wait(T_OUT)
        with lock:
            seen.append(ok)

    threads = [threading.Thread(target=waiter) for _ in range(n)]
    for t in threads:
        t.start()
    waiting.wait()
    assert not h.wait(0)
    gate.set()
    for t in threads:
        t.join(T_OUT)
    assert seen == [True] * n
    assert [h.result(timeout=0) for _ in range(3)] == ["v"] * 3
    assert h.wait(None) and h.wait(1e12)  # unbounded and huge timeouts are accepted
