"""SIGKILL a child process during a signed op, restart it: never executed twice (target T10).

The PVE simulator runs in this process; :mod:`tests.phaseb.crash_child` runs the engine and
the verifying sink and kills itself at a crash point. A second child recovers from the journal
and is handed the same op again (as the hub re-delivers it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from felhom_agent.signedops.gate import safety_snapshot_name
from felhom_agent.sim.pve import PveSimulator
from tests.authz.helpers import KeyPair
from tests.daemon.helpers import agent_config, write_agent_config
from tests.phaseb.harness import pve_scenario
from tests.phaseb.signing import OpSigner, op_payload

REPO = Path(__file__).resolve().parents[2]


def _child(config: Path, op: Path, sig: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "tests.phaseb.crash_child", "--config", str(config),
           "--payload", str(op), "--signature", str(sig), *extra]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=90,
                          check=False)


@pytest.mark.parametrize("point", ["after_mark", "safety_wait", "op_wait"])
def test_crash_during_signed_op_never_runs_it_twice(
    point: str, tmp_path: Path, keyset: tuple[KeyPair, KeyPair, Path]
) -> None:
    """After SIGKILL at any point the op is re-attached or reported, and PVE ran it at most once."""
    trusted, _, signers = keyset
    with PveSimulator(pve_scenario(task_s=0.05)) as sim:
        sim.set_task_duration("qmsnapshot", 0.4)
        sim.set_task_duration("qmrollback", 0.4)
        cfg = agent_config(tmp_path, sim, authz={"allowed_signers": str(signers)})
        config = write_agent_config(tmp_path, cfg)
        doc = op_payload("guest.rollback", 101, {"snapname": "initial"})
        payload, sig = OpSigner(trusted, tmp_path).sign(doc)
        (tmp_path / "op.json").write_text(payload)
        (tmp_path / "op.sig").write_text(sig)
        files = (config, tmp_path / "op.json", tmp_path / "op.sig")

        crashed = _child(*files, "--crash-point", point)
        assert crashed.returncode == -9, crashed.stderr
        second = _child(*files)
        assert second.returncode == 0, second.stderr
        out: dict[str, Any] = json.loads(second.stdout.strip().splitlines()[-1])
        for task in sim.tasks():
            sim.wait_task(task["upid"], 10.0)
        types = [t["type"] for t in sim.tasks() if t["id"] == "101"]
        assert out["pending"] == []
        assert types.count("qmrollback") <= 1 and types.count("qmsnapshot") <= 1
        (result,) = out["result"]
        if point == "op_wait":
            assert doc["op_id"] in out["reattached"]
            assert result["state"] == "applied"
            assert types == ["qmsnapshot", "qmrollback"]
        else:
            # consumed before its own step began: reported, never re-run
            assert result["state"] == "failed"
            assert "never started" in result["reason"]
            assert "qmrollback" not in types
        if point == "safety_wait":
            assert doc["op_id"] + ".safety-snapshot" in out["reattached"]
            assert safety_snapshot_name(doc["op_id"]) in sim.guest(101)["snapshots"]
