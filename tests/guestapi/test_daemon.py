"""Acceptance: the daemon (a real child process) serving test containers and a test VM.

The PVE and hub simulators stand in for the node and the hub; the containers are real
processes in their own mount namespace and cgroup ``lxc/<vmid>`` whose init pids the
simulator reports; the VM is a process in ``qemu.slice/<vmid>.scope`` holding its serial
socket. Every request comes from inside a guest. Checked: each guest gets its own identity
and backups and nothing of another's; a backup asked for from inside is made once, found
and reported; the limits hold, also across an agent restart; a restarted container is
served again; the API is off unless enabled.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from felhom_agent.sim.hub import HubScenario, HubSimulator
from felhom_agent.sim.pve import PveScenario, PveSimulator
from felhom_agent.sim.pve.defaults import default_scenario_dict, default_storages
from tests.daemon.helpers import HUB_TOKEN, PVE_SECRET, agent_config, write_agent_config
from tests.guestapi.containers import FakeContainer, FakeVM, why_no_containers
from tests.support.daemon import DaemonChild, wait_report, wait_until

PATH = "/run/felhom/agent.sock"
CLIENT = (Path(__file__).with_name("guest_client.py")).read_text()
TIMEOUT = 60.0
NO_CONTAINERS = why_no_containers()
pytestmark = pytest.mark.skipif(NO_CONTAINERS is not None, reason=str(NO_CONTAINERS))

DESIRED = {"generation": 1, "guests": {
    "9101": {"type": "lxc", "guestapi": True, "backup": {"storage": "local", "every_h": 24}},
    "9102": {"type": "lxc", "guestapi": True},
    "9103": {"type": "lxc"},
    "9201": {"type": "qemu", "guestapi": True},
}}


class World:
    """Three containers, a VM, both simulators."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.cts = {v: FakeContainer(v) for v in (9101, 9102, 9103)}
        self.serial_dir = tmp / "serial"
        self.serial_dir.mkdir()
        self.vm = FakeVM(9201, self.serial_dir)
        data: dict[str, Any] = default_scenario_dict(token_secret=PVE_SECRET)
        data["auth_failure_delay_s"] = 0
        data["guests"] = [
            {"vmid": v, "type": "lxc", "name": f"ct{v}", "status": "running", "pid": ct.pid,
             "config": {"memory": 512}} for v, ct in self.cts.items()]
        data["guests"].append({"vmid": 9201, "type": "qemu", "name": "vm9201",
                               "status": "running", "config": {"serial1": "socket"}})
        storages = default_storages()
        local = next(s for s in storages if s["storage"] == "local")
        local["backups"] = [{"vmid": 9101, "type": "lxc", "ctime": int(time.time()) - 60,
                             "size": 1000, "notes": "made before"},
                            {"vmid": 9102, "type": "lxc", "ctime": int(time.time()) - 60,
                             "size": 2000, "notes": "not 9101's"}]
        data["storages"] = storages
        data["task_durations"] = {"default": 0.05, "vzdump": 0.5}
        self.pve = PveSimulator(PveScenario.from_dict(data)).start()
        self.hub = HubSimulator(HubScenario.from_dict(
            {"token": HUB_TOKEN, "host_ids": ["pve1"], "poll_interval_s": 1,
             "desired": DESIRED}))
        self.hub.start()

    def config(self, *, enabled: bool = True) -> Path:
        cfg = agent_config(self.tmp, self.pve, hub_url=self.hub.url, guestapi={
            "enabled": enabled, "serial_dir": str(self.serial_dir),
            "socket_dir": str(self.tmp / "guestapi"), "backup_min_interval_s": 3600,
            "backups_per_day": 4})
        return write_agent_config(self.tmp, cfg)

    def ask(self, vmid: int, method: str = "GET", path: str = "/1.0/identity",
            count: int = 1) -> dict[str, Any]:
        out = self.cts[vmid].python(CLIENT, PATH, str(count), method, path,
                                    "Felhom-Guest-API: 1")
        assert out.returncode == 0, out.stderr
        result: dict[str, Any] = json.loads(out.stdout)
        return result

    def served(self, vmid: int) -> bool:
        return bool(self.ask(vmid)["statuses"] == [200])

    def close(self) -> None:
        self.hub.close()
        self.pve.stop()
        self.vm.stop()
        for ct in self.cts.values():
            ct.stop()


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    try:
        yield w
    finally:
        w.close()


def _entries(body: Mapping[str, Any]) -> dict[int, dict[str, Any]]:
    return {e["vmid"]: e for e in body.get("guestapi", [])}


def _listening(*vmids: int) -> Any:
    return lambda body: all(_entries(body).get(v, {}).get("listening") for v in vmids)


def test_guests_ask_about_themselves_and_back_themselves_up(world: World) -> None:
    """The whole path, from inside the guests (see the module docstring)."""
    with DaemonChild(world.config(), world.tmp / "daemon.log") as child:
        body = wait_report(world.hub, _listening(9101, 9102, 9201), TIMEOUT, child=child)
        assert set(_entries(body)) == {9101, 9102, 9201}  # 9103 is not enabled
        assert _entries(body)[9101]["transport"] == "unix"
        assert _entries(body)[9201]["transport"] == "serial"

        # identity: each its own; 9103 has no socket at all
        assert world.ask(9101)["last"]["vmid"] == 9101
        assert world.ask(9101)["last"]["name"] == "ct9101"
        assert world.ask(9102)["last"]["vmid"] == 9102
        assert world.ask(9103)["statuses"][0].startswith("error")
        world.vm.send({"id": "a", "method": "GET", "path": "/1.0/identity"})
        answer = world.vm.recv()
        assert answer["status"] == 200 and answer["body"]["vmid"] == 9201  # type: ignore[index]

        # backups: 9101 sees its own one; 9102 has no policy storage, so none
        mine = world.ask(9101, path="/1.0/backups")["last"]["backups"]
        assert mine == [{"ctime": mine[0]["ctime"], "size": 1000, "verified": None,
                         "protected": False}]
        assert world.ask(9102, path="/1.0/backups")["last"] == {"backups": []}

        # a backup from inside 9101: accepted once, the second refused, 9102 has no policy
        first = world.cts[9101].python(CLIENT, PATH, "1", "POST", "/1.0/backups",
                                       "Felhom-Guest-API: 1")
        accepted = json.loads(first.stdout)
        assert accepted["statuses"] == [202]
        op = accepted["last"]["operation_id"]
        assert accepted["last"]["operation"] == f"/1.0/operations/{op}"
        again = world.ask(9101, "POST", "/1.0/backups")["statuses"]
        assert again[0] in (409, 429)
        assert world.ask(9102, "POST", "/1.0/backups")["statuses"] == [409]

        # made once, found, reported with its op id
        def made(body: Mapping[str, Any]) -> bool:
            return any(o["op_id"].startswith("guest-9101-") and o["state"] == "applied"
                       for o in body["ops"])
        body = wait_report(world.hub, made, TIMEOUT, child=child)
        op_id = next(o["op_id"] for o in body["ops"] if o["op_id"].startswith("guest-9101-"))
        assert op_id == op
        ours = [b for b in world.pve.backups("local") if b.get("vmid") == 9101]
        assert len(ours) == 2
        assert sum(op_id in str(b.get("notes")) for b in ours) == 1
        assert world.ask(9101, path=f"/1.0/operations/{op_id}")["last"]["state"] == "applied"
        assert world.ask(9102, path=f"/1.0/operations/{op_id}")["statuses"] == [404]
        assert len(world.ask(9101, path="/1.0/backups")["last"]["backups"]) == 2
        body = wait_report(world.hub, lambda b: any(
            a["source"] == "guest:9101" and a["kind"] == "backup" for a in b["audit"]),
            TIMEOUT, child=child)
        guest_records = [a for a in body["audit"] if a["source"] == "guest:9101"]
        assert {a["outcome"] for a in guest_records} >= {"accepted", "refused", "applied"}
        assert not [a for a in body["audit"] if a["source"] == "guest:9103"]

        # a restarted container is served again after the supervisor notices
        world.cts[9101].restart()
        world.pve.set_pid(9101, world.cts[9101].pid)
        wait_until(world.hub, lambda: world.served(9101), TIMEOUT, child=child)
        assert child.terminate() == 0

    # the agent restarts: listeners re-created, and the backup limits remembered
    with DaemonChild(world.config(), world.tmp / "second.log") as child:
        wait_report(world.hub, _listening(9101, 9102), TIMEOUT,
                    after=len(world.hub.reports()), child=child)
        assert world.served(9101) and world.served(9102)
        assert world.ask(9101, "POST", "/1.0/backups")["statuses"] == [429]
        assert child.terminate() == 0


def test_the_api_is_off_unless_enabled(world: World) -> None:
    """guestapi.enabled false: no socket in any container, no entries, no serial connection."""
    with DaemonChild(world.config(enabled=False), world.tmp / "off.log") as child:
        body = wait_report(world.hub, lambda b: b["reconcile"] is not None, TIMEOUT,
                           child=child)
        wait_report(world.hub, lambda b: True, TIMEOUT, after=len(world.hub.reports()),
                    child=child)
        assert body["guestapi"] == []
        for ct in world.cts.values():
            assert not Path(f"/proc/{ct.pid}/root{PATH}").exists()
        world.vm.send({"id": 1, "method": "GET", "path": "/1.0"})
        with pytest.raises(TimeoutError):
            world.vm.recv(timeout=2.0)
        assert child.terminate() == 0
