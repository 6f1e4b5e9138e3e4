"""The executor's rules against the PVE simulator over HTTPS.

See ``docs/architecture.md`` ("Waiting for tasks") and ``docs/control-core.md`` ("Task waiting").
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from felhom_agent.durable import DurabilityError
from felhom_agent.execution.executor import DispatchRetry, ExecResult, Executor, JobSpec
from felhom_agent.proxmox.client import ProxmoxClient
from felhom_agent.proxmox.models import GuestType
from felhom_agent.proxmox.taskwatch import TaskWatcher
from felhom_agent.sim.pve import Fault, PveSimulator
from felhom_agent.state.audit import AuditLog
from felhom_agent.state.journal import Journal
from tests.reconcile.crash_child import mutations, scenario
from tests.support.pve import sim_client

LOG = logging.getLogger("test.executor")
START_101 = "/nodes/pve1/qemu/101/status/start"


@pytest.fixture
def sim() -> Iterator[PveSimulator]:
    with PveSimulator(scenario(qemu=1, ha=(200,))) as s:
        yield s


@pytest.fixture
def watcher(client: ProxmoxClient) -> Iterator[TaskWatcher]:
    w = TaskWatcher(client, logger=LOG)
    yield w
    w.stop()


def make(client: ProxmoxClient, state: tuple[Journal, AuditLog], watcher: TaskWatcher,
         **kw: Any) -> Executor:
    args: dict[str, Any] = {
        "client": client, "journal": state[0], "audit": state[1], "task_timeout_s": 5.0,
        "waiter": watcher, "retry": DispatchRetry(attempts=4, first_s=0.01, cap_s=0.05),
        "lookup_grace_s": 3.0, "lookup_interval_s": 0.05, "settle_timeout_s": 2.0,
        "settle_interval_s": 0.05, "logger": LOG,
    }
    args.update(kw)
    return Executor(**args)


class VirtualTime:
    """The executor's clocks and sleep, where a sleep skips time instead of waiting.

    Wall and monotonic time are the real ones plus every second the executor has slept, so
    they stay comparable with the journal's and the simulator's real timestamps while a
    backoff, a lookup grace or a settle deadline passes at once.
    """

    def __init__(self) -> None:
        self.skipped = 0.0
        self.sleeps: list[float] = []

    def time(self) -> float:
        return time.time() + self.skipped

    def monotonic(self) -> float:
        return time.monotonic() + self.skipped

    def sleep(self, seconds: float) -> bool:
        self.sleeps.append(seconds)
        self.skipped += seconds
        return False

    def executor_kw(self) -> dict[str, Any]:
        return {"clock": self.time, "monotonic": self.monotonic, "sleep": self.sleep}


def start(op_id: str = "op-1", vmid: int = 101, kind: str = "start", **params: Any) -> JobSpec:
    gtype = "lxc" if vmid in (100, 102) else "qemu"
    return JobSpec(op_id, vmid, gtype, kind, params, "alice@ops")


def run_in_thread(ex: Executor, job: JobSpec) -> tuple[threading.Thread, list[ExecResult]]:
    out: list[ExecResult] = []
    t = threading.Thread(target=lambda: out.append(ex.run(job)), daemon=True)
    t.start()
    return t, out


def test_start_is_journaled_waited_verified_and_audited(
    sim: PveSimulator, client: ProxmoxClient, state: tuple[Journal, AuditLog],
    watcher: TaskWatcher,
) -> None:
    """A start journals begin, UPID and outcome, waits for the task and is verified applied."""
    res = make(client, state, watcher).run(start())
    assert res.state == "applied" and res.final and res.mutated
    assert sim.guest(101)["status"] == "running"
    assert mutations(sim, 101) == ["qmstart"]
    entry = state[0].get("op-1")
    assert entry is not None and entry.upid == res.upid and entry.outcome is not None
    assert [r.outcome for r in state[1].recent(5)] == ["applied"]
    assert state[0].stats().fsyncs == 3  # begin, upid, outcome (T13)


def test_guest_already_in_desired_state_gets_no_call(
    sim: PveSimulator, client: ProxmoxClient, state: tuple[Journal, AuditLog],
    watcher: TaskWatcher,
) -> None:
    """The status/current re-read before mutating skips a call that is not needed."""
    res = make(client, state, watcher).run(start(vmid=100))
    assert res.state == "applied" and not res.mutated and res.upid is None
    assert mutations(sim, 100) == []
    # One record, no ``begin``: a crash cannot leave it looking as if a call may have been sent.
    entry = state[0].get(res.op_id)
    assert entry is not None and entry.began_at is None and not entry.damaged
    assert entry.source == start(vmid=100).source
    assert state[0].stats().records == 1


def test_op_id_with_an_outcome_is_not_executed_again(
    sim: PveSimulator, client: ProxmoxClient, state: tuple[Journal, AuditLog],
    watcher: TaskWatcher,
) -> None:
    """Idempotency: a second run of the same op id replays the stored outcome."""
    ex = make(client, state, watcher)
    first = ex.run(start())
    client.stop(101, GuestType.QEMU)  # even if the guest drifted back, the op is not re-run
    second = ex.run(start())
    assert second.already_applied and second.state == first.state == "applied"
    assert mutations(sim, 101) == ["qmstart", "qmstop"]


def test_dispatch_is_retried_when_pve_forked_no_worker(
    sim: PveSimulator, client: ProxmoxClient, state: tuple[Journal, AuditLog],
    watcher: TaskWatcher,
) -> None:
    """`got no worker upid` proves no task exists, so the dispatch is re-sent."""
    sim.inject(Fault("http_error", path=START_101, method="POST", status=500, count=1,
                     message="got no worker upid - start worker failed"))
    vt = VirtualTime()
    res = make(client, state, watcher, retry=DispatchRetry(), **vt.executor_kw()).run(start())
    assert res.state == "applied" and res.dispatch_attempts == 2
    assert mutations(sim, 101) == ["qmstart"]
    assert vt.sleeps == [0.5]  # the production backoff, skipped rather than waited


def test_lock_contention_on_the_request_is_retried_within_budget(
    sim: PveSimulator, client: ProxmoxClient, state: tuple[Journal, AuditLog],
    watcher: TaskWatcher,
) -> None:
    """A lock timeout returned on the request itself is retried; no failure surfaces (T12)."""
    sim.inject(Fault("http_error", path=START_101, method="POST", status=500, count=2,
                     message="can't lock file '/var/lock/qemu-server/lock-101.conf' - "
                             "got timeout"))
    vt = VirtualTime()
    res = make(client, state, watcher, retry=DispatchRetry(), **vt.executor_kw()).run(start())
    assert res.state == "applied" and res.dispatch_attempts == 3
    assert vt.sleeps == [0.5, 1.0]
    assert mutations(sim, 101) == ["qmstart"]


def test_lock_contention_past_the_budget_fails_without_a_task(
    sim: PveSimulator, client: ProxmoxClient, state: tuple[Journal, AuditLog],
    watcher: TaskWatcher,
) -> None:
    """Retries are bounded: lasting contention ends as a failure carrying PVE's text."""
    sim.inject(Fault("http_error", path=START_101, method="POST", status=500,
                     message="VM is locked (backup)"))
    vt = VirtualTime()
    res = make(client, state, watcher, retry=DispatchRetry(), **vt.executor_kw()).run(start())
    assert res.state == "failed" and "is locked" in res.reason and res.dispatch_attempts == 4
    assert vt.sleeps == [0.5, 1.0, 2.0]  # four tries, three pauses
    assert mutations(sim, 101) == []


def test_other_server_errors_are_not_retried(
    sim: PveSimulator, client: ProxmoxClient, state: tuple[Journal, AuditLog],
    watcher: TaskWatcher,
) -> None:
    """A plain 500 without proof that no task exists is never re-sent."""
    sim.inject(Fault("http_error", path=START_101, method="POST", status=500, count=1,
                     message="storage 'local-lvm' is not online"))
    res = make(client, state, watcher).run(start())
    assert res.state == "failed" and res.dispatch_attempts == 1
    assert "not online" in res.reason and mutations(sim, 101) == []


def test_transport_error_on_post_adopts_the_task_from_the_task_list(
    sim: PveSimulator, state: tuple[Journal, AuditLog],
) -> None:
    """A lost answer to a POST means outcome unknown: the task is found and adopted, not re-sent."""
    sim.inject(Fault("latency", path=START_101, method="POST", delay_s=0.6, count=1))
    with sim_client(sim, timeout_s=0.2) as slow:
        watcher = TaskWatcher(slow, logger=LOG)
        try:
            res = make(slow, state, watcher).run(start())
        finally:
            watcher.stop()
    assert res.state == "applied"
    assert mutations(sim, 101) == ["qmstart"]
    entry = state[0].get("op-1")
    assert entry is not None and entry.upid == sim.tasks()[-1]["upid"]


def test_dropped_post_without_a_task_ends_unknown_after_the_grace(
    sim: PveSimulator, client: ProxmoxClient, state: tuple[Journal, AuditLog],
    watcher: TaskWatcher,
) -> None:
    """No task found within the in-flight grace: an order is marked unknown, never re-sent."""
    sim.inject(Fault("drop", path=START_101, method="POST", count=1))
    vt = VirtualTime()
    res = make(client, state, watcher, lookup_grace_s=40.0, lookup_interval_s=1.0,
               **vt.executor_kw()).run(start())
    assert res.state == "unknown" and res.final
    assert 39.0 <= vt.skipped <= 41.0  # the production grace passed on the virtual clock
    assert mutations(sim, 101) == [] and sim.guest(101)["status"] == "stopped"


def test_warnings_are_success_and_never_retried(
    sim: PveSimulator, client: ProxmoxClient, state: tuple[Journal, AuditLog],
    watcher: TaskWatcher,
) -> None:
    """`WARNINGS: n` is success with warnings: one task, no retry, not a failure (T12)."""
    sim.inject(Fault("task_fail", task_type="qmstart", vmid=101, message="WARNINGS: 2",
                     count=1))
    res = make(client, state, watcher).run(start())
    assert res.state == "applied" and res.warnings == 2 and res.exitstatus == "WARNINGS: 2"
    assert mutations(sim, 101) == ["qmstart"]


def test_failing_task_is_a_failure_with_its_text(
    sim: PveSimulator, client: ProxmoxClient, state: tuple[Journal, AuditLog],
    watcher: TaskWatcher,
) -> None:
    """A task error that the observed state does not contradict is a failure, not retried."""
    sim.inject(Fault("task_fail", task_type="qmstart", vmid=101, count=1,
                     message="start failed: QEMU exited with code 1"))
    res = make(client, state, watcher).run(start())
    assert res.state == "failed" and "QEMU exited" in res.reason
    assert mutations(sim, 101) == ["qmstart"]
    assert [r.outcome for r in state[1].recent(5)] == ["failed"]


def test_already_running_task_failure_is_resolved_by_observed_state(
    sim: PveSimulator, client: ProxmoxClient, state: tuple[Journal, AuditLog],
    watcher: TaskWatcher,
) -> None:
    """`VM already running` after a racing start is applied: decided by the re-read."""
    sim.inject(Fault("latency", path=START_101, method="POST", delay_s=5.0, count=1))
    t, out = run_in_thread(make(client, state, watcher), start())
    assert sim.wait_requests(in_flight=1, timeout=5)
    with sim_client(sim) as other:
        upid = other.start(101, GuestType.QEMU).upid
        assert upid is not None
        sim.wait_task(upid.raw)
    sim.clear_faults()  # release the held POST: its task now fails "already running"
    t.join(10)
    assert out and out[0].state == "applied" and "already running" in out[0].reason
    assert mutations(sim, 101) == ["qmstart", "qmstart"]


def test_wait_past_the_deadline_is_still_running_then_resumed(
    sim: PveSimulator, client: ProxmoxClient, state: tuple[Journal, AuditLog],
    watcher: TaskWatcher,
) -> None:
    """A wait deadline keeps the op pending (never failed); a rerun re-attaches, not resends."""
    sim.set_task_duration("qmstart", 30)
    ex = make(client, state, watcher, task_timeout_s=0.3)
    res = ex.run(start())
    assert res.state == "running" and not res.final
    entry = state[0].get("op-1")
    assert entry is not None and entry.pending and entry.upid == res.upid
    sim.release_tasks()
    again = ex.run(start())
    assert again.state == "applied" and again.upid == res.upid
    assert mutations(sim, 101) == ["qmstart"]


def test_set_config_sends_the_digest_and_a_stale_one_resolves_by_reread(
    sim: PveSimulator, client: ProxmoxClient, state: tuple[Journal, AuditLog],
    watcher: TaskWatcher,
) -> None:
    """A write with a digest gone stale fails `checksum mismatch`; the re-read decides."""
    path = "/nodes/pve1/lxc/102/config"
    sim.inject(Fault("latency", path=path, method="PUT", delay_s=5.0, count=1))
    job = JobSpec("op-cfg", 102, "lxc", "set_config", {"description": "cache tier"}, "plan:3")
    t, out = run_in_thread(make(client, state, watcher), job)
    assert sim.wait_requests(in_flight=1, timeout=5)
    with sim_client(sim) as other:
        other.set_guest_config(102, GuestType.LXC, {"description": "cache tier"})
    sim.clear_faults()
    t.join(10)
    assert out and out[0].state == "applied"
    # LXC words it "detected modified configuration", qemu "checksum mismatch".
    assert "modified configuration" in out[0].reason or "checksum mismatch" in out[0].reason
    assert sim.guest(102)["config"]["description"].rstrip("\n") == "cache tier"


def test_set_config_synchronous_null_answer_is_verified_by_reread(
    sim: PveSimulator, client: ProxmoxClient, state: tuple[Journal, AuditLog],
    watcher: TaskWatcher,
) -> None:
    """Dual mode: an LXC PUT answers null (no UPID) and is verified by config_diff."""
    job = JobSpec("op-cfg", 102, "lxc", "set_config", {"description": "x", "onboot": 1},
                  "plan:3")
    res = make(client, state, watcher).run(job)
    assert res.state == "applied" and res.upid is None and res.mutated
    assert sim.guest(102)["config"]["onboot"] == 1


def test_snapshot_kinds_are_observed_by_the_snapshot_list(
    sim: PveSimulator, client: ProxmoxClient, state: tuple[Journal, AuditLog],
    watcher: TaskWatcher,
) -> None:
    """Snapshot create/delete are skipped when already so, and verified by the list."""
    ex = make(client, state, watcher)
    assert ex.run(start("s1", kind="snapshot", snapname="pre1")).state == "applied"
    assert ex.run(start("s2", kind="snapshot", snapname="pre1")).mutated is False
    assert ex.run(start("s3", kind="guest.delete_snapshot", snapname="pre1")).state == "applied"
    assert "pre1" not in sim.guest(101)["snapshots"]
    assert mutations(sim, 101) == ["qmsnapshot", "qmdelsnapshot"]


def test_ha_managed_start_is_confirmed_by_observed_state(
    sim: PveSimulator, client: ProxmoxClient, state: tuple[Journal, AuditLog],
    watcher: TaskWatcher,
) -> None:
    """An HA guest's start runs as `hastart` and is applied only once the guest runs."""
    res = make(client, state, watcher).run(start(vmid=200))
    assert res.state == "applied" and res.upid is not None and ":hastart:" in res.upid
    assert sim.guest(200)["status"] == "running"


def test_durability_error_from_the_journal_propagates(
    sim: PveSimulator, client: ProxmoxClient, state: tuple[Journal, AuditLog],
    watcher: TaskWatcher,
) -> None:
    """A failed journal write is never swallowed: the executor raises DurabilityError."""
    journal = state[0]
    fd = journal._fd
    assert fd is not None
    os.close(fd)  # the next append's write fails with EBADF, like a dead disk
    with pytest.raises(DurabilityError):
        make(client, state, watcher).run(start())
    journal._fd = None
    assert mutations(sim, 101) == []


def test_ha_task_that_ends_before_the_guest_changes_is_waited_out(
    sim: PveSimulator, client: ProxmoxClient, state: tuple[Journal, AuditLog],
    watcher: TaskWatcher,
) -> None:
    """HA: `hastart` ends OK while the guest is still stopped; the executor waits for the state."""
    # exitstatus "OK" without the guest starting: ha-manager only queued the request.
    sim.inject(Fault("task_fail", task_type="hastart", vmid=200, message="OK", count=1))
    t, out = run_in_thread(make(client, state, watcher, settle_timeout_s=10.0), start(vmid=200))
    first = _wait_first_task_stopped(sim, 200)
    assert first["exitstatus"] == "OK" and sim.guest(200)["status"] == "stopped"
    with sim_client(sim) as ha_manager:  # the HA stack brings the guest up later
        upid = ha_manager.start(200, GuestType.QEMU).upid
        assert upid is not None
        sim.wait_task(upid.raw)
    t.join(10)
    assert out and out[0].state == "applied" and "HA-managed" in out[0].reason


def test_ha_guest_that_never_reaches_the_state_is_unknown(
    sim: PveSimulator, client: ProxmoxClient, state: tuple[Journal, AuditLog],
    watcher: TaskWatcher,
) -> None:
    """HA: the settle deadline passes with the guest unchanged: outcome unknown, not failed."""
    sim.inject(Fault("task_fail", task_type="hastart", vmid=200, message="OK", count=1))
    vt = VirtualTime()
    res = make(client, state, watcher, settle_timeout_s=60.0, settle_interval_s=0.5,
               **vt.executor_kw()).run(start(vmid=200))
    assert res.state == "unknown" and "HA-managed" in res.reason
    assert 59.0 <= vt.skipped <= 60.5  # the production settle deadline, not waited
    assert mutations(sim, 200) == ["hastart"]


def _wait_first_task_stopped(sim: PveSimulator, vmid: int) -> dict[str, Any]:
    assert sim.wait_requests(seen=sim.requests_seen + 3, timeout=5)
    for _ in range(100):
        tasks = [t for t in sim.tasks() if t["id"] == str(vmid)]
        if tasks:
            return sim.wait_task(tasks[0]["upid"], timeout=5)
        sim.wait_requests(seen=sim.requests_seen + 1, timeout=0.1)
    raise AssertionError("no task appeared")
