"""``--selftest=task --vmid N`` against the PVE simulator."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from felhom_agent.sim.pve import Fault, PveScenario, PveSimulator
from felhom_agent.state.journal import Journal
from tests.support.cli import run_cli

SECRET = "task-token-secret-0001"


@pytest.fixture
def sim() -> Iterator[PveSimulator]:
    scenario = PveScenario.from_dict({
        "node": "pve1",
        "auth_failure_delay_s": 0,
        "task_durations": {"default": 0.05},
        "tokens": [{"id": "felhom@pve!agent", "secret": SECRET, "privsep": False,
                    "user_privileges": {"/": ["Administrator"]}}],
        "guests": [
            {"vmid": 100, "type": "lxc", "name": "web", "status": "running",
             "config": {"description": "web frontend"}},
            {"vmid": 101, "type": "qemu", "name": "db", "status": "stopped"},
            {"vmid": 102, "type": "lxc", "name": "busy", "status": "stopped", "lock": "backup"},
        ],
    })
    with PveSimulator(scenario) as simulator:
        yield simulator


def _config(tmp_path: Path, sim: PveSimulator) -> Path:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({
        "host_id": "pve1", "state_dir": str(tmp_path / "state"),
        "proxmox": {"api_url": sim.url, "node": sim.node, "token_id": "felhom@pve!agent",
                    "token_secret": SECRET, "tls_fingerprint": sim.fingerprint,
                    "task_timeout_s": 30}}))
    path.chmod(0o600)
    return path


def _task_types(sim: PveSimulator) -> list[str]:
    return [str(t["type"]) for t in sim.tasks()]


def test_running_lxc_left_as_found(tmp_path: Path, sim: PveSimulator) -> None:
    """A running guest ends running, with its description and snapshot list unchanged."""
    before = sim.guest(100)
    code, out, err = run_cli(["--config", str(_config(tmp_path, sim)), "--selftest=task",
                              "--vmid", "100"])
    assert code == 0, out + err
    after = sim.guest(100)
    assert after["status"] == "running"
    assert after["config"].get("description") == before["config"].get("description")
    assert after["snapshots"] == before["snapshots"]
    types = _task_types(sim)
    assert types.index("vzsnapshot") < types.index("vzrollback") < types.index("vzdelsnapshot")
    assert out.strip().splitlines()[-1].startswith("selftest task: all")


def test_stopped_qemu_json(tmp_path: Path, sim: PveSimulator) -> None:
    """A stopped qemu guest stays stopped; --json prints the document with every step."""
    code, out, _ = run_cli(["--config", str(_config(tmp_path, sim)), "--selftest=task",
                            "--vmid", "101", "--json"])
    doc = json.loads(out)
    assert code == 0, out
    assert doc["mode"] == "task"
    names = [c["name"] for c in doc["checks"]]
    for step in ("snapshot", "rollback", "delete-snapshot", "config-write", "config-verify",
                 "config-restore", "run-state"):
        assert step in names
    assert sim.guest(101)["status"] == "stopped"


def test_every_mutation_is_journalled(tmp_path: Path, sim: PveSimulator) -> None:
    """Each step went through the journal with source 'selftest' and an outcome."""
    config = _config(tmp_path, sim)
    assert run_cli(["--config", str(config), "--selftest=task", "--vmid", "101"])[0] == 0
    journal = Journal.open(tmp_path / "state", clock=lambda: 0.0,
                           logger=logging.getLogger("test"))
    try:
        entries = journal.entries()
    finally:
        journal.close()
    assert len(entries) >= 5
    assert all(e.source == "selftest" for e in entries)
    assert not journal.pending()


def test_failing_snapshot_stops_writes(tmp_path: Path, sim: PveSimulator) -> None:
    """A failing snapshot task fails the test (exit 1) and no rollback or write follows."""
    sim.inject(Fault("task_fail", task_type="vzsnapshot", message="snapshot feature missing"))
    code, out, _ = run_cli(["--config", str(_config(tmp_path, sim)), "--selftest=task",
                            "--vmid", "100"])
    assert code == 1
    assert "snapshot feature missing" in out
    assert "vzrollback" not in _task_types(sim)
    assert sim.guest(100)["config"].get("description", "").strip() == "web frontend"


def test_needs_vmid(tmp_path: Path, sim: PveSimulator) -> None:
    """--selftest=task without --vmid exits 2 naming the flag."""
    code, _, err = run_cli(["--config", str(_config(tmp_path, sim)), "--selftest=task"])
    assert code == 2
    assert "--vmid" in err


def test_bare_selftest_never_mutates(tmp_path: Path, sim: PveSimulator) -> None:
    """Bare --selftest (even with a vmid refused) never starts a task."""
    code, _, err = run_cli(["--config", str(_config(tmp_path, sim)), "--selftest", "--vmid", "100"])
    assert code == 2
    assert "--vmid is only used with --selftest=task" in err
    assert run_cli(["--config", str(_config(tmp_path, sim)), "--selftest"])[0] == 0
    assert sim.tasks() == []


@pytest.mark.parametrize(("vmid", "fragment"), [(999, "not on node"), (102, "locked")])
def test_unusable_guest_fails(tmp_path: Path, sim: PveSimulator, vmid: int,
                              fragment: str) -> None:
    """A missing or locked guest fails with the reason and no task is started."""
    code, out, _ = run_cli(["--config", str(_config(tmp_path, sim)), "--selftest=task",
                            "--vmid", str(vmid)])
    assert code == 1
    assert fragment in out
    assert sim.tasks() == []


def test_refuses_while_agent_holds_journal(tmp_path: Path, sim: PveSimulator) -> None:
    """While another agent holds the journal the test refuses instead of racing its queue."""
    held = Journal.open(tmp_path / "state", clock=lambda: 0.0, logger=logging.getLogger("t"))
    try:
        code, out, _ = run_cli(["--config", str(_config(tmp_path, sim)), "--selftest=task",
                                "--vmid", "100"])
    finally:
        held.close()
    assert code == 1
    assert "held by a running agent" in out
    assert sim.tasks() == []


def test_runs_through_the_daemons_queue_executor_and_task_watcher(
    tmp_path: Path, sim: PveSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every step waits through the daemon's TaskWatcher (built by the composition root),
    never through a second, single-task poll loop; the journal and audit log are the
    daemon's, with the steps recorded under source ``selftest``."""
    from felhom_agent.proxmox.client import ProxmoxClient
    from felhom_agent.proxmox.taskwatch import TaskWatcher
    from felhom_agent.state.audit import AuditLog

    watched: list[str] = []
    real_wait = TaskWatcher.wait

    def spy(self: TaskWatcher, upid: object, **kw: Any) -> object:
        watched.append(str(upid))
        return real_wait(self, upid, **kw)  # type: ignore[arg-type]

    def forbidden(*_a: object, **_kw: object) -> object:
        raise AssertionError("selftest waited outside the TaskWatcher")

    monkeypatch.setattr(TaskWatcher, "wait", spy)
    monkeypatch.setattr(ProxmoxClient, "wait", forbidden)
    code, out, err = run_cli(["--config", str(_config(tmp_path, sim)), "--selftest=task",
                              "--vmid", "101"])
    assert code == 0, out + err
    upids = {str(t["upid"]) for t in sim.tasks()}
    assert watched and set(watched) <= upids
    assert {"qmsnapshot", "qmrollback", "qmdelsnapshot"} <= set(_task_types(sim))
    with AuditLog.open(tmp_path / "state", clock=lambda: 0.0,
                       logger=logging.getLogger("t")) as audit:
        sources = {r.source for r in audit.recent(50)}
    assert sources == {"selftest"}
