"""``--demo``: the daemon converges the simulated node and the account says how."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from felhom_agent.cli._demo import demo_command
from felhom_agent.cli._demo_signer import DemoSigner, SigningFailed, SshKeygenMissing

REFUSAL = {"vmid": 101, "kind": "set_config", "reason": "destructive key: memory"}
#: 102's policy backup to the nearly full usb-backup (1 GiB free; its last backup there is
#: 2 GiB, and 2 GiB + 20 % is 2576980378 bytes).
FULL = "storage usb-backup full: need ~2576980378 bytes, avail 1073741824 (newest backup "


def test_demo_converges_and_prints_account() -> None:
    """The text account shows the plan, the signed rollback behind its safety snapshot, the
    refused memory change, each action with its UPID, the policy backup found and reported,
    the backup refused for lack of space, and the final state."""
    out = io.StringIO()
    assert demo_command(out=out) == 0
    text = out.getvalue()
    assert "plan for generation 1: 5 action(s), 0 blocked, 2 refused" in text
    assert '1001  provision  name="c42-web", storage="local-lvm", template=9000' in text
    assert '100  backup  mode="snapshot", storage="local"' in text
    assert ":qmstart:101:" in text and ":vzstop:102:" in text
    assert "description: 'web frontend (managed by felhom)'" in text
    # the signed op: what it is, its two tasks with UPIDs in order, its reported state
    assert ('guest.rollback  vmid 103  params {"snapname": "before-upgrade", "start": true}  '
            "signer demo-operator@felhom") in text
    snap_at = text.index("1. safety-snapshot  qmsnapshot felhom-pre-")
    roll_at = text.index("2. op               qmrollback before-upgrade")
    assert snap_at < roll_at
    assert ":qmsnapshot:103:" in text and ":qmrollback:103:" in text
    assert "reported applied" in text
    # the unsigned destructive change: refused with the report's reason, memory unchanged
    assert "101  set_config  refused: destructive key: memory" in text
    assert "guest 101 memory: 4096 MB before, 4096 MB after" in text
    # the policy backup: one vzdump task, found by the op id in its notes, reported with its volid
    assert ":vzdump:100:" in text
    assert ("found in the listing by its notes 'felhom op=plan-1-100-backup-" in text
            and "': local:backup/vzdump-lxc-100-" in text)
    backups = text[text.index("backups (the report's backup entries):"):]
    assert "   100  lxc   ok        local       last local:backup/vzdump-lxc-100-" in backups
    assert "2 backup(s)" in backups
    # the refused one: the space reason in the refusals and the report, and no vzdump task
    assert "102  backup      refused: " + FULL in text
    assert "   102  lxc   refused   usb-backup  last usb-backup:backup/vzdump-lxc-102-" in backups
    assert "vzdump tasks started for 102: 0 (refused before any call)" in text
    assert ":vzdump:102:" not in text
    # provisioning: the clone task names the template; the next pass describes and starts 1001
    assert ":vzclone:9000:" in text and ":vzstart:1001:" in text
    assert "1001  applied: lxc 1001 'c42-web' cloned from template 9000" in text
    assert "'c42-web' running, description 'customer 42'" in text
    assert "converged in" in text and "daemon exit status 0" in text


@pytest.fixture(scope="module")
def demo_doc() -> dict[str, Any]:
    """One ``--demo --json`` run, shared by the tests that read its document."""
    out = io.StringIO()
    assert demo_command(out=out, as_json=True) == 0
    doc: dict[str, Any] = json.loads(out.getvalue())
    return doc


def test_demo_json(demo_doc: dict[str, Any]) -> None:
    """--json prints one document: converged, the plan, the applied actions, the signed op
    applied after its safety snapshot (the simulator's own task order), the refusal and the
    final state."""
    doc = demo_doc
    assert doc["converged"] is True and doc["daemon_exit"] == 0
    assert sorted((a["vmid"], a["kind"], a["outcome"]) for a in doc["actions"]) == [
        (100, "backup", "applied"), (100, "set_config", "applied"), (101, "start", "applied"),
        (102, "stop", "applied"), (1001, "provision", "applied"),
        (1001, "set_config", "applied"), (1001, "start", "applied")]
    final = {r["vmid"]: r for r in doc["final"]}
    assert {v: r["status"] for v, r in final.items()} == {
        100: "running", 101: "running", 102: "stopped", 103: "running"}
    assert doc["plan"]["generation"] == 1 and len(doc["plan"]["actions"]) == 5
    assert doc["plan"]["refused"][0] == REFUSAL
    assert [(r["vmid"], r["kind"], r["reason"][:len(FULL)]) for r in doc["plan"]["refused"][1:]
            ] == [(102, "backup", FULL)]

    op = doc["signed_op"]
    assert (op["kind"], op["vmid"], op["signer"], op["state"]) == (
        "guest.rollback", 103, "demo-operator@felhom", "applied")
    assert op["safety_snapshot"] == "felhom-pre-" + op["op_id"].replace("-", "")[:8]
    assert [(s["purpose"], s["task_type"], s["outcome"], s["source"]) for s in op["steps"]] == [
        ("safety-snapshot", "qmsnapshot", "applied", "demo-operator@felhom"),
        ("op", "qmrollback", "applied", "demo-operator@felhom")]
    assert op["upid"] == op["steps"][1]["upid"]
    tasks_103 = [(t["type"], t["exitstatus"], t["upid"]) for t in doc["pve_tasks"]
                 if t["id"] == "103"]
    assert tasks_103 == [("qmsnapshot", "OK", op["steps"][0]["upid"]),
                         ("qmrollback", "OK", op["steps"][1]["upid"])]
    assert final[103]["snapshots"] == sorted(["before-upgrade", op["safety_snapshot"]])
    assert final[103]["cores"] == 1  # the config of before-upgrade is back

    assert doc["refused"][0] == REFUSAL
    assert [(r["vmid"], r["kind"], r["reason"][:len(FULL)]) for r in doc["refused"][1:]] == [
        (102, "backup", FULL)]
    assert doc["refused_memory"] == {"vmid": 101, "before": "4096", "after": "4096",
                                     "desired": 8192}
    assert final[101]["memory"] == "4096"
    assert [t["id"] for t in doc["pve_tasks"]].count("101") == 1  # qmstart only, no qmconfig


def test_demo_without_ssh_keygen_fails_with_one_line(tmp_path: Path) -> None:
    """Without ssh-keygen on PATH the demo exits 1 with one line naming openssh-client."""
    result = subprocess.run([sys.executable, "-m", "felhom_agent", "--demo"],
                            env={"PATH": str(tmp_path)}, capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "openssh-client" in lines[0], result.stderr


def test_signer_missing_tool_is_an_error_not_a_fake(tmp_path: Path) -> None:
    """DemoSigner.create raises SshKeygenMissing (a FileNotFoundError) and writes no key."""
    with pytest.raises(SshKeygenMissing, match="openssh-client") as caught:
        DemoSigner.create(tmp_path / "op", "x@y", which=lambda _name: None)
    assert isinstance(caught.value, FileNotFoundError)
    assert not (tmp_path / "op").exists()


def test_signer_failing_tool_reports_exit_status(tmp_path: Path) -> None:
    """A key generator that exits non-zero (real /bin/false) raises SigningFailed with it."""
    with pytest.raises(SigningFailed, match=r"key generation failed \(exit 1\)"):
        DemoSigner.create(tmp_path / "op", "x@y", which=lambda _name: "/bin/false")


def test_demo_policy_backup_found_and_reported_and_full_storage_refused(
        demo_doc: dict[str, Any]) -> None:
    """Guest 100's due policy backup runs as exactly one vzdump task; done means found: the new
    volume carries the op id in its notes and the report's ``backup`` entry names its volid.
    Guest 102's backup to the nearly full usb-backup is refused with the space reason, in the
    report, and PVE never saw a vzdump task for it (its storage is unchanged)."""
    doc = demo_doc
    (action,) = [a for a in doc["actions"] if a["kind"] == "backup"]
    assert (action["vmid"], action["outcome"]) == (100, "applied")
    vzdumps = [t for t in doc["pve_tasks"] if t["type"] == "vzdump"]
    assert [(t["id"], t["exitstatus"], t["upid"]) for t in vzdumps] == [
        ("100", "OK", action["upid"])]

    new = [v for v in doc["volumes"] if v["notes"] == f"felhom op={action['op_id']}"]
    assert len(new) == 1 and new[0]["vmid"] == 100
    volid = new[0]["volid"]
    assert volid.startswith("local:backup/vzdump-lxc-100-") and volid.endswith(".tar.zst")
    assert action["reason"] == f"backup {volid} ({new[0]['size']} bytes)"

    entries = {e["vmid"]: e for e in doc["backup"]}
    assert sorted(entries) == [100, 102]
    ok = entries[100]
    assert (ok["status"], ok["storage"], ok["count"]) == ("ok", "local", 2)
    assert ok["last"]["volid"] == volid and ok["last"]["ctime"] == new[0]["ctime"]
    assert ok["policy"] == {"storage": "local", "every_h": 24, "mode": "snapshot",
                            "keep": {"last": 7}}
    assert ok["next_due_at"] is not None

    full = entries[102]
    assert (full["status"], full["storage"], full["count"]) == ("refused", "usb-backup", 1)
    assert full["reason"].startswith(FULL)
    assert full["last"]["volid"].startswith("usb-backup:backup/vzdump-lxc-102-")
    assert doc["backup_refused"] == {"vmid": 102, "storage": "usb-backup", "status": "refused",
                                     "reason": full["reason"], "vzdump_tasks": 0}
    before = {s["storage"]: s for s in doc["storages"]["initial"]}
    after = {s["storage"]: s for s in doc["storages"]["final"]}
    assert after["usb-backup"] == before["usb-backup"]
    assert (before["local"]["backups"], after["local"]["backups"]) == (1, 2)
    assert after["local"]["avail"] == before["local"]["avail"] - new[0]["size"]


def test_demo_provisions_one_guest_from_a_template(demo_doc: dict[str, Any]) -> None:
    """Guest 1001 did not exist: the plan's provision action full-clones template 9000 (one
    vzclone task, its UPID naming the template), and the following pass sets its description
    and starts it; the template's features come with the clone."""
    doc = demo_doc
    assert {"vmid": 1001, "kind": "provision", "params": {
        "name": "c42-web", "storage": "local-lvm", "template": 9000}} in doc["plan"]["actions"]
    pr = doc["provisioned"]
    assert (pr["outcome"], pr["reason"]) == (
        "applied", "lxc 1001 'c42-web' cloned from template 9000")
    assert ":vzclone:9000:" in pr["upid"] and pr["clone_tasks"] == 1
    assert (pr["name"], pr["status"], pr["description"]) == ("c42-web", "running", "customer 42")
    assert pr["rootfs"] == "local-lvm:vm-1001-disk-0,size=8G"
    assert pr["features"] == "keyctl=1,nesting=1"
