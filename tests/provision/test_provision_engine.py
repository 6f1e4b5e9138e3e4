"""Provisioning through the real engine, queue, executor and journal against the simulator:
a desired guest is cloned, configured and started with no operator action; a collision
between plan and dispatch is refused with nothing overwritten; a clone that fails half-way
is reported with what it left behind and never adopted; the clones of one container template
run one at a time; and a lost answer or a crash is decided by the target guest."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from felhom_agent.execution.executor import JobSpec
from felhom_agent.proxmox.models import GuestType
from felhom_agent.sim.pve import Fault, PveSimulator
from felhom_agent.state.journal import OpState
from tests.provision.helpers import (
    LXC_TEMPLATE,
    QEMU_TEMPLATE,
    Rig,
    block,
    desired,
    golden_volid,
    rig_of,
    scenario,
)

WAIT = 30.0


@pytest.fixture
def sim() -> Iterator[PveSimulator]:
    with PveSimulator(scenario()) as s:
        yield s
        assert s.internal_errors == []


@pytest.fixture
def rig(sim: PveSimulator, tmp_path: Path) -> Iterator[Rig]:
    yield from rig_of(sim, tmp_path / "state")


def _types(sim: PveSimulator, task_id: int) -> list[str]:
    return [t["type"] for t in sim.tasks() if t["id"] == str(task_id)]


def test_cloned_configured_and_started_without_operator_action(rig: Rig) -> None:
    """The reconciler thread alone: the provision pass clones the template, and the pass it
    wakes right after applies the desired config and run state to the new guest."""
    sim = rig.sim
    rig.provider.update(desired(1, {"1001": {
        "type": "lxc", "state": "running", "config": {"description": "customer 42"},
        "provision": block(LXC_TEMPLATE, "c42-web", pool="felhom")}}))
    rig.engine.start()
    assert sim.wait_guest(1001, lambda g: g["status"] == "running"
                          and "customer 42" in str(g["config"].get("description")), WAIT)
    rig.settle()
    g = sim.guest(1001)
    assert g["config"]["hostname"] == "c42-web" and g["pool"] == "felhom"
    assert g["config"]["rootfs"] == "local-lvm:vm-1001-disk-0,size=8G"  # a full clone
    assert g["config"]["features"] == "keyctl=1,nesting=1"  # copied from the template
    assert g["lock"] is None and sim.guest(LXC_TEMPLATE)["lock"] is None
    assert _types(sim, LXC_TEMPLATE) == ["vzclone"] and _types(sim, 1001) == ["vzstart"]
    kinds = [(a["kind"], a["outcome"]) for a in rig.audit_lines()]
    assert kinds == [("provision", "applied"), ("set_config", "applied"),
                     ("start", "applied")]
    assert rig.audit_lines()[0]["reason"] == "lxc 1001 'c42-web' cloned from template 9000"


def test_vm_template_and_golden_archive(rig: Rig, sim: PveSimulator) -> None:
    """A VM template is full-cloned; a golden backup is restored into the new vmid with new
    MAC addresses (``unique``), its disks on the block's storage."""
    archive = golden_volid(sim)
    rig.provider.update(desired(1, {
        "1002": {"type": "qemu", "provision": block(QEMU_TEMPLATE, "vm2")},
        "1003": {"type": "lxc", "provision": block(archive, "g3")}}))
    result = rig.engine.run_pass()
    assert [h.result(WAIT).state for h in result.submitted] == ["applied", "applied"]
    vm, ct = sim.guest(1002), sim.guest(1003)
    assert vm["config"]["name"] == "vm2" and vm["config"]["scsi0"].startswith(
        "local-lvm:vm-1002-disk-0")
    assert ct["config"]["rootfs"].startswith("local-lvm:vm-1003-disk-0")
    assert "BC:24:11:95:00:00" not in ct["config"]["net0"]  # unique: a new MAC
    assert _types(sim, QEMU_TEMPLATE) == ["qmclone"] and _types(sim, 1003) == ["vzrestore"]
    assert rig.engine.run_pass().plan.in_sync  # type: ignore[union-attr]


def test_collision_between_plan_and_dispatch_is_refused(tmp_path: Path) -> None:
    """The target appears after the plan, before its job runs: refused, nothing sent, the
    guest that took the vmid untouched."""
    with PveSimulator(scenario()) as sim:
        sim.inject(Fault("latency", path="/nodes/*/lxc/102/status/current", delay_s=WAIT))
        for rig in rig_of(sim, tmp_path / "state", workers=1):
            # the one worker is busy with another guest (its read is held): the provision
            # waits in the queue
            rig.engine.submit_op(JobSpec("hold", 102, GuestType.LXC, "start", {}, "test"))
            assert sim.wait_requests(in_flight=1, timeout=WAIT)
            rig.provider.update(desired(1, {"1001": {
                "type": "lxc", "provision": block(LXC_TEMPLATE, "c42")}}))
            result = rig.engine.run_pass()
            assert [a.kind for a in result.plan.actions] == ["provision"]  # type: ignore[union-attr]
            taken = sim.pct(["pct", "create", "1001", "local:vztmpl/debian-12.tar.zst",
                             "--hostname", "someone-else", "--rootfs", "local-lvm:4"])
            assert taken.returncode == 0
            before = sim.guest(1001)
            sim.clear_faults()
            out = result.submitted[0].result(WAIT)
            assert out.state == "refused" and not out.mutated
            assert out.reason.startswith("vmid 1001 is taken (collision): the agent never "
                                         "creates a guest over an existing one; nothing sent")
            assert sim.guest(1001) == before and _types(sim, LXC_TEMPLATE) == []
            again = rig.engine.run_pass().plan
            assert again is not None and not any(a.kind == "provision" for a in again.actions)


def test_clone_task_failing_is_reported_not_adopted(rig: Rig, sim: PveSimulator) -> None:
    """PVE removes a clone that failed: the op fails with the task's text and says nothing
    was left behind; the next pass does not clone again at once."""
    sim.inject(Fault("task_fail", task_type="vzclone", vmid=LXC_TEMPLATE,
                     message="clone failed: disk full", count=1))
    rig.provider.update(desired(1, {"1001": {"type": "lxc",
                                             "provision": block(LXC_TEMPLATE, "c42")}}))
    out = rig.engine.run_pass().submitted[0].result(WAIT)
    assert out.state == "failed"
    assert "disk full" in out.reason and "nothing left behind: vmid 1001 is free" in out.reason
    assert not sim.has_guest(1001) and sim.guest(LXC_TEMPLATE)["lock"] is None
    # not repeated every pass: held back by the engine's retry backoff, the reason reported
    nxt = rig.engine.run_pass().plan
    assert nxt is not None and not nxt.actions
    [held] = nxt.blocked
    assert held.vmid == 1001 and held.reason.startswith("provision failed: clone failed: ")
    assert "; next try after " in held.reason
    assert _types(sim, LXC_TEMPLATE) == ["vzclone"]


def test_clone_dying_half_way_leaves_a_partial_guest_reported(rig: Rig,
                                                              sim: PveSimulator) -> None:
    """A clone task killed at its end leaves the new guest locked ``create``: the op is not
    applied, its reason names the partial guest, and the next pass blocks on the lock
    instead of provisioning again."""
    sim.inject(Fault("task_crash", task_type="vzclone", vmid=LXC_TEMPLATE, count=1))
    rig.provider.update(desired(1, {"1001": {"type": "lxc", "state": "running",
                                             "provision": block(LXC_TEMPLATE, "c42")}}))
    out = rig.engine.run_pass().submitted[0].result(WAIT)
    assert out.state == "unknown"
    assert ("partial guest 1001 left behind (stopped, locked create); not adopted"
            in out.reason)
    nxt = rig.engine.run_pass().plan
    assert nxt is not None and not nxt.actions
    assert [b.to_json() for b in nxt.blocked] == [{"vmid": 1001, "reason": "locked: create"}]
    assert _types(sim, LXC_TEMPLATE) == ["vzclone"]


def test_clones_of_one_container_template_run_one_at_a_time(tmp_path: Path) -> None:
    """Five clones of one container template with four workers: each is dispatched once,
    none meets ``CT is locked (disk)``; a VM template's clones share the pass."""
    with PveSimulator(scenario(clone_s=0.2)) as sim:
        for rig in rig_of(sim, tmp_path / "state", workers=4):
            guests = {str(v): {"type": "lxc", "provision": block(LXC_TEMPLATE, f"c{v}")}
                      for v in range(1001, 1006)}
            guests.update({str(v): {"type": "qemu", "provision": block(QEMU_TEMPLATE, f"v{v}")}
                           for v in range(1006, 1009)})
            rig.provider.update(desired(1, guests))
            results = [h.result(WAIT) for h in rig.engine.run_pass().submitted]
            assert [(r.state, r.dispatch_attempts) for r in results] == [("applied", 1)] * 8
            clones = sorted((t for t in sim.tasks() if t["type"] == "vzclone"),
                            key=lambda t: t["upid"])
            assert len(clones) == 5 and all(t["exitstatus"] == "OK" for t in clones)


def test_lost_answer_decided_by_the_target(rig: Rig, sim: PveSimulator) -> None:
    """The clone reached PVE but its answer was lost: the task names the source, so the
    target decides -- it appears, is waited for, and the op is applied without a second
    clone."""
    sim.set_task_duration("vzclone", 0.5)
    sim.inject(Fault("drop_after", path=f"/nodes/*/lxc/{LXC_TEMPLATE}/clone", count=1))
    rig.provider.update(desired(1, {"1001": {"type": "lxc",
                                             "provision": block(LXC_TEMPLATE, "c42")}}))
    out = rig.engine.run_pass().submitted[0].result(WAIT)
    assert out.state == "applied", out
    assert "the target guest exists as asked" in out.reason
    assert _types(sim, LXC_TEMPLATE) == ["vzclone"]


def test_crash_after_begin_recovered_from_the_target(sim: PveSimulator, tmp_path: Path) -> None:
    """A restart finds a provision begun without a UPID whose clone reached PVE: the target
    guest (still being created, then done) decides at once -- no wait for the in-flight grace
    -- and the op is applied; no second clone is sent."""
    state = tmp_path / "state"
    sim.set_task_duration("vzclone", 0.5)
    for first in rig_of(sim, state):
        first.journal.begin("op-sent", 1001, "provision",
                            {"guest_type": "lxc", "template": LXC_TEMPLATE, "name": "c1",
                             "storage": "local-lvm"}, "alice@ops")
        first.client.clone(LXC_TEMPLATE, GuestType.LXC, 1001, name="c1", full=True,
                           storage="local-lvm")
    for second in rig_of(sim, state, lookup_grace_s=3600.0):
        report = second.engine.recover()
        assert report.rechecks == ("op-sent",)
        assert second.engine.run_pass().resumed == 1
        second.settle()
        sent = second.journal.get("op-sent")
        assert sent is not None and sent.outcome is not None
        assert sent.outcome.state is OpState.APPLIED, sent.outcome
        assert "the target guest exists as asked" in sent.outcome.reason
    assert _types(sim, LXC_TEMPLATE) == ["vzclone"] and sim.guest(1001)["lock"] is None


def test_crash_before_the_call_left_nothing(sim: PveSimulator, tmp_path: Path) -> None:
    """Begun, but the call never left: once the in-flight grace is over and the vmid is
    still free, the op is failed (nothing was created) and never sent."""
    state = tmp_path / "state"
    for first in rig_of(sim, state):
        first.journal.begin("op-lost", 1002, "provision",
                            {"guest_type": "lxc", "template": LXC_TEMPLATE, "name": "c2",
                             "storage": "local-lvm"}, "alice@ops")
    for second in rig_of(sim, state, lookup_grace_s=0.0):
        second.engine.recover()
        assert second.engine.run_pass().resumed == 1
        second.settle()
        lost = second.journal.get("op-lost")
        assert lost is not None and lost.outcome is not None
        assert lost.outcome.state is OpState.FAILED
        assert "nothing was created" in lost.outcome.reason
    assert _types(sim, LXC_TEMPLATE) == [] and not sim.has_guest(1002)


def test_signed_style_job_outside_the_range_refused(rig: Rig, sim: PveSimulator) -> None:
    """The executor holds every provision to the vmid range right before the call."""
    job = JobSpec("op-range", 3000, GuestType.LXC, "provision",
                  {"template": LXC_TEMPLATE, "name": "x", "storage": "local-lvm"}, "alice@ops")
    out = rig.engine.submit_op(job).result(WAIT)
    assert out.state == "refused"
    assert out.reason == "provision.vmid_min/vmid_max: vmid 3000 is outside 1000..1999"
    assert not sim.has_guest(3000)


def test_no_time_is_lost_between_provision_and_config(rig: Rig, sim: PveSimulator) -> None:
    """The wake after an applied provision: with a 30 s interval the follow-up pass still
    comes at once (the guest is started long before the interval would pass)."""
    rig.provider.update(desired(1, {"1001": {"type": "lxc", "state": "running",
                                             "provision": block(LXC_TEMPLATE, "c")}}))
    started = time.monotonic()
    rig.engine.start()
    assert sim.wait_guest(1001, lambda g: g["status"] == "running", WAIT)
    assert time.monotonic() - started < 30.0  # the reconcile interval: a wake, not a tick
