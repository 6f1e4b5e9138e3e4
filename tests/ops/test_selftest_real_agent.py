"""scripts/felhom-agent-selftest end to end: the real agent, the PVE simulator, credentials.

The cron path an operator relies on: the script runs the real ``felhom-agent`` (a wrapper
around this interpreter's ``-m felhom_agent``), which finds its token secret through
``CREDENTIALS_DIRECTORY`` -- exactly what ``--credentials-dir /etc/credstore`` gives a cron run
-- and checks the simulated PVE API over real HTTPS with a pinned certificate on 127.0.0.1.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from felhom_agent.sim.pve import PveScenario, PveSimulator
from tests.ops.conftest import run_script, script_env

FULL_SECRET = "ops-full-token-secret-0001"
LIMITED_SECRET = "ops-limited-token-secret-0001"


@pytest.fixture(scope="module")
def sim() -> Iterator[PveSimulator]:
    """A PVE simulator with a fully privileged and a read-mostly privsep token."""
    scenario = PveScenario.from_dict({
        "node": "pve1",
        "auth_failure_delay_s": 0,
        "tokens": [
            {"id": "felhom@pve!agent", "secret": FULL_SECRET, "privsep": True,
             "user_privileges": {"/": ["Administrator"]},
             "token_privileges": {"/": ["Administrator"]}},
            {"id": "felhom@pve!limited", "secret": LIMITED_SECRET, "privsep": True,
             "user_privileges": {"/": ["Administrator"]},
             "token_privileges": {"/": ["PVEAuditor"]}},
        ],
        "guests": [{"vmid": 100, "type": "lxc", "name": "web", "status": "running"}],
    })
    with PveSimulator(scenario) as simulator:
        yield simulator


def _install(tmp_path: Path, sim: PveSimulator, token_id: str, secret: str) -> tuple[Path, Path]:
    """Write the agent wrapper, a secret-free config and a credentials dir; return bin, cfg."""
    agent = tmp_path / "bin" / "felhom-agent"
    agent.parent.mkdir()
    agent.write_text(f'#!/bin/sh\nexec {sys.executable} -m felhom_agent "$@"\n')
    agent.chmod(0o755)
    config = tmp_path / "config.json"
    config.write_text(json.dumps({
        "host_id": "pve1", "state_dir": str(tmp_path / "state"),
        "proxmox": {"api_url": sim.url, "node": sim.node, "token_id": token_id,
                    "tls_fingerprint": sim.fingerprint},
    }))
    config.chmod(0o600)
    creds = tmp_path / "credstore"
    creds.mkdir(mode=0o700)
    (creds / "proxmox_token_secret").write_text(secret + "\n")
    (creds / "proxmox_token_secret").chmod(0o600)
    return agent, config


def test_real_agent_ok_via_credentials(tmp_path: Path, sim: PveSimulator) -> None:
    """A healthy host is OK: quiet without -v, `OK … all 8 checks passed` with it."""
    agent, config = _install(tmp_path, sim, "felhom@pve!agent", FULL_SECRET)
    env = script_env(tmp_path, extra={"FELHOM_AGENT_BIN": str(agent)})
    args = ["--config", str(config), "--credentials-dir", str(tmp_path / "credstore")]
    quiet = run_script(args, env, lock=tmp_path / "lock")
    assert (quiet.returncode, quiet.stdout) == (0, "")
    loud = run_script([*args, "-v"], env, lock=tmp_path / "lock")
    assert loud.returncode == 0, loud.stdout
    assert loud.stdout.splitlines()[0] == "OK felhom-agent selftest read: all 8 checks passed"
    assert FULL_SECRET not in loud.stdout + loud.stderr


def test_real_agent_missing_privileges_is_critical(tmp_path: Path, sim: PveSimulator) -> None:
    """A token without the needed privileges is CRITICAL, and the FAIL line names them."""
    agent, config = _install(tmp_path, sim, "felhom@pve!limited", LIMITED_SECRET)
    env = script_env(tmp_path, extra={"FELHOM_AGENT_BIN": str(agent)})
    res = run_script(["--config", str(config), "--credentials-dir", str(tmp_path / "credstore")],
                     env, lock=tmp_path / "lock")
    assert res.returncode == 2, res.stdout
    first, *details = res.stdout.splitlines()
    assert first.startswith("CRITICAL felhom-agent selftest read: ")
    assert "permissions" in first
    fail = next(line for line in details if line.startswith("FAIL permissions"))
    assert "VM.PowerMgmt" in fail
    assert LIMITED_SECRET not in res.stdout


def test_real_agent_without_credentials_is_unknown(tmp_path: Path, sim: PveSimulator) -> None:
    """No secret anywhere is a config error of the agent (exit 2), reported UNKNOWN."""
    agent, config = _install(tmp_path, sim, "felhom@pve!agent", FULL_SECRET)
    env = script_env(tmp_path, extra={"FELHOM_AGENT_BIN": str(agent)})
    res = run_script(["--config", str(config), "--credentials-dir", str(tmp_path / "nothing")],
                     env, lock=tmp_path / "lock")
    assert res.returncode == 3, res.stdout
    first = res.stdout.splitlines()[0]
    assert first.startswith("UNKNOWN felhom-agent selftest read: usage or configuration error "
                            "(exit 2): felhom-agent: config error: ")
    assert "proxmox_token_secret" in first
