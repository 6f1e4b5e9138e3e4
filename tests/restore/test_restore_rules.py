"""The restore kind's pure rules: the root disk's storage, the gate's steps, the safety notes,
and the report entries built from journal entries (``docs/architecture.md``, "Restore")."""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from felhom_agent.authz.envelope import SignedOp
from felhom_agent.backup.notes import (
    SAFETY_BACKUP_SUFFIX,
    find_op_backup,
    notes_template,
    op_id_in_notes,
)
from felhom_agent.execution.executor import JobSpec
from felhom_agent.execution.restore_view import restore_entries
from felhom_agent.kinds.classify import classify_op
from felhom_agent.kinds.model import GuestFacts, Observed, Reversibility, Safety
from felhom_agent.kinds.registry import lookup
from felhom_agent.kinds.restore_handlers import archived_root_storage, restored
from felhom_agent.proxmox.backup_models import BackupVolume
from felhom_agent.proxmox.models import GuestStatus, GuestType, TaskStatus
from felhom_agent.proxmox.upid import parse_upid
from felhom_agent.signedops.gate import GateRefused, check_op, plan_steps
from felhom_agent.state.journal import Journal, JournalEntry, OpState, Outcome

OP_ID = "0b9f3c2a-1d4e-4f00-8a6b-123456789abc"
T0 = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
ARCHIVE = "local:backup/vzdump-lxc-102-2026_11_25-01_00_00.tar.zst"
UPID = "UPID:pve1:00001234:00005678:6745A0B0:vzrestore:102:felhom@pve!agent:"


def _op(params: dict[str, Any], vmid: int = 102) -> SignedOp:
    return SignedOp(op_id=OP_ID, host_id="pve1", kind="guest.restore", vmid=vmid,
                    params=params, irreversible=False, nonce="0" * 32, issued_at=T0,
                    expires_at=T0 + timedelta(minutes=10))


def _resolved(**extra: Any) -> dict[str, Any]:
    """Params as the kind's gate reads leave them (storage and safety storage resolved)."""
    return {"archive": ARCHIVE, "target_vmid": 102, "storage": "local-lvm",
            "safety_storage": "local", **extra}


def _guest(*, exists: bool = True, running: bool = False,
           protected: bool = False) -> GuestFacts:
    return GuestFacts(102, GuestType.LXC, running=running, protected=protected, exists=exists)


def _steps(params: dict[str, Any], guest: GuestFacts,
           journalled: frozenset[str] = frozenset()) -> list[tuple[str, str, dict[str, Any]]]:
    signed = {k: v for k, v in params.items() if k not in ("safety_storage",)}
    o = _op(signed)
    return [(s.purpose, s.kind, dict(s.params))
            for s in plan_steps(o, check_op(o), guest, journalled, params)]


# ------------------------------------------------------------------ the registry and the class


def test_restore_is_destructive_made_reversible_by_a_safety_backup() -> None:
    """The registry's restore: destructive, SAFETY_BACKUP, no ``irreversible`` needed; its
    tasks are vzrestore/qmrestore with the target vmid as id (the common recovery rule)."""
    verdict = classify_op("guest.restore")
    assert (verdict.safety, verdict.reversibility) == (Safety.DESTRUCTIVE,
                                                      Reversibility.SAFETY_BACKUP)
    kind = lookup("guest.restore")
    assert kind.task_types == frozenset({"vzrestore", "qmrestore"})
    assert kind.pve_task_id(150, {}) == "150"
    assert kind.gate_read is not None and kind.observe is not None
    assert not kind.plan_action and kind.signed == "guest.restore"


@pytest.mark.parametrize(("params", "why"), [
    ({}, "archive is required"),
    ({"archive": ARCHIVE, "target_vmid": "150"}, "target_vmid must be an integer"),
    ({"archive": ARCHIVE, "start": 1}, "start must be true/false"),
    ({"archive": ARCHIVE, "force": True}, "unknown key(s) force"),
])
def test_params_are_checked_strictly(params: dict[str, Any], why: str) -> None:
    """Unknown keys and wrong types refuse the op before anything is read (``force`` is the
    gate's to decide, never the signer's)."""
    with pytest.raises(GateRefused, match=re.escape(why)):
        check_op(_op(params))


# ------------------------------------------------------------------ the gate's steps


def test_a_free_target_is_the_restore_alone() -> None:
    """Into a free vmid: no safety backup, no force; the gate-only params are not sent."""
    assert _steps(_resolved(unique=True), _guest(exists=False)) == [
        ("op", "restore", {"archive": ARCHIVE, "storage": "local-lvm", "unique": True})]


def test_an_existing_target_gets_the_safety_backup_then_force() -> None:
    """Over a stopped guest: the protected safety backup step, then the restore with force."""
    assert _steps(_resolved(start=True), _guest()) == [
        ("safety-backup", "backup", {"storage": "local", "protected": True,
                                     "restore_archive": ARCHIVE}),
        ("op", "restore", {"archive": ARCHIVE, "storage": "local-lvm", "start": True,
                           "force": True})]


def test_a_running_target_needs_stop_first_and_a_protected_one_is_refused() -> None:
    """Running: refused without ``stop_first``, else stop -> safety backup -> restore.
    Protected: refused whatever the params say."""
    with pytest.raises(GateRefused, match="guest 102 is running"):
        _steps(_resolved(), _guest(running=True))
    assert [p for p, _, _ in _steps(_resolved(stop_first=True), _guest(running=True))] == [
        "stop-first", "safety-backup", "op"]
    with pytest.raises(GateRefused, match="is protected"):
        _steps(_resolved(stop_first=True), _guest(protected=True))


def test_a_resumed_op_keeps_its_journalled_stop_step() -> None:
    """Accepted before a restart, its stop already begun: the stop step stays first even
    though the guest now reads stopped (it is resumed, never sent twice)."""
    journalled = frozenset({OP_ID + ".stop-first", OP_ID + SAFETY_BACKUP_SUFFIX})
    assert [p for p, _, _ in _steps(_resolved(stop_first=True), _guest(), journalled)] == [
        "stop-first", "safety-backup", "op"]


# ------------------------------------------------------------------ the archived config


@pytest.mark.parametrize(("gtype", "text", "storage"), [
    (GuestType.LXC, "arch: amd64\nrootfs: fast-zfs:subvol-102-disk-0,size=8G\n", "fast-zfs"),
    (GuestType.LXC, "rootfs: volume=nvme:vm-1-disk-0,size=1G\nmp0: big:vm-1-disk-1\n", "nvme"),
    (GuestType.QEMU, "boot: order=ide2;virtio1;net0\nide2: local:iso/x.iso,media=cdrom\n"
                     "scsi0: a-lvm:vm-1-disk-0\nvirtio1: b-lvm:vm-1-disk-1\n", "b-lvm"),
    (GuestType.QEMU, "bootdisk: sata1\nsata1: c-dir:101/vm-101-disk-0.qcow2\n", "c-dir"),
    (GuestType.QEMU, "ide0: none,media=cdrom\nvirtio0: d-lvm:vm-1-disk-0,size=4G\n", "d-lvm"),
    (GuestType.QEMU, "scsi0: e-lvm:vm-1-disk-0\n\n[snap1]\nscsi0: old:vm-1-disk-0\n", "e-lvm"),
    (GuestType.LXC, "#rootfs: fake:vm-1\nhostname: x\n", None),
    (GuestType.QEMU, "scsi0: /dev/disk/by-id/ata-1\n", None),
])
def test_root_disk_storage_of_an_archived_config(gtype: GuestType, text: str,
                                                 storage: str | None) -> None:
    """A container's rootfs; a VM's first boot disk on a storage (never a CD-ROM, a raw
    device or a snapshot section)."""
    assert archived_root_storage(gtype, text) == storage


# ------------------------------------------------------------------ the safety notes


def test_a_safety_backup_is_found_by_its_step_op_id() -> None:
    """One notes format: the safety step's notes carry the word ``safety`` and its own op id,
    the parser reads both spellings, and the step finds its volume by that id."""
    step = OP_ID + SAFETY_BACKUP_SUFFIX
    assert notes_template(step) == f"felhom safety op={step}"
    assert notes_template(OP_ID) == f"felhom op={OP_ID}"
    assert op_id_in_notes(notes_template(step)) == step
    assert op_id_in_notes(f"kept by hand; {notes_template(step)}") == step
    vol = BackupVolume(volid="local:backup/vzdump-lxc-102-x.tar.zst", storage="local",
                       vmid=102, subtype=GuestType.LXC, format="tar.zst", size=1, ctime=100,
                       notes=notes_template(step), protected=True, encrypted=None,
                       verification=None, verification_upid=None)
    found = find_op_backup([vol], op_id=step, vmid=102, guest_type="lxc", storage="local")
    assert found is not None and found.by == "notes"
    assert find_op_backup([vol], op_id=OP_ID, vmid=102, guest_type="lxc",
                          storage="local", dispatched_at=50) is None


# ------------------------------------------------------------------ done, and the report


def _obs(*, exitstatus: str | None = "OK", lock: str | None = None, status: str = "stopped",
         since: float | None = 10.0, exists: bool = True) -> Observed:
    task = None if exitstatus is None else TaskStatus(parse_upid(UPID), "stopped", exitstatus)
    guest = GuestStatus(102, GuestType.LXC, status, "x", lock, False, None, False, 0)
    return Observed(status=guest if exists else None, since=since, task=task)


def test_done_is_the_restores_own_task_and_the_target_unlocked() -> None:
    """A restore is never done before it was sent; after, only its own task ending OK (or
    with warnings) with the target present, unlocked, and running when asked."""
    job = JobSpec(OP_ID, 102, GuestType.LXC, "restore", {"archive": ARCHIVE})
    started = JobSpec(OP_ID, 102, GuestType.LXC, "restore", {"archive": ARCHIVE,
                                                             "start": True})
    assert restored(job, _obs())
    assert restored(job, _obs(exitstatus="WARNINGS: 1"))
    assert not restored(job, _obs(since=None))
    assert not restored(job, _obs(exitstatus=None))
    assert not restored(job, _obs(exitstatus="unable to restore CT 102 - can't overwrite running "
                                       "container"))
    assert not restored(job, _obs(lock="create"))
    assert not restored(job, _obs(exists=False))
    assert not restored(started, _obs())
    assert restored(started, _obs(status="running"))


def _entry(op_id: str, kind: str, params: dict[str, Any], *, state: OpState | None,
           reason: str = "", vmid: int = 102, began: bool = True,
           upid: str | None = None) -> JournalEntry:
    outcome = None if state is None else Outcome(op_id, state, reason, None, 1000.0)
    return JournalEntry(op_id, vmid, kind, params, "alice@ops", 900.0 if began else None,
                        upid=upid, outcome=outcome)


def test_report_entries_fold_the_op_and_its_safety_backup() -> None:
    """One entry per restore: the safety backup's volid from its step's applied outcome; a
    refused op's archive and target from the params kept with its record; while only the
    safety backup is journalled the restore is running; reconciler entries are not
    restores."""
    step = "op-a" + SAFETY_BACKUP_SUFFIX
    volid = "local:backup/vzdump-lxc-102-2026_11_26-10_00_00.tar.zst"
    entries = [
        _entry(step, "backup", {"storage": "local", "restore_archive": ARCHIVE},
               state=OpState.APPLIED, reason=f"backup {volid} (1073741824 bytes)"),
        _entry("op-a", "restore", {"archive": ARCHIVE, "force": True}, state=OpState.APPLIED,
               reason="restored", upid=UPID),
        _entry("op-b", "restore", {"archive": ARCHIVE, "target_vmid": 150},
               state=OpState.REFUSED, reason="guest.restore refused: x", began=False),
        _entry("op-c" + SAFETY_BACKUP_SUFFIX, "backup",
               {"storage": "local", "restore_archive": ARCHIVE}, state=None, vmid=101),
        _entry("plan-1-102-backup-x", "backup", {"storage": "local"}, state=OpState.APPLIED),
    ]
    out = {e.op_id: e.to_dict() for e in restore_entries(entries)}
    assert list(out) == ["op-c", "op-a", "op-b"]
    assert out["op-a"] == {"op_id": "op-a", "vmid": 102, "archive": ARCHIVE,
                           "state": "applied", "safety_backup": volid, "upid": UPID,
                           "finished_at": "1970-01-01T00:16:40Z", "reason": "restored"}
    assert (out["op-b"]["vmid"], out["op-b"]["state"], out["op-b"]["archive"]) == (
        150, "refused", ARCHIVE)
    assert (out["op-c"]["vmid"], out["op-c"]["state"], out["op-c"]["safety_backup"]) == (
        101, "running", None)


def test_a_decided_record_keeps_the_ops_params_across_reopen_and_compaction(
        tmp_path: Path) -> None:
    """A refused restore's params (its archive, its target) stay with its one outcome record:
    replayed after a restart and rewritten by a compaction; an old record without params
    still reads as before."""
    log = logging.getLogger("test.restore.journal")
    params = {"archive": ARCHIVE, "target_vmid": 150}
    with Journal.open(tmp_path, clock=lambda: 1000.0, logger=log) as journal:
        journal.record_decided("op-r", vmid=102, kind="restore", source="alice@ops",
                               state=OpState.REFUSED, reason="no", params=params)
        journal.record_decided("op-s", vmid=102, kind="start", source="alice@ops",
                               state=OpState.APPLIED, reason="already")
    with Journal.open(tmp_path, clock=lambda: 1001.0, logger=log) as journal:
        entry = journal.get("op-r")
        assert entry is not None and dict(entry.params) == params and entry.began_at is None
        journal.compact(3600.0)
    with Journal.open(tmp_path, clock=lambda: 1002.0, logger=log) as journal:
        entry, plain = journal.get("op-r"), journal.get("op-s")
        assert entry is not None and dict(entry.params) == params
        assert entry.source == "alice@ops" and not entry.damaged
        assert plain is not None and dict(plain.params) == {} and not plain.damaged
