"""The engine against the simulator: convergence (T7), no pile-up (T8), read budget, recovery."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from felhom_agent.compose.root import build_executor
from felhom_agent.core.desired import DesiredState, parse_desired
from felhom_agent.durable import DurabilityError
from felhom_agent.execution.engine import Engine
from felhom_agent.execution.executor import JobSpec
from felhom_agent.execution.queue import SerializerQueue
from felhom_agent.planning.providers import HubProvider
from felhom_agent.proxmox.client import ProxmoxClient
from felhom_agent.proxmox.models import GuestType
from felhom_agent.sim.pve import PveSimulator
from felhom_agent.state.journal import OpState
from tests.reconcile.crash_child import mutations, open_state, scenario
from tests.support.pve import sim_client

LOG = logging.getLogger("test.engine")


def desired(generation: int, guests: dict[str, Any]) -> DesiredState:
    return parse_desired({"generation": generation, "guests": guests})


class Rig:
    """A simulator, client, queue, journal, audit log, provider and engine, torn down after."""

    def __init__(self, sim: PveSimulator, state: Path, **engine_kw: Any) -> None:
        self.sim = sim
        self.state = state
        self.client: ProxmoxClient = sim_client(sim)
        self.provider = HubProvider(logger=LOG)
        self.stop = threading.Event()
        self.queue = SerializerQueue(workers=4, logger=LOG)
        self.queue.start()
        self.journal, self.audit = open_state(state, LOG)
        kw: dict[str, Any] = {"interval_s": 30.0, "task_timeout_s": 10.0,
                              "lookup_grace_s": 0.5}
        kw.update(engine_kw)
        watcher, executor = build_executor(
            client=self.client, journal=self.journal, audit=self.audit,
            task_timeout_s=kw.pop("task_timeout_s"), stop_event=self.stop, clock=time.time,
            logger=LOG, lookup_grace_s=kw["lookup_grace_s"])
        self.engine = Engine(client=self.client, node=sim.node, provider=self.provider,
                             queue=self.queue, journal=self.journal, audit=self.audit,
                             executor=executor, watcher=watcher, stop_event=self.stop,
                             logger=LOG, **kw)

    def settle(self) -> None:
        assert self.queue.wait_idle(15)

    def close(self) -> None:
        self.stop.set()
        self.engine.join(5)
        self.engine.watcher.stop()
        self.queue.shutdown(5)
        self.journal.close()
        self.audit.close()
        self.client.close()


@pytest.fixture
def sim() -> Iterator[PveSimulator]:
    with PveSimulator(scenario(qemu=6, lxc=2)) as s:
        yield s


@pytest.fixture
def rig(sim: PveSimulator, tmp_path: Path) -> Iterator[Rig]:
    r = Rig(sim, tmp_path / "state")
    yield r
    r.close()


def all_tasks(sim: PveSimulator) -> int:
    return len(sim.tasks())


def test_plan_applied_then_replanned_is_empty(rig: Rig) -> None:
    """T7: after one pass is applied, the next pass plans nothing and mutates nothing."""
    rig.provider.update(desired(4, {
        "200": {"type": "qemu", "state": "running"},
        "201": {"type": "qemu", "state": "running", "config": {"description": "db"}},
        "206": {"type": "lxc", "config": {"description": "cache", "onboot": 1}},
        "100": {"type": "lxc", "state": "running"},
    }))
    first = rig.engine.run_pass()
    assert first.plan is not None and len(first.plan.actions) == 4
    assert all(h.result(15).state == "applied" for h in first.submitted)
    rig.settle()
    tasks, digests = all_tasks(rig.sim), rig.sim.guest(206)["digest"]
    second = rig.engine.run_pass()
    assert second.plan is not None and second.plan.in_sync and not second.submitted
    assert all_tasks(rig.sim) == tasks and rig.sim.guest(206)["digest"] == digests
    assert second.reads <= 2 + 2  # listing + the two guests whose desired state names config
    status = rig.engine.status()
    assert status.generation == 4 and status.actions == 0 and status.errors == ()


def test_reads_per_pass_do_not_grow_with_state_only_guests(rig: Rig) -> None:
    """A state-only desired state costs one read per pass, whatever the number of guests."""
    rig.provider.update(desired(1, {str(v): {"type": "qemu", "state": "stopped"}
                                    for v in range(200, 206)}))
    seen = rig.sim.requests_seen
    result = rig.engine.run_pass()
    assert result.reads == 1 and rig.sim.requests_seen - seen == 1
    assert result.plan is not None and result.plan.in_sync


def test_busy_lane_gets_no_second_action(rig: Rig) -> None:
    """T8: a guest whose lane still works on an earlier action is blocked, not re-submitted."""
    rig.sim.set_task_duration("qmstart", 30)
    rig.provider.update(desired(2, {"200": {"type": "qemu", "state": "running"}}))
    first = rig.engine.run_pass()
    assert len(first.submitted) == 1
    assert rig.sim.wait_requests(seen=rig.sim.requests_seen + 3, timeout=5)
    second = rig.engine.run_pass()
    assert second.plan is not None and not second.submitted
    assert [b.reason for b in second.plan.blocked] == ["busy"]
    rig.sim.release_tasks()
    assert first.submitted[0].result(15).state == "applied"
    assert mutations(rig.sim, 200) == ["qmstart"]


def test_a_pass_with_pve_down_is_recorded_and_the_thread_survives(
    sim: PveSimulator, tmp_path: Path,
) -> None:
    """Errors in a pass go to status().errors; the reconciler thread keeps running."""
    r = Rig(sim, tmp_path / "state", interval_s=0.05)
    try:
        r.provider.update(desired(3, {"200": {"type": "qemu", "state": "running"}}))
        sim.stop()
        result = r.engine.run_pass()
        assert result.plan is None and result.error is not None
        assert r.engine.status().errors and "reading actual state" in r.engine.status().errors[0]
        r.engine.start()
        assert not r.engine.join(0.2)  # still alive after failing passes
    finally:
        r.close()
    assert r.engine.join(5)


def test_thread_wakes_on_new_desired_state_and_stops_on_the_event(rig: Rig) -> None:
    """wake() (the provider's change signal) runs a pass at once; stop_event ends the thread."""
    rig.engine.start()
    rig.provider.update(desired(5, {"201": {"type": "qemu", "state": "running"}}))
    deadline = time.monotonic() + 10
    while rig.sim.guest(201)["status"] != "running" and time.monotonic() < deadline:
        rig.queue.wait_idle(0.2)
    assert rig.sim.guest(201)["status"] == "running"
    rig.stop.set()
    assert rig.engine.join(5)


def test_recover_reattaches_adopts_replans_and_marks_unknown(
    sim: PveSimulator, tmp_path: Path,
) -> None:
    """Pending journal entries: UPID re-attached, found task adopted, others resolved."""
    state = tmp_path / "state"
    journal, audit = open_state(state, LOG)
    with sim_client(sim) as c:
        sim.set_task_duration("qmstart", 0.3)
        journal.begin("known", 200, "start", {"guest_type": "qemu"}, "alice@ops")
        upid = c.start(200, GuestType.QEMU).upid
        assert upid is not None
        journal.record_upid("known", upid.raw)
        journal.begin("lost", 201, "start", {"guest_type": "qemu"}, "plan:9")
        assert c.start(201, GuestType.QEMU).upid is not None
    old = time.time() - 3600
    journal._clock = lambda: old  # these two began long ago: no task, grace over
    journal.begin("stale-plan", 202, "start", {"guest_type": "qemu"}, "plan:9")
    journal.begin("stale-order", 203, "start", {"guest_type": "qemu"}, "alice@ops")
    journal.close()
    audit.close()
    r = Rig(sim, state)
    try:
        report = r.engine.recover()
        assert sorted(report.reattached) == ["known", "lost"] and report.adopted == ("lost",)
        assert report.replanned == ("stale-plan",) and report.marked_unknown == ("stale-order",)
        assert all(h.result(15).state == "applied" for h in report.handles)
        assert mutations(sim, 200) == ["qmstart"] and mutations(sim, 201) == ["qmstart"]
        outcome = r.journal.outcome("stale-order")
        assert outcome is not None and outcome.state is OpState.UNKNOWN
        ops = {o.op_id: o.state for o in r.engine.op_results()}
        assert ops == {"known": "applied", "stale-order": "unknown"}
    finally:
        r.close()


def test_submit_op_runs_through_the_queue_and_dedupes_by_op_id(rig: Rig) -> None:
    """The signed-op seam: an op runs once; the same op id again replays its outcome."""
    job = JobSpec("op-7", 202, "qemu", "guest.start", {}, "alice@ops")
    assert rig.engine.submit_op(job).result(15).state == "applied"
    again = rig.engine.submit_op(job).result(15)
    assert again.already_applied and mutations(rig.sim, 202) == ["qmstart"]
    assert [o.op_id for o in rig.engine.op_results()] == ["op-7"]


def test_shutdown_sends_no_new_call(rig: Rig) -> None:
    """T14: once stop_event is set, a job that has not dispatched yet sends nothing."""
    rig.stop.set()
    res = rig.engine.submit_op(JobSpec("op-8", 203, "qemu", "start", {}, "x@y")).result(15)
    assert res.state == "failed" and not res.final and mutations(rig.sim, 203) == []
    assert rig.journal.get("op-8") is None


def test_wait_timeout_keeps_the_vmid_busy_until_resumed(sim: PveSimulator, tmp_path: Path
                                                        ) -> None:
    """A task past its deadline stays pending; later passes resume it instead of re-planning."""
    r = Rig(sim, tmp_path / "state", task_timeout_s=0.3)
    try:
        sim.set_task_duration("qmstart", 30)
        r.provider.update(desired(6, {"204": {"type": "qemu", "state": "running"}}))
        first = r.engine.run_pass()
        assert first.submitted[0].result(15).state == "running"
        assert r.engine.busy(204) and r.engine.pending_resumes() == 1
        sim.release_tasks()
        second = r.engine.run_pass()
        assert second.resumed == 1 and not second.submitted
        r.settle()
        assert r.engine.pending_resumes() == 0
        assert mutations(sim, 204) == ["qmstart"]
        third = r.engine.run_pass()
        assert third.plan is not None and third.plan.in_sync
    finally:
        r.close()


def test_durability_failure_in_a_job_is_fatal_and_stops_the_engine(rig: Rig) -> None:
    """A journal write failure sets Engine.fatal and stop_event (the daemon exits non-zero)."""
    fd = rig.journal._fd
    assert fd is not None
    os.close(fd)  # the next append fails like a dead disk
    handle = rig.engine.submit_op(JobSpec("op-9", 205, "qemu", "start", {}, "x@y"))
    assert handle.wait(15) and isinstance(handle.error, DurabilityError)
    assert isinstance(rig.engine.fatal, DurabilityError) and rig.stop.is_set()
    rig.journal._fd = None
    assert mutations(rig.sim, 205) == []
