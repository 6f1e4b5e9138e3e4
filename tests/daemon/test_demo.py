"""``--demo``: the daemon converges the simulated node and the account says how."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from felhom_agent.cli._demo import demo_command
from felhom_agent.cli._demo_signer import DemoSigner, SigningFailed, SshKeygenMissing

REFUSAL = {"vmid": 101, "kind": "set_config", "reason": "destructive key: memory"}


def test_demo_converges_and_prints_account() -> None:
    """The text account shows the plan, the signed rollback behind its safety snapshot, the
    refused memory change, each action with its UPID, and the final state."""
    out = io.StringIO()
    assert demo_command(out=out) == 0
    text = out.getvalue()
    assert "plan for generation 1: 3 action(s), 0 blocked, 1 refused" in text
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
    assert "converged in" in text and "daemon exit status 0" in text


def test_demo_json() -> None:
    """--json prints one document: converged, the plan, the applied actions, the signed op
    applied after its safety snapshot (the simulator's own task order), the refusal and the
    final state."""
    out = io.StringIO()
    assert demo_command(out=out, as_json=True) == 0
    doc = json.loads(out.getvalue())
    assert doc["converged"] is True and doc["daemon_exit"] == 0
    assert sorted((a["vmid"], a["kind"], a["outcome"]) for a in doc["actions"]) == [
        (100, "set_config", "applied"), (101, "start", "applied"), (102, "stop", "applied")]
    final = {r["vmid"]: r for r in doc["final"]}
    assert {v: r["status"] for v, r in final.items()} == {
        100: "running", 101: "running", 102: "stopped", 103: "running"}
    assert doc["plan"]["generation"] == 1 and len(doc["plan"]["actions"]) == 3
    assert doc["plan"]["refused"] == [REFUSAL]

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

    assert doc["refused"] == [REFUSAL]
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
