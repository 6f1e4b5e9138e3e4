"""Property tests of the serializer queue over random submit sequences from several threads.

Hypothesis draws the worker count, the number of submitting threads and, per thread, a
sequence of (vmid, raises?) jobs. Submitters start together at a barrier so their submits
interleave for real. Each job records its start and end under a lock, so the properties are
checked on what actually ran, not on what the queue says about itself.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable

import attrs
from hypothesis import given, settings
from hypothesis import strategies as st

from felhom_agent.execution.queue import JobFailed, JobHandle, JobState, SerializerQueue
from tests.support.hypo import examples

T_OUT = 20.0

Script = list[list[tuple[int, bool]]]  # per submitting thread: [(vmid, raises), ...]

scripts = st.lists(
    st.lists(st.tuples(st.integers(min_value=0, max_value=5), st.booleans()), max_size=25),
    min_size=1,
    max_size=4,
)

SETTINGS = settings(max_examples=examples(200))


@attrs.frozen
class Tag:
    """Which submitter thread submitted a job, and at which position of its script."""

    thread: int
    pos: int
    vmid: int


class Ledger:
    """What really ran: start order per vmid, overlap per vmid, global concurrency."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.runs: dict[Tag, int] = defaultdict(int)
        self.order: dict[int, list[Tag]] = defaultdict(list)
        self.active_vmids: set[int] = set()
        self.overlaps = 0
        self.active = 0
        self.max_active = 0

    def job(self, tag: Tag, raises: bool, gate: threading.Event | None = None) -> Callable[[], Tag]:
        def run() -> Tag:
            with self._lock:
                self.runs[tag] += 1
                self.order[tag.vmid].append(tag)
                if tag.vmid in self.active_vmids:
                    self.overlaps += 1
                self.active_vmids.add(tag.vmid)
                self.active += 1
                self.max_active = max(self.max_active, self.active)
            try:
                if gate is not None:
                    assert gate.wait(T_OUT), "gate never opened"
                if raises:
                    raise RuntimeError(f"planned failure {tag}")
                return tag
            finally:
                with self._lock:
                    self.active_vmids.discard(tag.vmid)
                    self.active -= 1

        return run


def submit_concurrently(
    q: SerializerQueue, script: Script, make_job: Callable[[Tag, bool], Callable[[], Tag]]
) -> dict[Tag, JobHandle[Tag]]:
    """Run one submitter thread per script entry, all released together by a barrier."""
    handles: dict[Tag, JobHandle[Tag]] = {}
    lock = threading.Lock()
    barrier = threading.Barrier(len(script), timeout=T_OUT)

    def submitter(n: int) -> None:
        barrier.wait()
        for pos, (vmid, raises) in enumerate(script[n]):
            tag = Tag(n, pos, vmid)
            h = q.submit(vmid, make_job(tag, raises), label=f"t{n}.{pos}", source=f"thread:{n}")
            with lock:
                handles[tag] = h

    threads = [threading.Thread(target=submitter, args=(n,)) for n in range(len(script))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(T_OUT)
        assert not t.is_alive()
    return handles


@SETTINGS
@given(workers=st.integers(min_value=1, max_value=6), script=scripts)
def test_random_concurrent_submits_keep_the_lane_contract(workers: int, script: Script) -> None:
    """Per-vmid submit order is kept, one vmid never runs twice at once, every job runs exactly
    once, in-flight never exceeds W, and failures resolve their handle without losing workers."""
    ledger = Ledger()
    q = SerializerQueue(workers=workers)
    q.start()
    try:
        handles = submit_concurrently(q, script, ledger.job)
        assert q.wait_idle(T_OUT)
    finally:
        report = q.shutdown(grace_s=T_OUT)
    assert report.clean

    expected = {Tag(n, pos, vmid) for n, seq in enumerate(script) for pos, (vmid, _) in
                enumerate(seq)}
    assert set(handles) == expected
    assert dict(ledger.runs) == dict.fromkeys(expected, 1)  # exactly once, none lost
    assert ledger.overlaps == 0
    assert ledger.max_active <= workers

    for vmid, ran in ledger.order.items():
        # Execution order per vmid is the order submit() accepted the jobs in ...
        seqs = [handles[tag].info.seq for tag in ran]
        assert seqs == sorted(seqs), f"vmid {vmid} ran out of submit order"
        # ... which also keeps each submitting thread's own order.
        for n in range(len(script)):
            mine = [tag.pos for tag in ran if tag.thread == n]
            assert mine == sorted(mine)

    for tag, h in handles.items():
        assert h.done()
        raises = script[tag.thread][tag.pos][1]
        if raises:
            assert h.state is JobState.FAILED
            try:
                h.result(timeout=0)
            except JobFailed as err:
                assert err.vmid == tag.vmid and "planned failure" in err.reason
            else:
                raise AssertionError("a raising job reported success")
        else:
            assert h.result(timeout=0) == tag


@SETTINGS
@given(workers=st.integers(min_value=1, max_value=5), script=scripts)
def test_shutdown_with_running_and_queued_jobs(workers: int, script: Script) -> None:
    """At shutdown every job is exactly one of finished/abandoned/unstarted; unstarted jobs
    never run, running jobs are not interrupted and resolve when they return."""
    ledger = Ledger()
    gate = threading.Event()
    started = threading.Condition()
    count = [0]

    def make_job(tag: Tag, raises: bool) -> Callable[[], Tag]:
        inner = ledger.job(tag, raises, gate)

        def run() -> Tag:
            with started:
                count[0] += 1
                started.notify_all()
            return inner()

        return run

    q = SerializerQueue(workers=workers)
    q.start()
    handles = submit_concurrently(q, script, make_job)
    lanes = len({vmid for seq in script for vmid, _ in seq})
    expect_running = min(workers, lanes)
    with started:
        # Every job blocks on the gate, so exactly min(W, distinct vmids) can be running.
        assert started.wait_for(lambda: count[0] >= expect_running, T_OUT)
    report = q.shutdown(grace_s=0)
    gate.set()

    by_seq = {h.info.seq: tag for tag, h in handles.items()}
    abandoned = {by_seq[i.seq] for i in report.abandoned_running}
    unstarted = {by_seq[i.seq] for i in report.unstarted}
    assert report.finished == ()
    assert len(abandoned) == expect_running
    assert abandoned | unstarted == set(handles) and not abandoned & unstarted
    assert len({t.vmid for t in abandoned}) == len(abandoned)  # one running job per lane
    for tag in unstarted:
        assert handles[tag].state is JobState.CANCELLED
    for tag in abandoned:
        assert handles[tag].wait(T_OUT)
        raises = script[tag.thread][tag.pos][1]
        assert handles[tag].state is (JobState.FAILED if raises else JobState.SUCCEEDED)
    with started:
        assert count[0] == expect_running  # nothing queued started after shutdown
    assert set(ledger.runs) == abandoned
