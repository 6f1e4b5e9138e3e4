"""``--plan [--desired FILE]`` end to end against the PVE simulator."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from felhom_agent.sim.pve import PveScenario, PveSimulator
from tests.support.cli import run_cli

SECRET = "plan-token-secret-0001"


@pytest.fixture(scope="module")
def sim() -> Iterator[PveSimulator]:
    scenario = PveScenario.from_dict({
        "node": "pve1",
        "auth_failure_delay_s": 0,
        "tokens": [{"id": "felhom@pve!agent", "secret": SECRET, "privsep": False,
                    "user_privileges": {"/": ["Administrator"]}}],
        "guests": [
            {"vmid": 100, "type": "lxc", "name": "web", "status": "running",
             "config": {"description": "web frontend", "onboot": 1}},
            {"vmid": 101, "type": "qemu", "name": "db", "status": "stopped"},
            {"vmid": 102, "type": "lxc", "name": "backup", "status": "stopped",
             "lock": "backup"},
        ],
    })
    with PveSimulator(scenario) as simulator:
        yield simulator


def _files(tmp_path: Path, sim: PveSimulator, desired: Any) -> tuple[Path, Path]:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({
        "host_id": "pve1", "state_dir": str(tmp_path / "state"),
        "proxmox": {"api_url": sim.url, "node": sim.node, "token_id": "felhom@pve!agent",
                    "token_secret": SECRET, "tls_fingerprint": sim.fingerprint}}))
    config.chmod(0o600)
    path = tmp_path / "desired.json"
    path.write_text(desired if isinstance(desired, str) else json.dumps(desired))
    return config, path


IN_SYNC = {"generation": 3, "guests": {
    "100": {"type": "lxc", "state": "running", "config": {"description": "web frontend"}},
    "101": {"type": "qemu", "state": "stopped"}}}


def test_in_sync_exits_0(tmp_path: Path, sim: PveSimulator) -> None:
    """A desired state equal to the actual one (after normalisation) plans nothing: exit 0."""
    config, desired = _files(tmp_path, sim, IN_SYNC)
    code, out, err = run_cli(["--config", str(config), "--plan", "--desired", str(desired),
                              "--json"])
    assert code == 0, out + err
    assert json.loads(out) == {"generation": 3, "actions": [], "blocked": [], "refused": []}


def test_drift_exits_1_with_section6_json(tmp_path: Path, sim: PveSimulator) -> None:
    """Drift prints the JSON (actions, blocked, refused) and exits 1, mutating nothing."""
    desired = {"generation": 7, "guests": {
        "100": {"type": "lxc", "state": "running", "config": {"description": "x",
                                                              "memory": 1024}},
        "101": {"type": "qemu", "state": "running"},
        "102": {"type": "lxc", "state": "running"}}}
    config, path = _files(tmp_path, sim, desired)
    tasks_before = len(sim.tasks())
    code, out, _ = run_cli(["--config", str(config), "--plan", "--desired", str(path), "--json"])
    assert code == 1
    doc = json.loads(out)
    assert doc["generation"] == 7
    assert {"vmid": 101, "kind": "start"} in doc["actions"]
    assert {"vmid": 100, "kind": "set_config", "params": {"description": "x"}} in doc["actions"]
    assert doc["blocked"] == [{"vmid": 102, "reason": "locked: backup"}]
    assert any(r["vmid"] == 100 and "memory" in r["reason"] for r in doc["refused"])
    assert len(sim.tasks()) == tasks_before


def test_text_output_is_readable(tmp_path: Path, sim: PveSimulator) -> None:
    """Text output names each action's vmid and kind."""
    desired = {"generation": 1, "guests": {"101": {"type": "qemu", "state": "running"}}}
    config, path = _files(tmp_path, sim, desired)
    code, out, _ = run_cli(["--config", str(config), "--plan", "--desired", str(path)])
    assert code == 1
    assert "101" in out
    assert "start" in out


def test_no_desired_source_exits_2(tmp_path: Path, sim: PveSimulator) -> None:
    """Without --desired and without reconcile.desired_file, --plan exits 2 naming --desired."""
    config, _ = _files(tmp_path, sim, IN_SYNC)
    code, out, err = run_cli(["--config", str(config), "--plan"])
    assert code == 2
    assert "--desired" in out + err


def test_malformed_desired_exits_2(tmp_path: Path, sim: PveSimulator) -> None:
    """A desired file with a bad value exits 2 naming the path of the bad field."""
    config, path = _files(tmp_path, sim, {"generation": 1, "guests": {
        "101": {"type": "qemu", "state": "paused"}}})
    code, out, err = run_cli(["--config", str(config), "--plan", "--desired", str(path)])
    assert code == 2
    assert "guests.101.state" in out + err


def test_desired_without_plan_is_usage_error(tmp_path: Path, sim: PveSimulator) -> None:
    """--desired alone is a usage error (exit 2)."""
    config, path = _files(tmp_path, sim, IN_SYNC)
    code, _, err = run_cli(["--config", str(config), "--desired", str(path)])
    assert code == 2
    assert "--desired is only used with --plan" in err


def test_unreachable_pve_exits_2(tmp_path: Path, sim: PveSimulator) -> None:
    """When PVE cannot be read the plan is an error (exit 2) with one clear reason."""
    config, path = _files(tmp_path, sim, IN_SYNC)
    data = json.loads(config.read_text())
    data["proxmox"]["api_url"] = "https://127.0.0.1:1"
    config.write_text(json.dumps(data))
    argv = ["--config", str(config), "--plan", "--desired", str(path)]
    code, out, err = run_cli(argv)
    assert code == 2
    assert err == ""
    # one line: what failed, where, and why (the connection was refused)
    (line,) = out.splitlines()
    assert line.startswith("plan: error: cannot read actual state from https://127.0.0.1:1: ")
    assert "connection failed" in line and "Connection refused" in line
    assert "Traceback" not in out
    code, out, err = run_cli([*argv, "--json"])
    assert code == 2 and err == ""
    (doc_line,) = out.splitlines()
    doc = json.loads(doc_line)
    assert list(doc) == ["error"]
    assert doc["error"] == line.removeprefix("plan: error: ")
