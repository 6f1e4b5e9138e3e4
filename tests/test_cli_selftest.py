"""``--selftest`` / ``--selftest=read`` end to end against the PVE simulator."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from felhom_agent.sim.pve import PveScenario, PveSimulator
from tests.support.cli import run_cli

LIMITED_SECRET = "limited-token-secret-0001"


def _scenario() -> PveScenario:
    return PveScenario.from_dict(_scenario_dict())


def _scenario_dict() -> dict[str, Any]:
    return {
        "node": "pve1",
        "auth_failure_delay_s": 0,
        "tokens": [
            {"id": "felhom@pve!agent", "secret": "full-token-secret-0001", "privsep": True,
             "user_privileges": {"/": ["Administrator"]},
             "token_privileges": {"/": ["Administrator"]}},
            {"id": "felhom@pve!limited", "secret": LIMITED_SECRET, "privsep": True,
             "user_privileges": {"/": ["Administrator"]},
             "token_privileges": {"/": ["PVEAuditor"],
                                  "/vms": ["VM.PowerMgmt", "VM.Config.Options"]}},
        ],
        "guests": [
            {"vmid": 100, "type": "lxc", "name": "web", "status": "running"},
            {"vmid": 101, "type": "qemu", "name": "db", "status": "stopped"},
        ],
    }


@pytest.fixture(scope="module")
def sim() -> Iterator[PveSimulator]:
    with PveSimulator(_scenario()) as simulator:
        yield simulator


def _config(tmp_path: Path, sim: PveSimulator, **proxmox: Any) -> Path:
    px = {"api_url": sim.url, "node": sim.node, "token_id": "felhom@pve!agent",
          "token_secret": "full-token-secret-0001", "tls_fingerprint": sim.fingerprint}
    px.update(proxmox)
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"host_id": "pve1", "state_dir": str(tmp_path / "state"),
                                "proxmox": px}))
    path.chmod(0o600)
    return path


def test_selftest_read_passes(tmp_path: Path, sim: PveSimulator) -> None:
    """Bare --selftest runs the read checks: one OK line per check and a summary, exit 0."""
    code, out, err = run_cli(["--config", str(_config(tmp_path, sim)), "--selftest"])
    assert code == 0, out + err
    lines = out.strip().splitlines()
    assert all(line.startswith("OK") for line in lines[:-1])
    assert {"api-reachable", "tls-pin", "token", "permissions", "node", "guests",
            "tasks", "storage"} <= {line.split()[1] for line in lines[:-1]}
    assert lines[-1].startswith("selftest read: all 8 checks passed")
    assert "WARNING" not in lines[-1]


def test_selftest_read_json(tmp_path: Path, sim: PveSimulator) -> None:
    """--selftest=read --json prints the documented JSON."""
    code, out, _ = run_cli(["--config", str(_config(tmp_path, sim)), "--selftest=read", "--json"])
    doc = json.loads(out)
    assert code == 0
    assert doc["mode"] == "read"
    assert doc["ok"] is True
    assert {"name", "ok", "detail", "warning"} == set(doc["checks"][0])
    assert not any(c["warning"] for c in doc["checks"])


def test_selftest_names_missing_privilege(tmp_path: Path, sim: PveSimulator) -> None:
    """A token lacking VM.Snapshot fails the permissions check, naming it, exit 1."""
    config = _config(tmp_path, sim, token_id="felhom@pve!limited", token_secret=LIMITED_SECRET)
    code, out, _ = run_cli(["--config", str(config), "--selftest"])
    assert code == 1
    perm = next(line for line in out.splitlines() if " permissions " in line)
    assert perm.startswith("FAIL")
    assert "VM.Snapshot" in perm
    assert "intersection" in perm
    assert LIMITED_SECRET not in out
    assert "FAILED (permissions)" in out.splitlines()[-1]


def test_selftest_wrong_pin_fails_before_token(tmp_path: Path, sim: PveSimulator) -> None:
    """A wrong fingerprint fails the pin check and skips the token check (token never sent)."""
    seen = sim.requests_seen
    config = _config(tmp_path, sim, tls_fingerprint=":".join(["00"] * 32))
    code, out, _ = run_cli(["--config", str(config), "--selftest", "--json"])
    doc = json.loads(out)
    assert code == 1
    by_name = {c["name"]: c for c in doc["checks"]}
    assert by_name["tls-pin"]["ok"] is False
    assert by_name["token"]["ok"] is False
    assert "skipped" in by_name["token"]["detail"]
    assert sim.requests_seen == seen


def test_selftest_bad_token_exit_1(tmp_path: Path, sim: PveSimulator) -> None:
    """A wrong secret fails the token check with exit 1 and never echoes the secret."""
    config = _config(tmp_path, sim, token_secret="wrong-secret-value-9")
    code, out, err = run_cli(["--config", str(config), "--selftest"])
    assert code == 1
    assert any(line.startswith("FAIL") and " token " in line for line in out.splitlines())
    assert "wrong-secret-value-9" not in out + err


def test_unknown_selftest_mode_is_usage_error(tmp_path: Path, sim: PveSimulator) -> None:
    """An unknown selftest mode exits 2 naming the allowed choices."""
    code, _, err = run_cli(["--config", str(_config(tmp_path, sim)), "--selftest=everything"])
    assert code == 2
    assert "invalid choice" in err


def test_selftest_read_warns_on_a_storage_at_crit(tmp_path: Path) -> None:
    """A storage at or above storage.crit_pct is a WARN line naming it; the exit stays 0."""
    data = _scenario_dict()
    data["storages"] = [
        {"storage": "local", "type": "dir", "content": "backup", "total": 1000,
         "used": 960, "config": {"path": "/var/lib/vz"}},
        {"storage": "tank", "type": "dir", "content": "images", "total": 1000,
         "used": 900, "config": {"path": "/tank"}},
    ]
    with PveSimulator(PveScenario.from_dict(data)) as sim:
        config = _config(tmp_path, sim)
        code, out, _ = run_cli(["--config", str(config), "--selftest"])
        code_json, out_json, _ = run_cli(["--config", str(config), "--selftest", "--json"])
    assert code == 0 == code_json, out
    line = next(line for line in out.splitlines() if " storage " in line)
    assert line.startswith("WARN")
    assert "local 96% used" in line and "tank" not in line
    assert "1 WARNING(S) (storage)" in out.splitlines()[-1]
    doc = json.loads(out_json)
    check = next(c for c in doc["checks"] if c["name"] == "storage")
    assert check["ok"] is True and check["warning"] is True
