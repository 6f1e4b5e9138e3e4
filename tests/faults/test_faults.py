"""PVE and hub faults while the daemon (a real child process) runs: it keeps going, converges.

Each test starts the daemon program against the PVE and hub simulators with one desired
state needing five changes (:data:`WANTS`), injects one kind of fault, checks that the daemon
keeps reporting through it (more reports arrive, ``collected_at`` never goes backwards, the
process is alive: no thread death stops the hub loop), clears the fault, and checks that it
converges with no duplicate mutation (one task per intended change, except where a failed
task legitimately needs a second attempt) and exits 0 on SIGTERM.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from felhom_agent.sim.hub import HubFault, HubSimulator
from felhom_agent.sim.pve import Fault, PveSimulator
from tests.faults.harness import (
    DaemonChild,
    Want,
    daemon_config,
    desired_doc,
    hub_sim,
    pve_sim,
    report_matches,
    sim_matches,
    wait_pve,
    wait_report,
)
from tests.sim.helpers import Api

TIMEOUT = 30.0
GUESTS: list[dict[str, Any]] = [
    {"vmid": 300, "type": "qemu", "name": "a", "status": "stopped",
     "config": {"cores": 1, "memory": 512, "description": "old"}},
    {"vmid": 301, "type": "qemu", "name": "b", "status": "running",
     "config": {"cores": 1, "memory": 512}},
    {"vmid": 310, "type": "lxc", "name": "c", "status": "stopped",
     "config": {"cores": 1, "memory": 256, "ostype": "alpine"}},
    {"vmid": 311, "type": "lxc", "name": "d", "status": "running",
     "config": {"cores": 1, "memory": 256, "ostype": "alpine"}},
]
WANTS = (Want(300, "qemu", "running", "new"), Want(301, "qemu", "stopped"),
         Want(310, "lxc", "running"), Want(311, "lxc", "stopped"))
EXPECTED = Counter({("300", "qmconfig"): 1, ("300", "qmstart"): 1, ("301", "qmstop"): 1,
                    ("310", "vzstart"): 1, ("311", "vzstop"): 1})


@attrs.define
class World:
    """The simulators, the daemon's config and its log directory for one test."""

    pve: PveSimulator
    hub: HubSimulator
    config: Path
    tmp: Path

    def start(self, name: str = "daemon") -> DaemonChild:
        """Start a daemon child logging to ``<tmp>/<name>.log``."""
        return DaemonChild(self.config, self.tmp / f"{name}.log")

    def tasks(self) -> Counter[tuple[str, str]]:
        """(vmid, task type) -> number of tasks the node ran."""
        return Counter((t["id"], t["type"]) for t in self.pve.tasks())


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with pve_sim(GUESTS, task_s=0.2) as pve, hub_sim(desired_doc(1, WANTS)) as hub:
        yield World(pve, hub, daemon_config(tmp_path, pve, hub), tmp_path)


def keeps_reporting(w: World, child: DaemonChild, more: int = 3) -> None:
    """``more`` further reports arrive and their ``collected_at`` never goes backwards."""
    before = len(w.hub.reports())
    reports = w.hub.wait_for_reports(before + more, TIMEOUT)
    stamps = [str(r.body.get("collected_at")) for r in reports]
    assert stamps == sorted(stamps)
    assert child.alive()


def converges(w: World, child: DaemonChild, timeout: float = TIMEOUT) -> None:
    """The node and the reports reach :data:`WANTS`; the daemon stops cleanly."""
    wait_report(w.hub, lambda b: report_matches(b, 1, WANTS) and sim_matches(w.pve, WANTS),
                timeout, child=child)
    assert child.terminate() == 0
    text = child.text()
    assert "Traceback" not in text and "Exception in thread" not in text
    assert w.pve.internal_errors == []


def test_pve_5xx_on_every_read(world: World) -> None:
    """While every PVE read answers 500 the daemon reports the errors, mutates nothing blind,
    and converges once PVE answers again."""
    child = world.start()
    try:
        world.hub.wait_for_reports(1, TIMEOUT)
        world.pve.inject(Fault("http_error", method="GET", status=500))
        wait_report(world.hub, lambda b: bool(b.get("errors")), TIMEOUT, child=child)
        during = world.tasks()
        keeps_reporting(world, child)
        assert world.tasks() == during
        world.pve.clear_faults()
        converges(world, child)
    finally:
        child.sigkill()
    assert world.tasks() == EXPECTED


#: Dropped reads; the full run (``FELHOM_FAULTS_FULL=1``, scripts/test-faults) also drops
#: mutating POSTs, each of which costs the engine's 40 s in-flight lookup grace.
DROPS: list[list[Fault]] = [[Fault("drop", method="GET", count=8)]]
if os.environ.get("FELHOM_FAULTS_FULL") == "1":
    DROPS.append([Fault("drop", method="GET", count=4), Fault("drop", method="POST", count=2)])


@pytest.mark.parametrize("faults", DROPS, ids=lambda fs: "+".join(
    f"{f.method}x{f.count}" for f in fs))
def test_dropped_connections(world: World, faults: list[Fault]) -> None:
    """Connections closed without an answer are ridden out and nothing is applied twice."""
    for fault in faults:
        world.pve.inject(fault)
    child = world.start()
    try:
        keeps_reporting(world, child)
        converges(world, child, timeout=TIMEOUT + 60)
    finally:
        child.sigkill()
    assert world.tasks() == EXPECTED


def test_lost_reply_after_mutation_is_adopted(world: World) -> None:
    """A mutation processed whose reply is lost is adopted from the node, never re-issued."""
    world.pve.inject(Fault("drop_after", method="POST", count=3))
    child = world.start()
    try:
        keeps_reporting(world, child)
        converges(world, child)
    finally:
        child.sigkill()
    assert world.tasks() == EXPECTED


def test_slow_pve_past_the_client_timeout(world: World) -> None:
    """A read held past the client timeout fails that job only; reports go on; it converges."""
    world.config = daemon_config(world.tmp, world.pve, world.hub,
                                 proxmox={"timeout_s": 10.5})
    world.pve.inject(Fault("latency", method="GET", path="/nodes/*/qemu/300/status/current",
                           delay_s=60.0, count=1))
    child = world.start()
    try:
        # The held read stalls 300's job only: the other guests converge meanwhile.
        others = [w for w in WANTS if w.vmid != 300]
        wait_report(world.hub, lambda b: sim_matches(world.pve, others)
                    and world.pve.guest(300)["status"] == "stopped", TIMEOUT, child=child)
        keeps_reporting(world, child, more=4)
        converges(world, child)
    finally:
        world.pve.clear_faults()
        child.sigkill()
    assert world.tasks() == EXPECTED


def test_failing_task_is_retried_once(world: World) -> None:
    """A task ending in error is reported failed and the next pass applies the change."""
    world.pve.inject(Fault("task_fail", task_type="qmstart", vmid=300, count=1,
                           message="simulated start failure"))
    child = world.start()
    try:
        wait_report(world.hub, lambda b: any(
            a["vmid"] == 300 and a["kind"] == "start" and a["outcome"] == "failed"
            for a in b.get("audit", [])), TIMEOUT, child=child)
        keeps_reporting(world, child)
        converges(world, child)
    finally:
        child.sigkill()
    assert world.tasks() == EXPECTED + Counter({("300", "qmstart"): 1})
    starts = [t for t in world.pve.tasks() if t["type"] == "qmstart"]
    assert [t["exitstatus"] for t in starts] == ["simulated start failure", "OK"]


def test_hanging_task_then_interrupted(world: World) -> None:
    """A task that never ends does not stop the daemon; once stopped by an operator it converges."""
    world.pve.inject(Fault("task_hang", task_type="vzstart", vmid=310, count=1))
    child = world.start()
    try:
        assert wait_pve(world.pve, lambda: any(t["type"] == "vzstart" for t in world.pve.tasks()),
                        TIMEOUT, child=child)
        # Everything else converges while 310's task hangs.
        wait_report(world.hub, lambda b: sim_matches(world.pve, [w for w in WANTS
                                                                  if w.vmid != 310]),
                    TIMEOUT, child=child)
        keeps_reporting(world, child)
        hung = next(t for t in world.pve.tasks() if t["type"] == "vzstart")
        assert hung["status"] == "running"
        api = Api(world.pve)
        assert api.data("DELETE", f"/nodes/pve1/tasks/{hung['upid']}") is None
        converges(world, child)
    finally:
        child.sigkill()
    # The interrupted task and the retry; every other change ran once.
    assert world.tasks() == EXPECTED + Counter({("310", "vzstart"): 1})


def test_locked_guest_waits_for_the_lock(world: World) -> None:
    """A guest locked by someone else's snapshot task is blocked, not forced; then applied."""
    world.pve.set_task_duration("qmsnapshot", 120)
    api = Api(world.pve)
    upid = api.data("POST", "/nodes/pve1/qemu/301/snapshot", data={"snapname": "ops"})
    assert world.pve.guest(301)["lock"] == "snapshot"
    child = world.start()
    try:
        wait_report(world.hub, lambda b: any(
            g["vmid"] == 301 and "lock" in g["reason"]
            for g in (b.get("reconcile") or {}).get("blocked", [])), TIMEOUT, child=child)
        keeps_reporting(world, child)
        assert world.pve.guest(301)["status"] == "running"
        world.pve.release_tasks()
        assert world.pve.wait_task(upid, TIMEOUT)["exitstatus"] == "OK"
        converges(world, child)
    finally:
        child.sigkill()
    assert world.tasks() == EXPECTED + Counter({("301", "qmsnapshot"): 1})


def test_hub_outage_and_faults(world: World) -> None:
    """Hub down, then 5xx and dropped answers: the daemon backs off, reports again, converges."""
    child = world.start()
    try:
        wait_report(world.hub, lambda b: report_matches(b, 1, WANTS), TIMEOUT, child=child)
        world.hub.go_down()
        changed = (Want(300, "qemu", "stopped", "new"), *WANTS[1:])
        world.hub.set_desired(desired_doc(2, changed))
        # The outage is seen by the daemon: no report can arrive; wait on the PVE side.
        requests = world.pve.requests_seen
        assert wait_pve(world.pve, lambda: world.pve.requests_seen >= requests + 10, TIMEOUT,
                        child=child)
        world.hub.inject(HubFault(kind="http_error", status=503, count=1))
        world.hub.inject(HubFault(kind="drop", count=1))
        world.hub.come_up()
        keeps_reporting(world, child)
        wait_report(world.hub, lambda b: report_matches(b, 2, changed)
                    and sim_matches(world.pve, changed), TIMEOUT, child=child)
        assert child.terminate() == 0
    finally:
        child.sigkill()
    assert world.tasks() == EXPECTED + Counter({("300", "qmstop"): 1})
