"""Signed restores through the daemon program (a child process) and the simulators.

What the tests see is what an operator sees: the reports the hub receives (``ops`` and
``restore``), the guests, tasks and backup volumes on the node, and the audit log.
"""

from __future__ import annotations

from typing import Any

from felhom_agent.backup.notes import SAFETY_BACKUP_SUFFIX, notes_template
from felhom_agent.sim.pve import Fault
from tests.phaseb.harness import TIMEOUT, Harness
from tests.phaseb.signing import op_payload
from tests.restore.conftest import MakeHarness
from tests.restore.rig import audit_lines, backup_of, restore_entries, restore_scenario, tasks_of
from tests.support.daemon import wait_report


def _entry(h: Harness, op_id: str) -> dict[str, Any]:
    """The newest report's ``restore`` entry of ``op_id`` once it is not running."""
    body = wait_report(h.hub, lambda b: restore_entries(b).get(op_id, {}).get("state")
                       not in (None, "running"), TIMEOUT, child=h.child)
    return restore_entries(body)[op_id]


def _types(h: Harness, vmid: int) -> list[str]:
    return [t["type"] for t in tasks_of(h.pve, vmid)]


def _safety_backups(h: Harness, vmid: int) -> list[dict[str, Any]]:
    return [b for b in h.pve.backups() if b["vmid"] == vmid
            and (b["notes"] or "").startswith("felhom safety op=")]


def _audit(h: Harness, op_id: str) -> list[tuple[str, str, str]]:
    """``(op id, kind, outcome)`` of every audit line of ``op_id`` and its steps."""
    return [(a["op_id"], a["kind"], a["outcome"]) for a in audit_lines(h)
            if a["op_id"].startswith(op_id)]


# ------------------------------------------------------------------ into a free vmid


def test_restore_into_a_free_vmid_is_additive(make_harness: MakeHarness) -> None:
    """102's backup into 150: restored (the archived config, its disk on the archived root
    disk's storage -- PVE's container default ``local`` cannot hold it --, new MACs), no
    safety backup, no other guest touched; the report's restore entry and the audit say so."""
    h = make_harness()
    archive = backup_of(h.pve, 102)
    before = h.pve.guest(102)
    op_id = h.deliver(op_payload("guest.restore", 102, {
        "archive": archive, "target_vmid": 150, "unique": True}))
    h.start()
    assert h.wait_reported([op_id])[op_id]["state"] == "applied"
    entry = _entry(h, op_id)
    guest = h.pve.guest(150)
    assert (guest["type"], guest["lock"], guest["status"]) == ("lxc", None, "stopped")
    assert guest["config"]["hostname"] == "restored-102"
    assert guest["config"]["rootfs"].startswith("local-lvm:vm-150-disk-")
    assert "BC:24:11:AA:01:02" not in guest["config"]["net0"]
    [task] = tasks_of(h.pve, 150)
    assert (task["type"], task["exitstatus"]) == ("vzrestore", "OK")
    assert [t["type"] for t in h.pve.tasks()] == ["vzrestore"]
    assert h.pve.guest(102) == before
    assert entry == {"op_id": op_id, "vmid": 150, "archive": archive, "state": "applied",
                     "safety_backup": None, "upid": task["upid"],
                     "finished_at": entry["finished_at"], "reason": entry["reason"]}
    assert entry["finished_at"] and entry["reason"].startswith(f"restored {archive} into lxc 150")
    assert _audit(h, op_id) == [(op_id, "restore", "applied")]
    assert h.stop() == 0


# ------------------------------------------------------------------ over an existing guest


def test_restore_over_a_stopped_guest_takes_a_protected_safety_backup_first(
        make_harness: MakeHarness) -> None:
    """102 is restored over: first a protected safety backup of it, found in the listing by
    its step op id, then the restore with force; the old config is gone, the archived one is
    there, and the guest runs (``start``). The report names the safety backup."""
    h = make_harness()
    archive = backup_of(h.pve, 102)
    op_id = h.deliver(op_payload("guest.restore", 102, {"archive": archive, "start": True}))
    h.start()
    assert h.wait_reported([op_id])[op_id]["state"] == "applied", h.log()
    entry = _entry(h, op_id)
    [safety] = _safety_backups(h, 102)
    step = op_id + SAFETY_BACKUP_SUFFIX
    assert safety["notes"] == notes_template(step) == f"felhom safety op={step}"
    assert safety["protected"] is True and safety["volid"].startswith("local:backup/")
    assert "before the restore" in safety["config"]  # the guest as it was
    guest = h.pve.guest(102)
    assert guest["status"] == "running" and guest["lock"] is None
    assert "description" not in guest["config"]
    assert guest["config"]["hostname"] == "restored-102" and guest["config"]["memory"] == 768
    dump, restore = tasks_of(h.pve, 102)
    assert (dump["type"], dump["exitstatus"], restore["type"], restore["exitstatus"]) == (
        "vzdump", "OK", "vzrestore", "OK")
    assert entry["state"] == "applied" and entry["safety_backup"] == safety["volid"]
    assert entry["upid"] == restore["upid"] and entry["archive"] == archive
    assert _audit(h, op_id) == [(step, "backup", "applied"), (op_id, "restore", "applied")]
    assert h.stop() == 0


def test_restore_over_a_running_container_stops_it_first(make_harness: MakeHarness) -> None:
    """100 runs: with ``stop_first`` a journalled stop, the safety backup, the restore; the
    guest stays stopped (no ``start``)."""
    h = make_harness()
    archive = backup_of(h.pve, 100)
    op_id = h.deliver(op_payload("guest.restore", 100, {"archive": archive,
                                                        "stop_first": True}))
    h.start()
    assert h.wait_reported([op_id])[op_id]["state"] == "applied", h.log()
    assert _types(h, 100) == ["vzstop", "vzdump", "vzrestore"]
    guest = h.pve.guest(100)
    assert guest["status"] == "stopped" and guest["config"]["hostname"] == "restored-100"
    [safety] = _safety_backups(h, 100)
    assert _entry(h, op_id)["safety_backup"] == safety["volid"]
    assert [k for _, k, _ in _audit(h, op_id)] == ["stop", "backup", "restore"]
    assert h.stop() == 0


def test_vm_restore_with_a_configured_safety_storage(make_harness: MakeHarness) -> None:
    """A VM (101, snapshot ``initial``) restored over with ``backup.safety_storage`` pbs1: the
    safety backup goes there (protected), the disk to the archived root disk's storage, the
    snapshots are gone with the old guest."""
    h = make_harness(backup={"safety_storage": "pbs1"})
    archive = backup_of(h.pve, 101)
    op_id = h.deliver(op_payload("guest.restore", 101, {"archive": archive}))
    h.start()
    assert h.wait_reported([op_id])[op_id]["state"] == "applied", h.log()
    [safety] = _safety_backups(h, 101)
    assert safety["volid"].startswith("pbs1:backup/vm/101/") and safety["protected"] is True
    guest = h.pve.guest(101)
    assert guest["config"]["name"] == "restored-101" and guest["snapshots"] == {}
    assert guest["config"]["scsi0"].startswith("local-lvm:vm-101-disk-")
    assert _types(h, 101) == ["vzdump", "qmrestore"]
    assert _entry(h, op_id)["safety_backup"] == safety["volid"]
    assert h.stop() == 0


# ------------------------------------------------------------------ refusals and failures


def test_refusals_are_reported_and_audited_and_nothing_runs(make_harness: MakeHarness) -> None:
    """An archive not in the listing, an archive of the other guest type, a running guest
    without ``stop_first``, a protected guest, a vmid taken elsewhere: each refused with its
    reason in ``ops``, in ``restore`` (with the archive) and in the audit log; PVE ran
    nothing."""
    h = make_harness(restore_scenario(other_node_guests=[{"vmid": 300, "node": "pve2"}]))
    missing = "local:backup/vzdump-lxc-102-2020_01_01-00_00_00.tar.zst"
    vm_archive, ct_archive = backup_of(h.pve, 101), backup_of(h.pve, 102)
    cases = {
        h.deliver(op_payload("guest.restore", 102, {"archive": missing})):
            (missing, f"archive {missing} is not in the content listing of local"),
        h.deliver(op_payload("guest.restore", 102, {"archive": vm_archive})):
            (vm_archive, f"archive {vm_archive} is a qemu backup, but guest 102 is lxc"),
        h.deliver(op_payload("guest.restore", 100, {"archive": backup_of(h.pve, 100)})):
            (backup_of(h.pve, 100), "guest 100 is running (set params.stop_first: true"),
        h.deliver(op_payload("guest.restore", 106, {"archive": backup_of(h.pve, 106)})):
            (backup_of(h.pve, 106), "guest 106 is protected (protection: 1)"),
        h.deliver(op_payload("guest.restore", 102, {"archive": ct_archive,
                                                    "target_vmid": 300})):
            (ct_archive, "vmid 300 is taken, but not by a guest on node pve1"),
    }
    h.start()
    found = h.wait_reported(list(cases))
    body = wait_report(h.hub, lambda b: set(cases) <= set(restore_entries(b)), TIMEOUT,
                       child=h.child)
    entries = restore_entries(body)
    audit = {a["op_id"]: a for a in audit_lines(h)}
    for op_id, (archive, reason) in cases.items():
        assert found[op_id]["state"] == "refused", found[op_id]
        assert reason in found[op_id]["reason"], found[op_id]
        assert found[op_id]["reason"].startswith("guest.restore refused: ")
        entry = entries[op_id]
        assert (entry["state"], entry["archive"], entry["safety_backup"], entry["upid"]) == (
            "refused", archive, None, None)
        assert entry["reason"] == found[op_id]["reason"]
        assert (audit[op_id]["outcome"], audit[op_id]["reason"]) == ("refused", entry["reason"])
    assert entries[next(iter(cases))]["vmid"] == 102
    assert [e["vmid"] for e in entries.values() if "vmid 300" in e["reason"]] == [300]
    assert h.pve.tasks() == []
    assert h.stop() == 0


def test_a_failed_safety_backup_leaves_the_guest_untouched(make_harness: MakeHarness) -> None:
    """The safety backup of 102 fails inside vzdump: the restore is not sent, the guest keeps
    its config, the op is failed with the backup's own error line."""
    h = make_harness()
    h.pve.inject(Fault(kind="backup_fail", vmid=102, message="disk read error"))
    before = h.pve.guest(102)["config"]
    op_id = h.deliver(op_payload("guest.restore", 102, {"archive": backup_of(h.pve, 102)}))
    h.start()
    result = h.wait_reported([op_id])[op_id]
    assert result["state"] == "failed"
    assert result["reason"].startswith("guest.restore refused") is False
    assert "safety backup to local failed" in result["reason"]
    assert "disk read error" in result["reason"] and "was not run" in result["reason"]
    assert _types(h, 102) == ["vzdump"]
    assert h.pve.guest(102)["config"] == before and _safety_backups(h, 102) == []
    entry = _entry(h, op_id)
    assert (entry["state"], entry["safety_backup"], entry["upid"]) == ("failed", None, None)
    assert h.stop() == 0
