"""The host health monitor: the PVE simulator's disk list, SMART and sensors from fake tools.

The fenced reads run for real: a :class:`~felhom_agent.privileged.LocalRunner` whose ``PATH``
starts with the fake ``smartctl``/``sensors`` of :mod:`tests.privileged.fakehost`, which
answer in the tools' documented JSON formats and record their argv.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from felhom_agent.host.monitor import HealthMonitor
from felhom_agent.privileged import LocalRunner, OpTimeouts, Privileged
from felhom_agent.proxmox import ProxmoxClient
from felhom_agent.sim.pve import Fault, PveSimulator
from tests.privileged.fakehost import FakeHost
from tests.sim.helpers import make_scenario
from tests.support.pve import no_sleep, sim_client

#: A hang guard for waits on the monitor thread (never a limit on how fast it must be).
TIMEOUT = 30.0
SMART: dict[str, Any] = {
    "/dev/nvme0n1": {"template": "smartctl_nvme.json", "exit": 0, "temperature": 41},
    "/dev/sda": {"template": "smartctl_ata.json", "exit": 0, "temperature": 36},
}


@pytest.fixture
def client() -> Iterator[ProxmoxClient]:
    with PveSimulator(make_scenario()) as sim, sim_client(sim, sleep=no_sleep) as c:
        yield c


def _fake(tmp_path: Path, **host: Any) -> FakeHost:
    return FakeHost(tmp_path / "host", {"smart": SMART, **host})


def _monitor(client: ProxmoxClient, fake: FakeHost | None,
             timeouts: OpTimeouts | None = None) -> HealthMonitor:
    fenced = None if fake is None else Privileged(LocalRunner(path=fake.path),
                                                  timeouts=timeouts or OpTimeouts())
    return HealthMonitor(client=client, fenced=fenced, interval_s=3600.0,
                         clock=lambda: 1_795_000_000.0)


def test_disks_carry_smart_health_and_temperatures(client: ProxmoxClient,
                                                    tmp_path: Path) -> None:
    """Each listed disk gets smartctl's health and temperature; the USB one is read with
    ``-d sat``; sensors give the temperatures; nothing is an error."""
    fake = _fake(tmp_path)
    snap = _monitor(client, fake).collect_once()
    assert [(d.devpath, d.health, d.temperature_c, d.smart, d.wearout) for d in snap.disks] == [
        ("/dev/nvme0n1", "PASSED", 41, "ok", 98), ("/dev/sda", "PASSED", 36, "ok", None)]
    assert fake.calls("smartctl") == [["smartctl", "--json", "-a", "/dev/nvme0n1"],
                                      ["smartctl", "--json", "-a", "-d", "sat", "/dev/sda"]]
    assert fake.calls("sensors") == [["sensors", "-j"]]
    assert next((s.chip, s.label, s.celsius) for s in snap.sensors) == (
        "coretemp-isa-0000", "Package id 0", 45.0)
    assert snap.problems == ()
    assert snap.cycles == 1 and snap.collected_at == 1_795_000_000.0


def test_a_hanging_smartctl_is_killed_at_its_timeout_and_reported(client: ProxmoxClient,
                                                                   tmp_path: Path) -> None:
    """While smartctl hangs the cache answers at once (the reading is not finished); the
    runner kills it at its timeout, and the disk's entry says ``error`` with the reason."""
    fake = _fake(tmp_path, hang=["smartctl"])
    monitor = _monitor(client, fake, OpTimeouts(smartctl_s=1.0))
    monitor.start()
    try:
        during = monitor.snapshot()
        done = monitor.wait(1, TIMEOUT)
    finally:
        monitor.stop()
    assert during.cycles == 0  # answered while the reading was still going on
    assert done.cycles == 1
    assert [(d.devpath, d.smart, d.health) for d in done.disks] == [
        ("/dev/nvme0n1", "error", "PASSED"), ("/dev/sda", "error", "PASSED")]
    killed = [p.message for p in done.problems if "killed" in p.message]
    assert len(killed) == 2 and "ran longer than 1 s" in killed[0]
    for pid in fake.pids("smartctl"):
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # reaped: no hanging tool is left behind


def test_missing_tools_are_errors_naming_the_package(client: ProxmoxClient,
                                                     tmp_path: Path) -> None:
    """smartctl and sensors not on PATH: one errors entry each naming what to install; the
    disks are still reported from PVE."""
    fake = _fake(tmp_path)
    fake.remove("smartctl")
    fake.remove("sensors")
    snap = _monitor(client, fake).collect_once()
    messages = [(p.source, p.message) for p in snap.problems]
    assert ("sensors", "sensors -j: sensors is not on the daemon's PATH: install lm-sensors "
                       "(apt install lm-sensors)") in messages
    assert sum("install smartmontools" in m for _, m in messages) == 2
    assert [d.health for d in snap.disks] == ["PASSED", "PASSED"]
    assert snap.sensors == ()


def test_smartctl_status_bits_parse_not_fail(client: ProxmoxClient, tmp_path: Path) -> None:
    """Bit 2 (a SMART command failed) is noted and the data used; bit 3 (disk failing) is
    health FAILED, no error; bits 0-1 (no data) leave PVE's health and an error."""
    smart = {"/dev/nvme0n1": {"template": "smartctl_nvme.json", "exit": 4, "temperature": 50},
             "/dev/sda": {"template": "smartctl_ata.json", "exit": 8, "passed": False}}
    snap = _monitor(client, _fake(tmp_path, smart=smart)).collect_once()
    nvme, sda = snap.disks
    assert (nvme.smart, nvme.temperature_c, nvme.health) == ("ok", 50, "PASSED")
    assert (sda.smart, sda.health) == ("ok", "FAILED")
    assert [p.message.split(":")[0] for p in snap.problems] == ["smartctl /dev/nvme0n1"]
    assert "error bits 100" in snap.problems[0].message
    unknown = _monitor(client, _fake(tmp_path / "2", smart={})).collect_once()
    assert {d.smart for d in unknown.disks} == {"error"}
    assert all("gave no data" in p.message for p in unknown.problems if "smartctl" in p.message)


def test_privileged_off_reports_pve_data_only(client: ProxmoxClient) -> None:
    """Without the fenced CLI each disk says ``smart: off``; no sensors and no error."""
    snap = _monitor(client, None).collect_once()
    assert [(d.devpath, d.smart, d.health, d.temperature_c) for d in snap.disks] == [
        ("/dev/nvme0n1", "off", "PASSED", None), ("/dev/sda", "off", "PASSED", None)]
    assert snap.sensors == () and snap.problems == ()


def test_unreadable_disk_list_keeps_the_last_disks(tmp_path: Path) -> None:
    """A failing disks/list is an errors entry; the disks read before stay until the next
    reading, and the error goes once the list is readable again."""
    with PveSimulator(make_scenario()) as sim, sim_client(sim, sleep=no_sleep) as client:
        monitor = _monitor(client, _fake(tmp_path))
        first = monitor.collect_once()
        sim.inject(Fault("http_error", path="/nodes/*/disks/list", status=500))
        second = monitor.collect_once()
        sim.clear_faults()
        third = monitor.collect_once()
    assert [d.devpath for d in second.disks] == [d.devpath for d in first.disks]
    assert [p.source for p in second.problems] == ["disks"]
    assert "disks/list failed" in second.problems[0].message
    assert third.problems == ()
