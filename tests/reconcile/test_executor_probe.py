"""The post-task re-read taken alongside the watcher's exit-status read (the ``on_exit`` probe).

The rule stays: after the task the guest is re-read and the job is decided by what is observed.
What changes is only *when* that re-read is sent: while the status read of a task that left the
active list is in flight. Such a re-read decides only when it shows the desired state.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

import attrs
import pytest

from felhom_agent.execution.executor import DispatchRetry, ExecResult, Executor, JobSpec
from felhom_agent.kinds.model import Observed
from felhom_agent.proxmox.client import ProxmoxClient
from felhom_agent.proxmox.models import GuestStatus, GuestType
from felhom_agent.proxmox.tasks import TaskResult
from felhom_agent.proxmox.taskwatch import TaskWatcher
from felhom_agent.proxmox.upid import Upid
from felhom_agent.sim.pve import Fault, PveSimulator
from felhom_agent.state.audit import AuditLog
from felhom_agent.state.journal import Journal
from tests.reconcile.crash_child import scenario

LOG = logging.getLogger("test.executor_probe")


@pytest.fixture
def sim() -> Iterator[PveSimulator]:
    with PveSimulator(scenario(qemu=2, task_s=0.2)) as s:
        yield s


class StatusReads:
    """Counts the client's ``status/current`` reads (wraps the bound method); ``answered[n]``
    is set once the n-th read (1-based) has been answered."""

    def __init__(self, client: ProxmoxClient) -> None:
        self.count = 0
        self.answered = [threading.Event() for _ in range(8)]
        lock = threading.Lock()
        original = client.guest_status

        def counted(vmid: int, kind: GuestType) -> GuestStatus:
            with lock:
                self.count += 1
                n = self.count
            out = original(vmid, kind)
            if n < len(self.answered):
                self.answered[n].set()
            return out

        client.guest_status = counted  # type: ignore[method-assign]


def make(client: ProxmoxClient, state: tuple[Journal, AuditLog], waiter: Any) -> Executor:
    return Executor(client=client, journal=state[0], audit=state[1], task_timeout_s=10.0,
                    waiter=waiter, retry=DispatchRetry(attempts=2, first_s=0.01, cap_s=0.05),
                    lookup_grace_s=3.0, lookup_interval_s=0.05, settle_timeout_s=1.0,
                    settle_interval_s=0.05, logger=LOG)


def job(op_id: str = "op-1", vmid: int = 200) -> JobSpec:
    return JobSpec(op_id, vmid, "qemu", "start", {}, "alice@ops")


def test_the_watcher_runs_the_re_read_beside_the_status_read_and_it_decides(
    sim: PveSimulator, client: ProxmoxClient, state: tuple[Journal, AuditLog],
) -> None:
    """Through the TaskWatcher a start costs two status/current reads (before the call and
    after the task). The second is answered while every task-status read is held by the
    simulator: it runs beside the status read, not after it."""
    watcher = TaskWatcher(client, logger=LOG)
    reads = StatusReads(client)
    sim.inject(Fault("latency", path="/nodes/*/tasks/*/status", delay_s=60))
    out: list[ExecResult] = []
    runner = threading.Thread(target=lambda: out.append(make(client, state, watcher).run(job())),
                              daemon=True)
    runner.start()
    try:
        assert reads.answered[2].wait(10), "no re-read while the task's status read was held"
        assert sim.guest(200)["status"] == "running" and not out
    finally:
        sim.clear_faults()
        runner.join(15)
        watcher.stop()
    [res] = out
    assert res.state == "applied" and res.reason == "" and res.final
    assert reads.count == 2


class StaleProbe:
    """A waiter that waits through the client and hands back a probe showing the guest
    still stopped (as a re-read that raced the task's effect would)."""

    def __init__(self, client: ProxmoxClient) -> None:
        self._client = client
        self.probes = 0

    def wait(self, upid: Upid | str, *, timeout_s: float,
             on_exit: Callable[[], object] | None = None) -> TaskResult:
        res = self._client.wait(upid, timeout_s=timeout_s)
        assert on_exit is not None
        self.probes += 1
        seen = on_exit()
        assert isinstance(seen, Observed)
        assert seen.status is not None
        stale = attrs.evolve(seen, status=attrs.evolve(seen.status, status="stopped"))
        return attrs.evolve(res, exit_probe=stale)


def test_a_probe_not_showing_the_desired_state_is_read_again(
    sim: PveSimulator, client: ProxmoxClient, state: tuple[Journal, AuditLog],
) -> None:
    """Only a probe showing the desired state decides: one showing anything else is followed
    by a fresh re-read, and the job is decided by that (here: applied)."""
    waiter = StaleProbe(client)
    reads = StatusReads(client)
    res = make(client, state, waiter).run(job(vmid=201))
    assert waiter.probes == 1
    assert res.state == "applied" and res.final
    assert reads.count == 3  # before the call, the (stale) probe, the fresh re-read


def test_a_kind_judged_by_its_task_gets_no_probe(
    sim: PveSimulator, client: ProxmoxClient, state: tuple[Journal, AuditLog],
) -> None:
    """A rollback (effect not observable) passes no probe: nothing is re-read for it."""
    seen: list[object] = []

    class Recording:
        def wait(self, upid: Upid | str, *, timeout_s: float,
                 on_exit: Callable[[], object] | None = None) -> TaskResult:
            seen.append(on_exit)
            return client.wait(upid, timeout_s=timeout_s)

    vmid = 101  # the default scenario's qemu guest, which has no snapshot: make one first
    ex = make(client, state, Recording())
    snap = ex.run(JobSpec("op-s", vmid, "qemu", "snapshot", {"snapname": "s1"}, "alice@ops"))
    assert snap.state == "applied"
    back = ex.run(JobSpec("op-r", vmid, "qemu", "rollback", {"snapname": "s1"}, "alice@ops"))
    assert back.state == "applied"
    assert seen[0] is not None and seen[1] is None
