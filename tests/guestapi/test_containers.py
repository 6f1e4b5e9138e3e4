"""The attacks of the per-guest API, with real processes in real namespaces and cgroups.

Each test container is a process in its own mount namespace and cgroup ``lxc/<vmid>``; its
socket is placed by the real operation 4 and served by the real loop with the real peer
check. Every attack is refused, audited for the guest whose socket was reached, and has no
effect on any other guest.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from felhom_agent.guestapi.api import Api
from felhom_agent.guestapi.placement import place_container_socket
from felhom_agent.guestapi.policy import Limits
from felhom_agent.guestapi.server import GuestApiServer
from felhom_agent.privileged.guestsock import GuestSocketPlacer, LocalFdRunner
from tests.guestapi.containers import FakeContainer, why_no_containers
from tests.guestapi.fakes import MemoryBackend, RecordingAudit

PATH = "/run/felhom/agent.sock"
CLIENT = str(Path(__file__).with_name("guest_client.py"))
NO_CONTAINERS = why_no_containers()
pytestmark = pytest.mark.skipif(NO_CONTAINERS is not None, reason=str(NO_CONTAINERS))


class World:
    """Two containers (9101, 9102), their sockets placed and served."""

    def __init__(self, limits: Limits) -> None:
        self.backend = MemoryBackend()
        self.audit = RecordingAudit()
        self.server = GuestApiServer(Api(self.backend, limits), limits, audit=self.audit)
        self.server.start()
        self.placer = GuestSocketPlacer(LocalFdRunner())
        self.cts: dict[int, FakeContainer] = {}
        for vmid in (9101, 9102):
            self.cts[vmid] = FakeContainer(vmid)
            self.backend.add(vmid)
            self.place(vmid)

    def place(self, vmid: int) -> None:
        ct = self.cts[vmid]
        placed = place_container_socket(self.placer, vmid=vmid, pid=ct.pid,
                                        start=ct.start_time, path=PATH)
        self.server.attach_listener(vmid, placed.sock)

    def ask(self, vmid: int, count: int = 1, *args: str) -> dict[str, Any]:
        """``count`` requests from inside container ``vmid`` to its own socket."""
        out = self.cts[vmid].python(Path(CLIENT).read_text(), PATH, str(count), *args)
        assert out.returncode == 0, out.stderr
        result: dict[str, Any] = json.loads(out.stdout)
        return result

    def close(self) -> None:
        self.server.stop()
        for ct in self.cts.values():
            ct.stop()


@pytest.fixture
def world() -> Iterator[World]:
    w = World(Limits(timeout_s=2.0))
    yield w
    w.close()


def _dropped(result: str) -> bool:
    """Every request of the client saw its connection end without an answer."""
    statuses = json.loads(result)["statuses"]
    return bool(statuses) and all(s == "closed" or str(s).startswith("error") for s in statuses)


def _host_path(ct: FakeContainer) -> str:
    """The socket as a process in the host's mount namespace can reach it."""
    return f"/proc/{ct.pid}/root{PATH}"


def test_each_container_gets_its_own_identity(world: World) -> None:
    """From inside 9101 the API says 9101; from inside 9102 it says 9102."""
    assert world.ask(9101)["last"]["vmid"] == 9101
    assert world.ask(9102)["last"]["vmid"] == 9102
    assert world.audit.records == []


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_inside_the_container(world: World) -> None:
    """The documented call, from inside the container, with curl."""
    out = world.cts[9101].run(["curl", "-sS", "--max-time", "20", "--unix-socket", PATH,
                               "-H", "Felhom-Guest-API: 1", "http://felhom/1.0/identity"])
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["vmid"] == 9101


def test_guest_a_reaching_guest_b_socket_is_dropped(world: World) -> None:
    """A process of 9101 that reaches 9102's socket (through /proc/<init>/root) is dropped
    without an answer and audited for 9102; 9102's own requests and 9101's are unaffected."""
    a, b = world.cts[9101], world.cts[9102]
    procs = a.cgroup_dir / "cgroup.procs"
    attack = subprocess.run(
        ["sh", "-c", f"echo $$ > {procs} && exec {sys.executable} {CLIENT} "
         f"{_host_path(b)} 3"], capture_output=True, text=True, check=True, timeout=60)
    assert _dropped(attack.stdout)
    records = world.audit.wait_for(lambda r: len(r) >= 3)
    assert {r["vmid"] for r in records} == {9102}
    assert all(r["source"] == "guest:9102" and r["outcome"] == "refused" for r in records)
    assert "is in container 9101, not 9102" in records[0]["reason"]
    entry = next(e for e in world.server.entries() if e.vmid == 9102)
    assert entry.refused == 3 and "container 9101" in (entry.last_error or "")
    assert world.ask(9102)["statuses"] == [200]
    assert world.ask(9101)["statuses"] == [200]


def test_a_process_outside_every_container_is_dropped(world: World) -> None:
    """A host process (this test's own child, cgroup of the test) reaching a container's
    socket is dropped and audited: 'not in a container'."""
    out = subprocess.run([sys.executable, CLIENT, _host_path(world.cts[9101]), "1"],
                         capture_output=True, text=True, check=True, timeout=60)
    assert _dropped(out.stdout)
    records = world.audit.wait_for(lambda r: len(r) >= 1)
    assert records[0]["vmid"] == 9101 and "not in a container" in records[0]["reason"]


def test_a_monitor_process_is_not_the_container(world: World) -> None:
    """A process in lxc.monitor/<vmid> (the container's monitor: a host process) is dropped."""
    ct = world.cts[9101]
    monitor = ct.root / "lxc.monitor" / "9101"
    monitor.mkdir(parents=True, exist_ok=True)
    try:
        out = ct.python(Path(CLIENT).read_text(), PATH, "1", cgroup=monitor)
        assert _dropped(out.stdout.decode())
    finally:
        monitor.rmdir()
        monitor.parent.rmdir()
    records = world.audit.wait_for(lambda r: len(r) >= 1)
    assert "not in a container" in records[0]["reason"]


@pytest.mark.parametrize("args", [
    ("GET", "/1.0/identity", "Felhom-Guest-API: 1", "Forwarded: for=9102"),
    ("GET", "/1.0/identity", "Felhom-Guest-API: 1", "X-Forwarded-For: 10.0.0.2"),
    ("GET", "/1.0/identity?vmid=9102", "Felhom-Guest-API: 1"),
    ("GET", "/1.0/guests/9102/identity", "Felhom-Guest-API: 1"),
])
def test_naming_or_forwarding_is_refused_and_audited(world: World, args: tuple[str, ...]
                                                     ) -> None:
    """A forged Forwarded header, another vmid in the query or the path: refused (4xx),
    audited for the caller; the other guest sees nothing."""
    result = world.ask(9101, 1, *args)
    assert result["statuses"][0] in (400, 403, 404)
    records = world.audit.wait_for(lambda r: len(r) >= 1)
    assert [r["vmid"] for r in records] == [9101]
    assert world.ask(9102)["statuses"] == [200]


def test_a_flooding_guest_gets_429s_and_the_other_guest_none(world: World) -> None:
    """9101 sends 300 requests back to back: 429s after its burst; 9102, asking at the
    same time, gets only 200s; the flood is audited as a few records plus a count."""
    flood = subprocess.Popen(
        ["sh", "-c", f"echo $$ > {world.cts[9101].cgroup_dir / 'cgroup.procs'} && exec "
         f"nsenter --target {world.cts[9101].pid} --mount -- {sys.executable} {CLIENT} "
         f"{PATH} 300"], stdout=subprocess.PIPE, text=True)
    other = world.ask(9102, 10)
    out, _ = flood.communicate(timeout=120)
    statuses = json.loads(out)["statuses"]
    assert statuses[:10] == [200] * 10 and statuses.count(429) >= 200
    assert other["statuses"] == [200] * 10
    records = world.audit.wait_for(lambda r: len(r) >= 10)
    assert {r["vmid"] for r in records} == {9101}
    assert len(records) <= 11  # sampled: ten on their own (a count follows within a minute)


def test_a_restarted_container_is_served_again_after_placing(world: World) -> None:
    """The restart leaves the old listener unreachable; placing again for the new init
    serves the same guest again."""
    world.cts[9101].restart()
    out = world.cts[9101].python(Path(CLIENT).read_text(), PATH, "1")
    assert json.loads(out.stdout)["statuses"][0].startswith("error")  # no socket yet
    world.place(9101)
    assert world.ask(9101)["last"]["vmid"] == 9101
