"""The daemon (real engine, in-process) rides out hub failures and converges afterwards."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

from felhom_agent.config import load_config
from felhom_agent.daemon.runner import Daemon
from felhom_agent.hub.policy import Backoff, RetryPolicy
from felhom_agent.sim.hub import HubFault, HubScenario, HubSimulator
from felhom_agent.sim.pve import PveSimulator
from tests.daemon.converge import DESIRED, converged, sim_converged, wait_report
from tests.daemon.helpers import (
    HUB_TOKEN,
    LogRecords,
    agent_config,
    pve_scenario,
    write_agent_config,
)

TIMEOUT = 20.0
FAST = RetryPolicy(backoff=Backoff(base_s=0.05, cap_s=0.3), auth_retry_s=0.3)


@attrs.define
class Running:
    """A daemon on a thread with its simulators and captured log lines."""

    pve: PveSimulator
    hub: HubSimulator
    records: LogRecords
    stop_event: threading.Event
    thread: threading.Thread
    codes: list[int]

    def stop(self) -> int:
        self.stop_event.set()
        self.thread.join(TIMEOUT)
        assert not self.thread.is_alive()
        return self.codes[0]


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[PveSimulator, HubSimulator, Path]]:
    scenario = HubScenario.from_dict({"token": HUB_TOKEN, "poll_interval_s": 1,
                                      "desired": DESIRED})
    with PveSimulator(pve_scenario()) as pve, HubSimulator(scenario) as hub:
        path = write_agent_config(tmp_path, agent_config(tmp_path, pve, hub_url=hub.url))
        yield pve, hub, path


def _start(pve: PveSimulator, hub: HubSimulator, path: Path, *,
           hub_timeout_s: float = 5.0) -> Running:
    records = LogRecords()
    logger = logging.getLogger(f"felhom_agent.test.faults.{id(records)}")
    logger.setLevel(logging.DEBUG)
    logger.addHandler(records)
    stop = threading.Event()
    codes: list[int] = []
    daemon = Daemon(load_config(path, env={}), env={}, stop_event=stop, install_signals=False,
                    hub_policy=FAST, hub_timeout_s=hub_timeout_s, logger=logger)
    thread = threading.Thread(target=lambda: codes.append(daemon.run()), daemon=True)
    thread.start()
    return Running(pve, hub, records, stop, thread, codes)


@pytest.mark.parametrize(
    "fault",
    [
        HubFault(kind="http_error", status=500, count=3),
        HubFault(kind="http_error", status=401, count=2),
        HubFault(kind="garbage", count=2),
        HubFault(kind="garbage", body="[1]", count=2),
        HubFault(kind="wrong_types", count=2),
        HubFault(kind="drop", count=3),
    ],
    ids=lambda f: f"{f.kind}-{f.status}-{f.body[:3]}",
)
def test_converges_after_hub_faults(
    setup: tuple[PveSimulator, HubSimulator, Path], fault: HubFault
) -> None:
    """5xx, 401, garbage, wrong types, dropped connections: the daemon stays up and converges."""
    pve, hub, path = setup
    hub.inject(fault)
    run = _start(pve, hub, path)
    wait_report(hub, converged, TIMEOUT)
    assert sim_converged(pve)
    assert run.thread.is_alive()
    assert hub.faults.armed() == ()
    assert run.stop() == 0


def test_hub_down_at_start_then_up(setup: tuple[PveSimulator, HubSimulator, Path]) -> None:
    """With the hub down at start the daemon is ready, backs off, and converges once it is up."""
    pve, hub, path = setup
    hub.go_down()
    run = _start(pve, hub, path)
    assert run.records.wait_for("hub report failed", TIMEOUT, count=2)
    assert not hub.reports()
    hub.come_up()
    wait_report(hub, converged, TIMEOUT)
    assert run.stop() == 0


def test_hub_down_mid_run_and_back(setup: tuple[PveSimulator, HubSimulator, Path]) -> None:
    """A hub outage mid-run is ridden out; a desired state changed meanwhile is applied."""
    pve, hub, path = setup
    run = _start(pve, hub, path)
    wait_report(hub, converged, TIMEOUT)
    hub.go_down()
    assert run.records.wait_for("hub report failed", TIMEOUT, count=2)
    hub.set_desired({"generation": 2, "guests": {"102": {"type": "lxc", "state": "stopped"}}})
    hub.come_up()
    assert run.records.wait_for("hub reachable again", TIMEOUT)
    wait_report(hub, lambda b: (b["reconcile"] or {}).get("generation") == 2
                and b["reconcile"]["actions"] == 0
                and {g["vmid"]: g["status"] for g in b["guests"]}[102] == "stopped", TIMEOUT)
    assert pve.guest(102)["status"] == "stopped"
    assert run.stop() == 0


def test_slow_hub_past_the_timeout(setup: tuple[PveSimulator, HubSimulator, Path]) -> None:
    """A hub slower than the client timeout counts as a failed poll; the daemon converges."""
    pve, hub, path = setup
    hub.inject(HubFault(kind="slow", delay_s=3.0, count=2))
    run = _start(pve, hub, path, hub_timeout_s=0.5)
    assert run.records.wait_for("did not answer within 0.5 s", TIMEOUT)
    wait_report(hub, converged, TIMEOUT)
    assert run.stop() == 0
