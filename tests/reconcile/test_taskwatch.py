"""The task watcher: one active-list read per tick for all tasks, status reads only on exit."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import pytest

from felhom_agent.proxmox.client import ProxmoxClient
from felhom_agent.proxmox.errors import TaskFailed, TaskTimeout
from felhom_agent.proxmox.models import GuestType
from felhom_agent.proxmox.tasks import TaskOutcome, TaskResult
from felhom_agent.proxmox.taskwatch import DurationMemory, TaskWatcher, WatchPolicy
from felhom_agent.sim.pve import Fault, PveSimulator
from tests.reconcile.crash_child import scenario

LOG = logging.getLogger("test.taskwatch")
#: Regular ticks only every 60 s after the first: any other tick is one timed to an end.
SLOW = WatchPolicy(first_s=0.02, base_s=60.0, growth=0.0, cap_s=60.0)


@pytest.fixture
def sim() -> Iterator[PveSimulator]:
    with PveSimulator(scenario(qemu=8, task_s=0.3)) as s:
        yield s


def _starts(client: ProxmoxClient, vmids: range) -> list[str]:
    upids = []
    for vmid in vmids:
        upid = client.start(vmid, GuestType.QEMU).upid
        assert upid is not None
        upids.append(upid.raw)
    return upids


def _wait_all(w: TaskWatcher, upids: list[str]) -> list[TaskResult | BaseException]:
    out: list[TaskResult | BaseException] = []
    lock = threading.Lock()

    def one(upid: str) -> None:
        try:
            r: TaskResult | BaseException = w.wait(upid, timeout_s=10)
        except Exception as err:
            r = err
        with lock:
            out.append(r)

    threads = [threading.Thread(target=one, args=(u,)) for u in upids]
    for t in threads:
        t.start()
    for t in threads:
        t.join(15)
    return out


def test_many_tasks_cost_one_list_read_per_tick_and_one_status_read_each(
    client: ProxmoxClient,
) -> None:
    """Status GETs scale with finished tasks, not with in-flight tasks x ticks (T9)."""
    w = TaskWatcher(client, logger=LOG)
    try:
        upids = _starts(client, range(200, 208))
        results = _wait_all(w, upids)
        stats = w.stats()
    finally:
        w.stop()
    assert all(isinstance(r, TaskResult) and r.outcome is TaskOutcome.OK for r in results)
    assert stats.status_reads == len(upids)
    assert stats.list_reads == stats.ticks
    # T9: all GETs = one list read per tick (one node) + one status read per finished task.
    assert stats.list_reads + stats.status_reads == stats.ticks + len(upids)


def test_failed_task_raises_for_its_waiter(sim: PveSimulator, client: ProxmoxClient) -> None:
    """A task ending with an error text raises TaskFailed carrying that text."""
    sim.inject(Fault("task_fail", task_type="qmstart", vmid=200, message="boom", count=1))
    w = TaskWatcher(client, logger=LOG)
    try:
        [upid] = _starts(client, range(200, 201))
        with pytest.raises(TaskFailed, match="boom"):
            w.wait(upid, timeout_s=10)
    finally:
        w.stop()


def test_deadline_and_stop_mean_still_running(sim: PveSimulator, client: ProxmoxClient) -> None:
    """A waiter past its deadline, or woken by stop(), gets TaskTimeout (still running)."""
    sim.set_task_duration("qmstart", 30)
    w = TaskWatcher(client, logger=LOG)
    [upid] = _starts(client, range(200, 201))
    with pytest.raises(TaskTimeout):
        w.wait(upid, timeout_s=0.2)
    got: list[BaseException] = []
    waiting = threading.Thread(target=lambda: _catch(w, upid, got))
    waiting.start()
    assert sim.wait_requests(seen=sim.requests_seen + 1, timeout=5)
    assert w.stop(5)
    waiting.join(5)
    assert got and isinstance(got[0], TaskTimeout)
    sim.release_tasks()


def _catch(w: TaskWatcher, upid: str, got: list[BaseException]) -> None:
    try:
        w.wait(upid, timeout_s=30)
    except TaskTimeout as err:
        got.append(err)


def test_idle_watcher_makes_no_requests(sim: PveSimulator, client: ProxmoxClient) -> None:
    """With nothing watched the poller sleeps: no ticks, no API reads (T6)."""
    w = TaskWatcher(client, logger=LOG)
    try:
        [upid] = _starts(client, range(200, 201))
        w.wait(upid, timeout_s=10)
        seen, ticks = sim.requests_seen, w.stats().ticks
        # Nothing watched: any tick would be a request within this window.
        assert not sim.wait_requests(seen=seen + 1, timeout=0.3)
        assert w.stats().ticks == ticks
    finally:
        w.stop()


def test_watch_policy_is_fast_for_young_tasks_and_capped() -> None:
    """The tick delay grows with the youngest task's age and never passes the cap."""
    p = WatchPolicy(first_s=0.05, base_s=0.05, growth=0.1, cap_s=5.0)
    assert p(0.0) == pytest.approx(0.05)
    assert p(1.0) == pytest.approx(0.15)
    assert p(10_000.0) == 5.0


def test_tasks_ending_together_are_confirmed_in_parallel_by_their_waiters(
    sim: PveSimulator, client: ProxmoxClient,
) -> None:
    """The poller only reads the active list; the status reads of tasks that left it run on
    their waiters' threads at the same time (not one after another on the poller), and each
    task still costs exactly one status read."""
    sim.inject(Fault("latency", path="/nodes/*/tasks/*/status", delay_s=60))
    w = TaskWatcher(client, logger=LOG)
    try:
        upids = _starts(client, range(200, 204))
        results: list[TaskResult | BaseException] = []
        waiting = threading.Thread(target=lambda: results.extend(_wait_all(w, upids)))
        waiting.start()
        # Four held status reads at once: only possible when each waiter reads its own.
        assert sim.wait_requests(in_flight=4, timeout=10)
        sim.clear_faults()
        waiting.join(15)
        stats = w.stats()
    finally:
        sim.clear_faults()
        w.stop()
    assert len(results) == 4
    assert all(isinstance(r, TaskResult) and r.outcome is TaskOutcome.OK for r in results)
    assert stats.status_reads == 4


def test_a_shared_task_is_read_once_for_all_its_waiters(client: ProxmoxClient) -> None:
    """Several waiters on one UPID: one of them reads the status, all get the result."""
    w = TaskWatcher(client, logger=LOG)
    try:
        [upid] = _starts(client, range(200, 201))
        results = _wait_all(w, [upid] * 3)
        stats = w.stats()
    finally:
        w.stop()
    assert len(results) == 3 and all(isinstance(r, TaskResult) for r in results)
    assert stats.status_reads == 1


def test_duration_memory_expects_the_shortest_recent_duration_per_type() -> None:
    """Nothing expected before a sample; then the smallest of the last ``keep`` samples of
    that type (older ones fall out); negative samples are ignored."""
    m = DurationMemory(keep=3)
    assert m.expected("qmstart") is None
    for seconds in (1.2, 0.9, 1.1):
        m.note("qmstart", seconds)
    m.note("vzdump", 30.0)
    m.note("qmstart", -1.0)
    assert m.expected("qmstart") == pytest.approx(0.9)
    assert m.expected("vzdump") == pytest.approx(30.0)
    m.note("qmstart", 1.3)  # 1.2 falls out
    m.note("qmstart", 1.4)  # 0.9 falls out
    assert m.expected("qmstart") == pytest.approx(1.1)


def test_a_task_of_a_known_type_gets_a_tick_at_its_expected_end(
    sim: PveSimulator, client: ProxmoxClient,
) -> None:
    """Regular ticks here come every 60 s after the first; the task (1.5 s) is still found
    finished within the 10 s wait, by the one tick timed to its type's expected duration."""
    sim.set_task_duration("qmstart", 1.5)
    memory = DurationMemory()
    memory.note("qmstart", 2.0)
    w = TaskWatcher(client, policy=SLOW, logger=LOG, memory=memory)
    try:
        [upid] = _starts(client, range(200, 201))
        result = w.wait(upid, timeout_s=10)
    finally:
        w.stop()
    stats = w.stats()
    assert result.outcome is TaskOutcome.OK
    assert stats.ticks == 2 and stats.status_reads == 1  # the first tick and the timed one


@pytest.mark.parametrize(("seeded", "ticks"), [("qmstart", 2), ("vzdump", 1)])
def test_only_a_type_seen_before_gets_a_timed_tick(
    sim: PveSimulator, client: ProxmoxClient, seeded: str, ticks: int,
) -> None:
    """A task still running at its expected end costs one extra list read (then the regular
    ticks go on); a task of a type not seen before gets none."""
    sim.set_task_duration("qmstart", 30)
    memory = DurationMemory()
    memory.note(seeded, 0.3)
    w = TaskWatcher(client, policy=SLOW, logger=LOG, memory=memory)
    try:
        [upid] = _starts(client, range(200, 201))
        with pytest.raises(TaskTimeout):
            w.wait(upid, timeout_s=1.5)
    finally:
        w.stop()
        sim.release_tasks()
    stats = w.stats()
    assert stats.ticks == ticks and stats.status_reads == 0


def test_the_watcher_learns_durations_from_the_tasks_it_sees_end(
    client: ProxmoxClient,
) -> None:
    """A task seen finished leaves a sample for its type."""
    memory = DurationMemory()
    w = TaskWatcher(client, logger=LOG, memory=memory)
    try:
        [upid] = _starts(client, range(200, 201))
        w.wait(upid, timeout_s=10)
    finally:
        w.stop()
    expected = memory.expected("qmstart")
    assert expected is not None and expected > 0
    assert memory.expected("vzdump") is None


def test_a_failed_task_leaves_no_duration_sample(
    sim: PveSimulator, client: ProxmoxClient,
) -> None:
    """A task that failed may have ended early: it says nothing about how long its type takes."""
    sim.inject(Fault("task_fail", task_type="qmstart", vmid=200, message="boom", count=1))
    memory = DurationMemory()
    w = TaskWatcher(client, logger=LOG, memory=memory)
    try:
        [upid] = _starts(client, range(200, 201))
        with pytest.raises(TaskFailed):
            w.wait(upid, timeout_s=10)
    finally:
        w.stop()
    assert memory.expected("qmstart") is None
