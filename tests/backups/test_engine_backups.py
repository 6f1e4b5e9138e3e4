"""Policy backups, prune and the backup kinds through the engine, against the PVE simulator.

The agent's engine, queue, executor, journal and audit run in this process; PVE is the
simulator over real HTTPS. One shifted clock is shared by both, so a period passes at once.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from felhom_agent.backup.notes import notes_template
from felhom_agent.planning.backups import RETRY_MAX_S
from felhom_agent.proxmox.models import GuestType
from felhom_agent.sim.pve import Fault, PveSimulator
from felhom_agent.state.journal import OpState
from tests.backups.rig import (
    DAY,
    HIDING_TOKEN,
    BackupRig,
    ShiftedClock,
    backup_scenario,
    on_other_node,
    policy_guests,
    vzdumps,
)

GIB = 2**30


@pytest.fixture
def clock() -> ShiftedClock:
    return ShiftedClock()


def _rig(sim: PveSimulator, tmp_path: Path, clock: ShiftedClock, **kw: Any
         ) -> Iterator[BackupRig]:
    rig = BackupRig(sim, tmp_path / "state", clock, **kw)
    try:
        yield rig
    finally:
        rig.close()
    assert sim.internal_errors == []


@pytest.fixture
def sim(clock: ShiftedClock) -> Iterator[PveSimulator]:
    with PveSimulator(backup_scenario(), clock=clock) as s:
        yield s


@pytest.fixture
def rig(sim: PveSimulator, tmp_path: Path, clock: ShiftedClock) -> Iterator[BackupRig]:
    yield from _rig(sim, tmp_path, clock)


def _volumes(sim: PveSimulator, vmid: int | None, storage: str = "local"
             ) -> list[dict[str, Any]]:
    return [b for b in sim.backups(storage) if b["vmid"] == vmid]


def _entry(rig: BackupRig, vmid: int) -> Any:
    return next(e for e in rig.engine.backup_view().entries if e.vmid == vmid)


# ------------------------------------------------------------------ a policy backup


def test_policy_backup_is_found_by_its_op_id_once_per_period(
        rig: BackupRig, sim: PveSimulator, clock: ShiftedClock) -> None:
    """Due guests get one vzdump each; the outcome names the volid found in the listing,
    whose notes carry ``felhom op=<op id>``; the next pass plans nothing; a period later
    exactly one more backup each."""
    rig.want(1, policy_guests({100: "lxc", 101: "qemu"}))
    first = rig.run_pass()
    assert first.plan is not None
    assert sorted((a.vmid, a.kind) for a in first.plan.actions) == [(100, "backup"),
                                                                   (101, "backup")]
    for res in rig.results(first):
        assert res.state == "applied" and res.mutated, res
        [vol] = _volumes(sim, res.vmid)
        assert vol["notes"] == notes_template(res.op_id)
        assert res.reason == f"backup {vol['volid']} ({vol['size']} bytes)"
        assert vol["volid"].startswith(f"local:backup/vzdump-{'lxc' if res.vmid == 100 else 'qemu'}"
                                       f"-{res.vmid}-")
    again = rig.run_pass()
    assert again.plan is not None and again.plan.actions == () and not again.submitted
    view = {e.vmid: e for e in rig.engine.backup_view().entries}
    assert {v: (e.status, e.count) for v, e in view.items()} == {100: ("ok", 1), 101: ("ok", 1)}
    assert view[100].last is not None and view[100].last.volid == _volumes(sim, 100)[0]["volid"]
    assert len(vzdumps(sim, 100)) == 1 and len(vzdumps(sim, 101)) == 1

    clock.advance(DAY + 60)
    later = rig.run_pass()
    assert later.plan is not None and len(later.submitted) == 2
    assert all(r.state == "applied" for r in rig.results(later))
    assert len(vzdumps(sim, 100)) == 2 and len(_volumes(sim, 100)) == 2
    assert len(vzdumps(sim, 101)) == 2 and len(_volumes(sim, 101)) == 2
    assert rig.run_pass().submitted == ()


def test_a_policy_backup_to_pbs_is_found_by_its_op_id(
        rig: BackupRig, sim: PveSimulator) -> None:
    """On a PBS storage the volume is a snapshot (``pbs1:backup/ct/100/<UTC time>``) whose
    comment carries the op id; the report shows it and the PBS storage."""
    rig.want(1, policy_guests({100: "lxc"}, storage="pbs1"))
    [res] = rig.results(rig.run_pass())
    [vol] = _volumes(sim, 100, "pbs1")
    assert res.state == "applied" and res.reason.startswith(f"backup {vol['volid']} (")
    assert vol["volid"].startswith("pbs1:backup/ct/100/")
    assert vol["notes"] == notes_template(res.op_id)
    rig.run_pass()
    entry = _entry(rig, 100)
    assert entry.status == "ok" and entry.last is not None and entry.last.volid == vol["volid"]
    assert entry.last.encrypted  # the storage's encryption key
    [pbs] = rig.engine.backup_view().pbs
    assert pbs["storage"] == "pbs1" and pbs["active"] is True and pbs["encrypted"]


def test_job_errors_is_failed_with_the_guests_error_line(
        rig: BackupRig, sim: PveSimulator, clock: ShiftedClock) -> None:
    """``job errors`` alone says nothing: the reason is the guest's ERROR line; nothing is
    listed, the report says ``failed`` until a newer backup exists; the next try waits
    (every_h / 6, at least 10 minutes), so a failing guest is not backed up every pass."""
    sim.inject(Fault("backup_fail", vmid=100, message="command 'tar' failed: exit code 2",
                     count=1))
    rig.want(1, policy_guests({100: "lxc"}))
    [res] = rig.results(rig.run_pass())
    assert res.state == "failed" and res.exitstatus == "job errors"
    # the guest's own line was ``ERROR: Backup of VM 100 failed - command 'tar' failed: ...``
    assert res.reason == "job errors: command 'tar' failed: exit code 2"
    assert _volumes(sim, 100) == []
    entry = rig.journal.get(res.op_id)
    assert entry is not None and entry.outcome is not None
    assert entry.outcome.state is OpState.FAILED
    # the next pass reports the failure and waits before trying again
    waiting = rig.run_pass()
    assert _entry(rig, 100).status == "failed"
    assert res.upid is not None and res.upid in _entry(rig, 100).reason
    assert "next try in" in _entry(rig, 100).reason
    assert rig.results(waiting) == []
    # once the wait is over (the fault is gone) the guest is backed up
    clock.advance(RETRY_MAX_S + 60)
    retry = rig.run_pass()
    assert [r.state for r in rig.results(retry)] == ["applied"]
    rig.run_pass()
    assert _entry(rig, 100).status == "ok" and len(_volumes(sim, 100)) == 1


def test_warnings_is_applied_with_warnings_found_by_time(
        rig: BackupRig, sim: PveSimulator) -> None:
    """``WARNINGS: 1`` (the notes could not be written): success; the volume has no op id in
    its notes and is found as the guest's backup made since the dispatch."""
    sim.inject(Fault("backup_warn", vmid=101, message="notes file not writable", count=1))
    rig.want(1, policy_guests({101: "qemu"}))
    [res] = rig.results(rig.run_pass())
    [vol] = _volumes(sim, 101)
    assert not vol["notes"]
    assert res.state == "applied" and res.warnings == 1 and res.exitstatus == "WARNINGS: 1"
    assert res.reason == (f"backup {vol['volid']} ({vol['size']} bytes); "
                          "success with WARNINGS: 1")
    assert rig.run_pass().submitted == ()


def test_plain_ok_is_failed_never_success(rig: BackupRig, sim: PveSimulator) -> None:
    """The guest moved to another node between the re-read and the call: PVE answers the
    plain string ``OK``, no task -- the op is ``failed``, with no volume and no task."""
    on_other_node(sim, 102, "pve2")
    res = rig.run(102, "backup", {"storage": "local"}, op_id="op-plain-ok")
    assert res.state == "failed" and not res.upid
    assert "answered OK instead of a task" in res.reason
    assert vzdumps(sim) == [] and _volumes(sim, 102) == []


def test_backup_past_the_deadline_stays_pending_then_completes_once(
        sim: PveSimulator, tmp_path: Path, clock: ShiftedClock) -> None:
    """A vzdump longer than the task deadline: the op stays pending (``running``), the guest
    gets no second backup meanwhile, and a later pass re-attaches: one task, one volume."""
    sim.set_backup(100, duration_s=3600)
    for rig in _rig(sim, tmp_path, clock, task_timeout_s=0.3):
        rig.want(1, policy_guests({100: "lxc"}))
        [res] = rig.results(rig.run_pass())
        assert res.state == "running" and not res.final and res.upid is not None
        entry = rig.journal.get(res.op_id)
        assert entry is not None and entry.pending and entry.upid == res.upid
        held = rig.run_pass()  # re-attaches too: still running past its deadline
        assert held.plan is not None and held.submitted == () and held.resumed == 1
        assert [b.vmid for b in held.plan.blocked] == [100]  # locked 'backup', or busy
        assert _entry(rig, 100).status == "running"
        assert rig.queue.wait_idle(30)
        still = rig.journal.get(res.op_id)
        assert still is not None and still.pending
        sim.release_tasks()
        sim.wait_task(res.upid)
        assert rig.run_pass().resumed == 1
        assert rig.queue.wait_idle(30)
        done = rig.journal.get(res.op_id)
        assert done is not None and done.outcome is not None
        assert done.outcome.state is OpState.APPLIED, done.outcome
        assert len(vzdumps(sim, 100)) == 1 and len(_volumes(sim, 100)) == 1
        assert rig.run_pass().submitted == ()
        assert _entry(rig, 100).status == "ok"


def test_a_crashed_vzdump_leaves_a_stale_lock_that_is_reported_with_the_fix(
        rig: BackupRig, sim: PveSimulator, clock: ShiftedClock) -> None:
    """vzdump dies at the guest (no TASK line): the op is ``unknown`` (not a success), the
    ``backup`` lock stays, and with no vzdump running the report says ``stale_lock`` naming
    ``pct unlock 100``; no new backup is sent while the lock is there."""
    sim.inject(Fault("backup_crash", vmid=100, count=1))
    rig.want(1, policy_guests({100: "lxc", 101: "qemu"}))
    results = {r.vmid: r for r in rig.results(rig.run_pass())}
    assert results[100].state == "unknown" and results[101].state == "applied"
    assert sim.guest(100)["lock"] == "backup"
    again = rig.run_pass()
    assert again.submitted == ()
    entry = _entry(rig, 100)
    assert entry.status == "stale_lock", entry
    assert "`pct unlock 100`" in entry.reason
    assert len(vzdumps(sim, 100)) == 1 and _volumes(sim, 100) == []
    sim.set_lock(100, None)  # root ran pct unlock
    rig.run_pass()  # the crashed task counts as a failure: the next try waits
    assert len(vzdumps(sim, 100)) == 1
    clock.advance(RETRY_MAX_S + 60)
    rig.run_pass()
    assert len(vzdumps(sim, 100)) == 2 and len(_volumes(sim, 100)) == 1


def test_backups_hidden_by_privileges_are_a_permission_problem(
        clock: ShiftedClock, tmp_path: Path) -> None:
    """The token may not see guest 102's backups: they are not "no backups" -- the policy is
    refused naming the missing privileges, and no backup is attempted, pass after pass."""
    backups = [_old_backup(102, "lxc", 3600, clock), _old_backup(100, "lxc", 3600, clock)]
    with PveSimulator(backup_scenario(local_backups=backups), clock=clock) as sim:
        for rig in _rig(sim, tmp_path, clock, token=HIDING_TOKEN):
            rig.want(1, policy_guests({100: "lxc", 102: "lxc"}))
            for _ in range(3):
                result = rig.run_pass()
                assert result.submitted == ()
            assert result.plan is not None
            [refusal] = result.plan.refused
            assert refusal.vmid == 102 and refusal.reason.startswith(
                "permission: the token lacks VM.Backup on /vms/102")
            view = {e.vmid: e for e in rig.engine.backup_view().entries}
            assert view[102].status == "refused" and "permission" in view[102].reason
            assert view[100].status == "ok" and view[100].count == 1
            assert vzdumps(sim) == []


def test_the_window_wraps_midnight_and_opens_later(
        rig: BackupRig, sim: PveSimulator, clock: ShiftedClock) -> None:
    """A window that wraps midnight and is shut now: the guest waits (``due``, with when
    the window opens, nothing sent); once the clock is inside it, one backup."""
    now = dt.datetime.fromtimestamp(clock(), dt.UTC)
    half_past_ten = now.replace(hour=10, minute=30, second=0, microsecond=0)
    if half_past_ten <= now:
        half_past_ten += dt.timedelta(days=1)
    clock.advance((half_past_ten - now).total_seconds())  # node time (UTC) 10:30
    rig.want(1, policy_guests({100: "lxc"}, window="11:00-09:00"))
    assert rig.run_pass().submitted == ()
    entry = _entry(rig, 100)
    assert entry.status == "due"
    assert entry.reason.startswith("waiting for the window 11:00-09:00, which opens ")
    assert entry.next_due_at is not None
    assert dt.datetime.fromtimestamp(entry.next_due_at, dt.UTC) == half_past_ten.replace(
        hour=11, minute=0)
    assert vzdumps(sim) == []
    clock.advance(3600)
    assert [r.state for r in rig.results(rig.run_pass())] == ["applied"]
    assert len(vzdumps(sim, 100)) == 1


def test_a_backup_of_another_guest_type_with_the_same_vmid_does_not_count(
        clock: ShiftedClock, tmp_path: Path) -> None:
    """A fresh qemu backup of vmid 100 (an older guest of that id) does not make the
    container 100 fresh: it is backed up, and the report counts only its own backups."""
    backups = [_old_backup(100, "qemu", 3600, clock)]
    with PveSimulator(backup_scenario(local_backups=backups), clock=clock) as sim:
        for rig in _rig(sim, tmp_path, clock):
            rig.want(1, policy_guests({100: "lxc"}))
            assert [r.state for r in rig.results(rig.run_pass())] == ["applied"]
            rig.run_pass()
            entry = _entry(rig, 100)
            assert entry.status == "ok" and entry.count == 1
            assert entry.last is not None and "-lxc-100-" in entry.last.volid


def test_a_template_with_a_policy_is_reported_as_a_template(
        clock: ShiftedClock, tmp_path: Path) -> None:
    """Templates are not planned; the report says so (not "not on this node")."""
    tpl = [{"vmid": 150, "type": "qemu", "name": "tpl", "status": "stopped", "template": True,
            "config": {"cores": 1, "memory": 512}}]
    with PveSimulator(backup_scenario(guests=tpl), clock=clock) as sim:
        for rig in _rig(sim, tmp_path, clock):
            rig.want(1, policy_guests({150: "qemu"}))
            assert rig.run_pass().submitted == ()
            entry = _entry(rig, 150)
            assert entry.status == "refused"
            assert entry.reason == "not planned: guest 150 is a template"
            assert vzdumps(sim) == []


# ------------------------------------------------------------------ space


def _old_backup(vmid: int, kind: str, age_s: float, clock: ShiftedClock, **extra: Any
                ) -> dict[str, Any]:
    return {"vmid": vmid, "type": kind, "ctime": int(clock() - age_s), **extra}


def test_full_storage_is_refused_before_any_call(
        clock: ShiftedClock, tmp_path: Path) -> None:
    """The newest backup is 10 GiB, ``local`` has 5 GiB free: the planner refuses the policy
    backup, and a signed backup is ``refused`` by the executor's re-read -- both name the
    numbers, neither sends a vzdump."""
    scenario = backup_scenario(local_backups=[
        _old_backup(100, "lxc", 2 * DAY, clock, size=10 * GIB)])
    with PveSimulator(scenario, clock=clock) as sim:
        sim.set_storage("local", avail=5 * GIB)
        for rig in _rig(sim, tmp_path, clock):
            rig.want(1, policy_guests({100: "lxc"}))
            planned = rig.run_pass()
            assert planned.plan is not None and planned.submitted == ()
            [refusal] = planned.plan.refused
            need = 12 * GIB
            assert refusal.vmid == 100 and refusal.kind == "backup"
            assert f"storage local full: need ~{need} bytes, avail {5 * GIB}" in refusal.reason
            assert _entry(rig, 100).status == "refused"
            assert f"need ~{need} bytes" in _entry(rig, 100).reason
            res = rig.run(100, "backup", {"storage": "local"}, op_id="op-full")
            assert res.state == "refused" and not res.mutated
            assert f"need ~{need} bytes, avail {5 * GIB}" in res.reason
            entry = rig.journal.get("op-full")
            assert entry is not None and entry.outcome is not None
            assert entry.outcome.state is OpState.REFUSED and entry.began_at is None
            assert vzdumps(sim) == []


# ------------------------------------------------------------------ prune


def test_prune_keeps_min_keep_and_protected_and_audits_the_dry_run(
        clock: ShiftedClock, tmp_path: Path) -> None:
    """Policy ``keep.last`` 1 under ``backup.min_keep`` 3: the dry run goes to the audit, the
    prune leaves the three newest unprotected backups and the protected one."""
    ages = [3600, DAY, 2 * DAY, 3 * DAY, 4 * DAY, 5 * DAY]
    backups = [_old_backup(100, "lxc", age, clock, protected=age == 5 * DAY) for age in ages]
    backups.append(_old_backup(101, "qemu", 7 * DAY, clock))  # another guest's: untouched
    with PveSimulator(backup_scenario(local_backups=backups), clock=clock) as sim:
        before = {b["ctime"]: b["volid"] for b in _volumes(sim, 100)}
        for rig in _rig(sim, tmp_path, clock, min_keep=3):
            rig.want(1, policy_guests({100: "lxc"}, keep={"last": 1}))
            result = rig.run_pass()
            assert result.plan is not None
            [action] = result.plan.actions
            assert action.kind == "prune" and dict(action.params)["keep"] == "keep-last=3"
            [res] = rig.results(result)
            assert res.state == "applied", res
            left = {b["volid"]: b["protected"] for b in _volumes(sim, 100)}
            newest = [before[c] for c in sorted(before, reverse=True)]
            assert left == {newest[0]: False, newest[1]: False, newest[2]: False,
                            newest[5]: True}
            assert len(_volumes(sim, 101)) == 1
            dry = [a for a in rig.audit_lines() if a["outcome"] == "dry_run"]
            assert len(dry) == 1 and dry[0]["op_id"] == res.op_id
            removed = set(before.values()) - set(left)
            assert len(removed) == 2
            head, _, tail = dry[0]["reason"].partition(", remove ")
            assert head == "prune dry run on local (keep-last=3): keep 3"
            assert set(tail.split(", ")) == removed
            assert rig.run_pass().submitted == ()


def test_a_policy_backup_is_followed_by_a_prune(clock: ShiftedClock, tmp_path: Path) -> None:
    """Three day-old backups, ``keep.last`` 2: the pass backs the guest up, the next one
    prunes down to the two newest -- the new backup and the youngest old one."""
    backups = [_old_backup(100, "lxc", age, clock) for age in (DAY + 60, 2 * DAY, 3 * DAY)]
    with PveSimulator(backup_scenario(local_backups=backups), clock=clock) as sim:
        youngest = max(_volumes(sim, 100), key=lambda b: b["ctime"])["volid"]
        for rig in _rig(sim, tmp_path, clock, min_keep=1):
            rig.want(1, policy_guests({100: "lxc"}, keep={"last": 2}))
            [made] = rig.results(rig.run_pass())
            assert made.kind == "backup" and made.state == "applied"
            [pruned] = rig.results(rig.run_pass())
            assert pruned.kind == "prune" and pruned.state == "applied", pruned
            new = next(b["volid"] for b in _volumes(sim, 100) if b["volid"] in made.reason)
            assert {b["volid"] for b in _volumes(sim, 100)} == {new, youngest}
            assert rig.run_pass().submitted == ()


def test_prune_never_goes_below_min_keep(clock: ShiftedClock, tmp_path: Path) -> None:
    """Two backups, ``min_keep`` 3, keep.last 1: nothing is planned, nothing pruned."""
    backups = [_old_backup(100, "lxc", age, clock) for age in (3600, DAY)]
    with PveSimulator(backup_scenario(local_backups=backups), clock=clock) as sim:
        for rig in _rig(sim, tmp_path, clock, min_keep=3):
            rig.want(1, policy_guests({100: "lxc"}, keep={"last": 1}))
            result = rig.run_pass()
            assert result.plan is not None and result.plan.actions == ()
            # a prune job anyway (e.g. planned from an older listing) finds nothing to do
            res = rig.run(100, "prune", {"storage": "local", "keep": "keep-last=3"},
                          op_id="op-prune", source="plan:1")
            assert res.state == "applied" and not res.mutated
            assert "nothing to prune" in res.reason
            assert len(_volumes(sim, 100)) == 2
            assert not [t for t in sim.tasks() if t["type"] == "prunebackups"]


# ------------------------------------------------------------------ one volume


def test_delete_and_protect_a_backup(clock: ShiftedClock, tmp_path: Path) -> None:
    """``backup.delete`` of a protected backup is refused (nothing sent); ``backup.protect``
    round-trips; the unprotected backup is then deleted."""
    backups = [_old_backup(100, "lxc", DAY, clock, protected=True)]
    with PveSimulator(backup_scenario(local_backups=backups), clock=clock) as sim:
        [vol] = _volumes(sim, 100)
        volid = vol["volid"]
        for rig in _rig(sim, tmp_path, clock):
            refused = rig.run(100, "backup.delete", {"volid": volid}, op_id="op-del-1")
            assert refused.state == "refused" and "is protected" in refused.reason
            assert not [t for t in sim.tasks() if t["type"] == "imgdel"]
            off = rig.run(100, "backup.protect", {"volid": volid, "protected": False},
                          op_id="op-unprotect")
            assert off.state == "applied", off
            assert _volumes(sim, 100)[0]["protected"] is False
            on = rig.run(100, "backup.protect", {"volid": volid, "protected": True},
                         op_id="op-protect")
            assert on.state == "applied" and _volumes(sim, 100)[0]["protected"] is True
            same = rig.run(100, "backup.protect", {"volid": volid, "protected": True},
                           op_id="op-protect-again")
            assert same.state == "applied" and not same.mutated
            rig.run(100, "backup.protect", {"volid": volid, "protected": False},
                    op_id="op-unprotect-2")
            deleted = rig.run(100, "backup.delete", {"volid": volid}, op_id="op-del-2")
            assert deleted.state == "applied" and deleted.upid is not None, deleted
            assert _volumes(sim, 100) == []
            wrong = rig.run(101, "backup.delete", {"volid": volid}, op_id="op-del-3",
                            guest_type=GuestType.QEMU)
            assert wrong.state == "refused" and "not in the listing" in wrong.reason


def test_an_op_naming_a_storage_that_does_not_exist_is_refused_once(
        rig: BackupRig, sim: PveSimulator) -> None:
    """PVE answers the re-read with a parameter error (no such storage): the op is refused
    and recorded -- not left unrecorded to be sent again and again."""
    res = rig.run(100, "backup", {"storage": "nosuch"}, op_id="op-nowhere")
    assert res.state == "refused" and res.final and "No such storage" in res.reason
    entry = rig.journal.get("op-nowhere")
    assert entry is not None and entry.outcome is not None and entry.began_at is None
    again = rig.run(100, "backup", {"storage": "nosuch"}, op_id="op-nowhere")
    assert again.already_applied and again.state == "refused"
    volid = "nosuch:backup/vzdump-lxc-100-2026_01_01-00_00_00.tar.zst"
    gone = rig.run(100, "backup.delete", {"volid": volid}, op_id="op-nowhere-2")
    assert gone.state == "refused" and gone.final
    assert sim.tasks() == []


# ------------------------------------------------------------------ lost replies


def test_lost_reply_is_resolved_by_the_task_list(rig: BackupRig, sim: PveSimulator) -> None:
    """The vzdump call runs but its reply is lost: the executor finds the task by type, id,
    token and start time, waits on it, and applies -- one task, one volume."""
    sim.inject(Fault("drop_after", path="/nodes/*/vzdump", method="POST", count=1))
    rig.want(1, policy_guests({100: "lxc"}))
    [res] = rig.results(rig.run_pass())
    assert res.state == "applied", res
    [task] = vzdumps(sim, 100)
    assert res.upid == task["upid"]
    [vol] = _volumes(sim, 100)
    assert vol["notes"] == notes_template(res.op_id)
    assert rig.run_pass().submitted == ()


def test_lost_reply_is_resolved_by_the_volume_with_the_op_id(
        rig: BackupRig, sim: PveSimulator, clock: ShiftedClock) -> None:
    """A begun op without a UPID whose task the task list does not show as ours: the
    volume whose notes carry the op id decides -- applied, and no second vzdump."""
    op_id = "plan-1-100-backup-lost"
    dispatch = rig.client.vzdump(100, "local", notes_template=notes_template(op_id))
    assert dispatch.upid is not None
    sim.wait_task(dispatch.upid.raw)
    clock.advance(600)  # the task's start now predates the begin: the task list cannot match
    rig.journal.begin(op_id, 100, "backup", {"storage": "local", "guest_type": "lxc"}, "plan:1")
    res = rig.run(100, "backup", {"storage": "local"}, op_id=op_id, source="plan:1")
    assert res.state == "applied", res
    [vol] = _volumes(sim, 100)
    assert vol["volid"] in res.reason
    assert len(vzdumps(sim, 100)) == 1


def test_lost_reply_is_resolved_by_the_task_list_at_restart(
        sim: PveSimulator, tmp_path: Path, clock: ShiftedClock) -> None:
    """The agent died between the journal begin and the reply: on restart
    ``Engine.recover`` adopts the vzdump task from the task list and the op is applied with
    its volume -- never a second vzdump."""
    op_id = "plan-1-100-backup-crashed"
    for rig in _rig(sim, tmp_path, clock):
        rig.journal.begin(op_id, 100, "backup", {"storage": "local", "mode": "snapshot",
                                                 "guest_type": "lxc"}, "plan:1")
        rig.client.vzdump(100, "local", notes_template=notes_template(op_id))
    for rig in _rig(sim, tmp_path, clock):
        report = rig.engine.recover()
        assert report.adopted == (op_id,) and len(report.handles) == 1
        res = report.handles[0].result(60)
        [task] = vzdumps(sim, 100)
        [vol] = _volumes(sim, 100)
        assert res.state == "applied" and res.upid == task["upid"], res
        assert vol["volid"] in res.reason and vol["notes"] == notes_template(op_id)
        rig.want(1, policy_guests({100: "lxc"}))
        assert rig.run_pass().submitted == ()
        assert len(vzdumps(sim, 100)) == 1


@pytest.mark.parametrize("kind", ["prune", "backup.delete"])
def test_lost_reply_of_a_storage_task_is_found_by_its_id(
        kind: str, clock: ShiftedClock, tmp_path: Path) -> None:
    """A prune or a delete whose reply is lost: its task (id ``<vmid>@<storage>``, not the
    vmid) is found in the task list and waited on -- one task, applied."""
    backups = [_old_backup(100, "lxc", age, clock) for age in (3600, DAY, 2 * DAY, 3 * DAY)]
    with PveSimulator(backup_scenario(local_backups=backups), clock=clock) as sim:
        oldest = min(_volumes(sim, 100), key=lambda b: b["ctime"])["volid"]
        path, method, task_type = (
            ("/nodes/*/storage/*/prunebackups", "DELETE", "prunebackups") if kind == "prune"
            else ("/nodes/*/storage/*/content/*", "DELETE", "imgdel"))
        sim.inject(Fault("drop_after", path=path, method=method, count=1))
        params = ({"storage": "local", "keep": "keep-last=2"} if kind == "prune"
                  else {"volid": oldest})
        for rig in _rig(sim, tmp_path, clock):
            res = rig.run(100, kind, params, op_id="op-lost", source="plan:1")
            [task] = [t for t in sim.tasks() if t["type"] == task_type]
            assert task["id"] == "100@local"
            assert res.state == "applied" and res.upid == task["upid"], res
            assert len(_volumes(sim, 100)) == (2 if kind == "prune" else 3)


# ------------------------------------------------------------------ the queue's backup limit


def test_one_backup_at_a_time_while_other_guests_flow(
        rig: BackupRig, sim: PveSimulator) -> None:
    """Two guests due, ``max_concurrent`` 1: PVE sees one vzdump at a time (none ever waits
    for PVE's global lock), and a start of a third guest finishes while a backup runs."""
    sim.set_backup(100, duration_s=3600)
    sim.set_backup(101, duration_s=3600)
    guests = policy_guests({100: "lxc", 101: "qemu"})
    guests["102"] = {"type": "lxc", "state": "running"}
    rig.want(1, guests)
    result = rig.engine.run_pass()
    assert result.plan is not None and len(result.submitted) == 3
    handle = {(a.vmid, a.kind): h
              for a, h in zip(result.plan.actions, result.submitted, strict=True)}
    start = handle[(102, "start")]
    # the lanes are served in submit order: 100's backup takes the one slot, 101's waits
    assert sim.wait_lock(100, "backup", timeout=30)
    assert start.result(30).state == "applied"
    assert [(t["id"], t["status"]) for t in vzdumps(sim)] == [("100", "running")]
    assert not handle[(101, "backup")].done()
    sim.release_tasks()
    assert sim.wait_lock(101, "backup", timeout=30)
    assert [t["id"] for t in vzdumps(sim)] == ["100", "101"]
    sim.release_tasks()
    states = [h.result(60).state for h in result.submitted]
    assert states == ["applied"] * 3
    for task in vzdumps(sim):
        assert not any("trying to get global lock" in line for line in task["log"]), task


def test_the_prune_and_delete_task_id_is_read_from_any_mapping() -> None:
    """Recovery hands the journal's (read-only) params: the ``<vmid>@<storage>`` id must not
    depend on them being a plain dict."""
    from types import MappingProxyType

    from felhom_agent.kinds.registry import task_id

    assert task_id("prune", 101, MappingProxyType({"storage": "local"})) == "101@local"
    assert task_id("backup.delete", 101,
                   MappingProxyType({"volid": "pbs1:backup/ct/101/x"})) == "101@pbs1"
