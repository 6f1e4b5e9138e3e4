"""The supervisor with the real parts: PVE simulator, test containers, operation 4, the loop.

Each pass is run synchronously (``sync_once``) so a test decides exactly when the supervisor
looks; the containers are real processes in their own mount namespace and cgroup.
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from felhom_agent.core.desired import DesiredState, parse_desired
from felhom_agent.guestapi.api import Api
from felhom_agent.guestapi.backend import AgentBackend, Directory
from felhom_agent.guestapi.policy import Limits
from felhom_agent.guestapi.server import GuestApiServer
from felhom_agent.guestapi.supervisor import GuestApiSupervisor
from felhom_agent.privileged.guestsock import GuestSocketPlacer, LocalFdRunner
from felhom_agent.proxmox.client import ProxmoxClient
from felhom_agent.proxmox.models import GuestType
from felhom_agent.sim.pve import PveScenario, PveSimulator
from felhom_agent.state.journal import JournalEntry
from tests.guestapi.containers import FakeContainer, FakeVM, why_no_containers
from tests.guestapi.fakes import RecordingAudit
from tests.sim.helpers import scenario_dict
from tests.support.pve import sim_client

PATH = "/run/felhom/agent.sock"
CLIENT = (Path(__file__).with_name("guest_client.py")).read_text()
NO_CONTAINERS = why_no_containers()
pytestmark = pytest.mark.skipif(NO_CONTAINERS is not None, reason=str(NO_CONTAINERS))
LOG = logging.getLogger("test.guestapi.supervisor")


class NoJournal:
    """An empty journal (these tests make no requests that reach the queue)."""

    def get(self, op_id: str) -> JournalEntry | None:
        return None

    def entries(self) -> list[JournalEntry]:
        return []


@attrs.define
class Desired:
    """A settable desired state."""

    state: DesiredState | None = None

    def set(self, guests: dict[str, Any]) -> None:
        self.state = parse_desired({"generation": 1, "guests": guests})

    def current(self) -> DesiredState | None:
        return self.state


def _guest(vmid: int, gtype: str, pid: int | None = None) -> dict[str, Any]:
    g: dict[str, Any] = {"vmid": vmid, "type": gtype, "name": f"g{vmid}", "status": "running",
                         "config": {"tags": "web;prod"} if gtype == "lxc" else {}}
    if pid is not None:
        g["pid"] = pid
    return g


class World:
    """Simulator, containers, the loop and the supervisor under test."""

    def __init__(self, tmp: Path, cts: dict[int, FakeContainer]) -> None:
        data = scenario_dict()
        data["guests"] = [_guest(v, "lxc", ct.pid) for v, ct in cts.items()]
        data["guests"].append(_guest(9201, "qemu"))
        self.sim = PveSimulator(PveScenario.from_dict(data)).start()
        self.client: ProxmoxClient = sim_client(self.sim)
        self.cts = cts
        self.desired = Desired()
        self.audit = RecordingAudit()
        self.directory = Directory()
        limits = Limits(timeout_s=2.0)
        backend = AgentBackend(directory=self.directory, client=self.client,
                               submit=lambda job: pytest.fail("no job expected"),
                               journal=NoJournal(), limits=limits)
        self.server = GuestApiServer(Api(backend, limits), limits, audit=self.audit)
        self.server.start()
        self.serial_dir = tmp / "serial"
        self.serial_dir.mkdir()
        self.socket_dir = tmp / "run"
        self.sup = GuestApiSupervisor(
            server=self.server, directory=self.directory, client=self.client,
            desired=self.desired.current, placer=GuestSocketPlacer(LocalFdRunner()),
            node="pve1", host_id="host-a", container_path=PATH, serial_dir=self.serial_dir,
            socket_dir=self.socket_dir, audit=self.audit, interval_s=0.01, logger=LOG)

    def ask(self, vmid: int, count: int = 1) -> dict[str, Any]:
        out = self.cts[vmid].python(CLIENT, PATH, str(count))
        assert out.returncode == 0, out.stderr
        result: dict[str, Any] = json.loads(out.stdout)
        return result

    def entry(self, vmid: int) -> dict[str, Any] | None:
        assert self.server.settle()
        return next((e.to_json() for e in self.server.entries() if e.vmid == vmid), None)

    def close(self) -> None:
        self.server.stop()
        self.client.close()
        self.sim.stop()


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    cts = {v: FakeContainer(v) for v in (9101, 9102)}
    w = World(tmp_path, cts)
    try:
        yield w
    finally:
        w.close()
        for ct in cts.values():
            ct.stop()


def test_enabled_containers_get_a_socket_and_their_own_identity(world: World) -> None:
    """Only guests with "guestapi": true are served; each learns its own name and tags."""
    world.desired.set({"9101": {"type": "lxc", "guestapi": True},
                       "9102": {"type": "lxc"}})
    world.sup.sync_once()
    identity = world.ask(9101)["last"]
    assert identity == {"vmid": 9101, "type": "lxc", "name": "g9101", "node": "pve1",
                        "host_id": "host-a", "tags": ["web", "prod"]}
    assert not Path(f"/proc/{world.cts[9102].pid}/root{PATH}").exists()
    assert world.ask(9102)["statuses"][0].startswith("error")
    placed = json.loads((world.socket_dir / "placed.json").read_text())
    assert list(placed) == ["9101"] and placed["9101"]["pid"] == world.cts[9101].pid


def test_a_restarted_container_gets_a_new_socket(world: World) -> None:
    """After the container restarts (new init pid in the API), the next pass places again."""
    world.desired.set({"9101": {"type": "lxc", "guestapi": True}})
    world.sup.sync_once()
    assert world.ask(9101)["statuses"] == [200]
    world.cts[9101].restart()
    world.sim.set_pid(9101, world.cts[9101].pid)
    assert world.ask(9101)["statuses"][0].startswith("error")
    world.sup.sync_once()
    assert world.ask(9101)["statuses"] == [200]


def test_a_removed_socket_is_placed_again(world: World) -> None:
    """The guest deleting its socket file does not cut it off for good."""
    world.desired.set({"9101": {"type": "lxc", "guestapi": True}})
    world.sup.sync_once()
    assert world.cts[9101].run(["rm", "-f", PATH]).returncode == 0
    world.sup.sync_once()
    assert world.ask(9101)["statuses"] == [200]


def test_a_container_whose_cgroup_does_not_match_is_alerted(tmp_path: Path,
                                                             caplog: pytest.LogCaptureFixture
                                                             ) -> None:
    """PVE's pid for 9101 is a process in lxc/9102 (stale wiring, a pid reused): no socket,
    an ERROR line, an audit record, the report's last_error; the other guest is served."""
    wrong = FakeContainer(9101, cgroup="lxc/9102/ns")
    right = FakeContainer(9103)
    w = World(tmp_path, {9101: wrong, 9103: right})
    try:
        w.desired.set({"9101": {"type": "lxc", "guestapi": True},
                       "9103": {"type": "lxc", "guestapi": True}})
        with caplog.at_level(logging.ERROR):
            w.sup.sync_once()
        assert not Path(f"/proc/{wrong.pid}/root{PATH}").exists()
        assert any("not under lxc/9101/" in r.message for r in caplog.records)
        records = w.audit.wait_for(lambda r: len(r) >= 1)
        assert records[0]["source"] == "guest:9101" and "lxc/9102" in records[0]["reason"]
        entry = w.entry(9101)
        assert entry is not None and not entry["listening"]
        assert "not under lxc/9101/" in (entry["last_error"] or "")
        assert w.ask(9103)["last"]["vmid"] == 9103
        w.sup.sync_once()  # the same mismatch again: not audited twice
        assert len(w.audit.records) == 1
    finally:
        w.close()
        wrong.stop()
        right.stop()


def test_disabling_or_stopping_closes_the_listener(world: World) -> None:
    """A guest no longer enabled loses its listener and its report entry; a stopped one its
    listener (its entry stays)."""
    world.desired.set({"9101": {"type": "lxc", "guestapi": True},
                       "9102": {"type": "lxc", "guestapi": True}})
    world.sup.sync_once()
    assert world.ask(9101)["statuses"] == [200] and world.ask(9102)["statuses"] == [200]
    world.desired.set({"9102": {"type": "lxc", "guestapi": True}})
    world.sup.sync_once()
    assert world.ask(9101)["statuses"][0] != 200
    assert world.entry(9101) is None
    world.client.wait(world.client.stop(9102, GuestType.LXC).upid or "", timeout_s=10)
    world.sup.sync_once()
    entry = world.entry(9102)
    assert entry is not None and entry["listening"] is False


def test_a_vm_is_served_over_its_serial_socket(world: World) -> None:
    """A VM with "guestapi": true: the agent connects to <serial_dir>/<vmid>.serial1 and
    serves JSON lines there, as that VM."""
    world.desired.set({"9201": {"type": "qemu", "guestapi": True}})
    world.sup.sync_once()
    entry = world.entry(9201)
    assert entry is not None and not entry["listening"]
    assert "serial1: socket" in (entry["last_error"] or "")
    with FakeVM(9201, world.serial_dir) as vm:
        world.sup._retry.clear()  # a retry is due at once (no waiting in tests)
        world.sup.sync_once()
        vm.send({"id": 1, "method": "GET", "path": "/1.0/identity"})
        answer = vm.recv()
        assert answer["id"] == 1 and answer["status"] == 200
        assert answer["body"] == {"vmid": 9201, "type": "qemu", "name": "g9201", "node": "pve1",
                                  "host_id": "host-a", "tags": []}
        vm.send({"id": 2, "method": "GET", "path": "/1.0/identity", "vmid": 9101})
        assert vm.recv()["status"] == 400


def test_a_serial_socket_not_held_by_the_vm_is_refused(world: World) -> None:
    """A socket at the VM's serial path whose listener is not that VM's QEMU (here: this
    test process) is not served: alerted and audited."""
    world.desired.set({"9201": {"type": "qemu", "guestapi": True}})
    impostor = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    impostor.bind(str(world.serial_dir / "9201.serial1"))
    impostor.listen(1)
    with impostor:
        world.sup.sync_once()
        entry = world.entry(9201)
        assert entry is not None and not entry["listening"]
        assert "not the VM's" in (entry["last_error"] or "")
    records = world.audit.wait_for(lambda r: len(r) >= 1)
    assert records[0]["source"] == "guest:9201"
