"""The daemon end to end as a real child process against the PVE and hub simulators."""

from __future__ import annotations

import json
import logging
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from felhom_agent.sim.hub import HubScenario, HubSimulator
from felhom_agent.sim.pve import PveSimulator
from felhom_agent.state.journal import Journal
from tests.daemon.converge import DESIRED, converged, sim_converged, wait_report, wait_until
from tests.daemon.helpers import (
    HUB_TOKEN,
    PVE_SECRET,
    agent_config,
    pve_scenario,
    write_agent_config,
)
from tests.support.daemon import REAL_CLI, DaemonChild

TIMEOUT = 20.0


@pytest.fixture
def pve() -> Iterator[PveSimulator]:
    with PveSimulator(pve_scenario()) as sim:
        yield sim


@pytest.fixture
def hub() -> Iterator[HubSimulator]:
    scenario = HubScenario.from_dict({"token": HUB_TOKEN, "host_ids": ["pve1"],
                                      "poll_interval_s": 1, "desired": DESIRED})
    with HubSimulator(scenario) as sim:
        yield sim


def _config(tmp: Path, pve: PveSimulator, hub: HubSimulator) -> Path:
    cfg: dict[str, Any] = agent_config(tmp, pve, hub_url=hub.url)
    return write_agent_config(tmp, cfg)


def test_desired_state_converges_and_results_are_reported(
    tmp_path: Path, pve: PveSimulator, hub: HubSimulator
) -> None:
    """`python -m felhom_agent` with no mode is the daemon: desired state -> tasks -> report."""
    with DaemonChild(_config(tmp_path, pve, hub), tmp_path / "daemon.log",
                     program=REAL_CLI) as child:
        body = wait_report(hub, converged, TIMEOUT)
        assert sim_converged(pve)
        upids = {a["vmid"]: a["upid"] for a in body["audit"] if a["kind"] in ("start", "stop")}
        assert upids[102].startswith("UPID:pve1:") and ":vzstart:102:" in upids[102]
        assert ":vzstop:100:" in upids[100]
        code = child.terminate()
    assert code == 0
    log = child.text()
    assert "felhom-agent ready" in log and "stopped:" in log
    blob = log + json.dumps([r.body for r in hub.reports()])
    assert PVE_SECRET not in blob and HUB_TOKEN not in blob


def test_sigterm_mid_task_exits_zero_and_restart_reattaches(
    tmp_path: Path, pve: PveSimulator, hub: HubSimulator
) -> None:
    """SIGTERM during a long task exits 0 without waiting for the task (it is left running on
    PVE, its UPID journaled); a restart re-attaches it."""
    pve.set_task_duration("vzstart", 300)
    hub.set_desired({"generation": 1, "guests": {"102": {"type": "lxc", "state": "running"}}})
    config = _config(tmp_path, pve, hub)

    def start_task() -> dict[str, Any] | None:
        return next((t for t in pve.tasks() if t["type"] == "vzstart"), None)

    with DaemonChild(config, tmp_path / "first.log") as first:
        wait_until(hub, lambda: start_task() is not None, TIMEOUT)
        task = start_task()
        assert task is not None and task["status"] == "running"
        code = first.terminate()
    assert code == 0
    # It did not wait for the task: the stop ended the wait (the watcher saw it still
    # running), the task was left on PVE with its UPID journaled, and it still runs there
    # after the daemon exited.
    log = first.text()
    assert f"task {task['upid']} watcher stopped (last status: running)" in log
    assert f"left running on PVE as {task['upid']}; re-attached on restart" in log
    assert [t["status"] for t in pve.tasks() if t["upid"] == task["upid"]] == ["running"]
    with Journal.open(tmp_path / "state", clock=time.time,
                      logger=logging.getLogger("test")) as journal:
        pending = journal.pending()
    assert [(e.vmid, e.upid) for e in pending] == [(102, task["upid"])]

    with DaemonChild(config, tmp_path / "second.log") as second:
        before = len(hub.reports())
        hub.wait_for_reports(before + 1, TIMEOUT)
        pve.release_tasks()
        body = wait_report(hub, lambda b: any(
            a["upid"] == task["upid"] and a["outcome"] == "applied" for a in b["audit"]),
            TIMEOUT)
        assert {g["vmid"]: g["status"] for g in body["guests"]}[102] == "running"
        code = second.terminate()
    assert code == 0
    assert f"re-attached to {task['upid']}" in second.text()
    assert [t["type"] for t in pve.tasks()].count("vzstart") == 1  # never re-issued


def test_sighup_reloads_and_sigint_stops(
    tmp_path: Path, pve: PveSimulator, hub: HubSimulator
) -> None:
    """SIGHUP reloads the file (a bad one is refused, the daemon lives on); SIGINT exits 0."""
    config = _config(tmp_path, pve, hub)
    with DaemonChild(config, tmp_path / "daemon.log") as child:
        hub.wait_for_reports(1, TIMEOUT)
        cfg = json.loads(config.read_text())
        cfg["log"] = {"level": "info"}
        write_agent_config(tmp_path, cfg)
        child.send(signal.SIGHUP)
        wait_until(hub, lambda: "SIGHUP: configuration reloaded (log level info"
                   in child.text(), TIMEOUT)
        config.write_text('{"host_id": ')
        child.send(signal.SIGHUP)
        wait_until(hub, lambda: "new configuration rejected" in child.text(), TIMEOUT)
        before = len(hub.reports())
        hub.wait_for_reports(before + 1, TIMEOUT)
        child.send(signal.SIGINT)
        code = child.wait()
    assert code == 0
    text = child.text()
    assert "DEBUG" not in text.split("configuration reloaded", 1)[1]
