"""Host storage end to end: the real program as a child process, fenced mode ``local``, the
fake host tools on the daemon's ``PATH``, a scratch ``fstab_path`` and ``mount_root``.

* the reports carry the disks with SMART health and temperatures, and the sensors;
* a hanging ``smartctl`` delays no report;
* a signed ``host.mount_usb`` (``"vmid": null``) makes exactly one mount argv, one fstab line
  and one PVE storage with ``is_mountpoint=yes``; the storage then shows in the report's
  ``storage`` and takes a policy backup from the desired state.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import uuid
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from felhom_agent.privileged.fstab import parse_fstab
from felhom_agent.sim.hub import HubSimulator
from felhom_agent.sim.pve import PveScenario, PveSimulator
from felhom_agent.sim.pve.defaults import default_scenario_dict
from tests.authz.helpers import KeyPair
from tests.daemon.helpers import PVE_SECRET, agent_config, write_agent_config
from tests.phaseb.harness import EXTRA_GUESTS, hub_scenario
from tests.phaseb.signing import OpSigner, make_keys
from tests.privileged.fakehost import FakeHost
from tests.sim.helpers import pinned_session
from tests.support.daemon import REAL_CLI, DaemonChild, wait_report, wait_until

#: A hang guard for waits on the child (never a limit on how fast it must be).
TIMEOUT = 60.0
UUID = "0f3c6a2e-9d1b-4c55-8a0e-7e2b5d8c1f00"
SMART: dict[str, Any] = {
    "/dev/nvme0n1": {"template": "smartctl_nvme.json", "exit": 0, "temperature": 41},
    "/dev/sda": {"template": "smartctl_ata.json", "exit": 0, "temperature": 36},
}
DEVICES = [{"disk": "/dev/sda", "name": "/dev/sda1", "uuid": UUID, "fstype": "ext4"}]


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[KeyPair, KeyPair, Path]:
    """A trusted signing key, an untrusted one and allowed_signers (made once)."""
    return make_keys(tmp_path_factory.mktemp("host-keys"))


class Host:
    """Fake tools, simulators, a config with scratch fstab and mount root, the daemon."""

    def __init__(self, tmp: Path, keys: tuple[KeyPair, KeyPair, Path], **host: Any) -> None:
        trusted, _stranger, signers = keys
        self.tmp = tmp
        self.fake = FakeHost(tmp / "host", {"devices": DEVICES, "smart": SMART, **host})
        self.root = tmp / "mnt"
        self.root.mkdir()
        self.fstab = tmp / "fstab"
        self.fstab.write_text("/dev/pve/root / ext4 errors=remount-ro 0 1\n")
        self.pve = PveSimulator(_scenario(self.fake.mounts))
        self.hub = HubSimulator(hub_scenario())
        self.pve.__enter__()
        self.hub.__enter__()
        work = tmp / "ops"
        work.mkdir()
        self.signer = OpSigner(trusted, work)
        cfg = agent_config(tmp, self.pve, hub_url=self.hub.url,
                           authz={"allowed_signers": str(signers)},
                           proxmox={"privileged": {"mode": "local",
                                                   "fstab_path": str(self.fstab),
                                                   "mount_root": str(self.root)}},
                           storage={"smart_interval_s": 3600})
        self.config = write_agent_config(tmp, cfg)
        self.child: DaemonChild | None = None

    def start(self) -> DaemonChild:
        """The installed program, with only the fake tools on its PATH."""
        self.child = DaemonChild(self.config, self.tmp / "daemon.log", program=REAL_CLI,
                                 env={"PATH": self.fake.path})
        return self.child

    def sign(self, kind: str, params: dict[str, Any]) -> str:
        now = datetime.now(UTC).replace(microsecond=0)
        doc = {"v": 1, "op_id": str(uuid.uuid4()), "host_id": "pve1", "kind": kind,
               "vmid": None, "params": params, "irreversible": False,
               "nonce": secrets.token_hex(16),
               "issued_at": (now - timedelta(seconds=5)).strftime("%Y-%m-%dT%H:%M:%SZ"),
               "expires_at": (now + timedelta(seconds=600)).strftime("%Y-%m-%dT%H:%M:%SZ")}
        payload, sig = self.signer.sign(doc)
        self.hub.add_signed_op(payload, sig)
        return str(doc["op_id"])

    def outcome(self, op_id: str) -> dict[str, Any] | None:
        for report in reversed(self.hub.reports()):
            for entry in report.body.get("ops", ()):
                if entry.get("op_id") == op_id and entry.get("state") != "running":
                    return dict(entry)
        return None

    def close(self) -> None:
        if self.child is not None and self.child.alive():
            self.child.terminate()
        for pid in self.fake.pids("smartctl"):  # a hanging fake the daemon left behind
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.hub.__exit__(None, None, None)
        self.pve.__exit__(None, None, None)


def _scenario(mounts: Path) -> PveScenario:
    """The signed-op tests' node (guests 100-105), its mount table the fake tools'."""
    data: dict[str, Any] = default_scenario_dict(token_secret=PVE_SECRET)
    data.update(auth_failure_delay_s=0, task_durations={"default": 0.05},
                mounts_file=str(mounts))
    data["guests"] = [*data["guests"], *EXTRA_GUESTS]
    return PveScenario.from_dict(data)


@pytest.fixture
def host(tmp_path: Path, keys: tuple[KeyPair, KeyPair, Path]) -> Iterator[Host]:
    h = Host(tmp_path, keys)
    yield h
    h.close()
    assert h.pve.internal_errors == []


def _has_temperatures(body: Mapping[str, Any]) -> bool:
    return [d.get("temperature_c") for d in body.get("disks", ())] == [41, 36]


def test_reports_carry_disks_with_smart_health_and_temperatures(host: Host) -> None:
    """The daemon's reports carry each disk with smartctl's health and temperature, and the
    sensors; the tools ran with the daemon's PATH and the documented argv."""
    child = host.start()
    body = wait_report(host.hub, _has_temperatures, TIMEOUT, child=child)
    assert [(d["devpath"], d["health"], d["smart"]) for d in body["disks"]] == [
        ("/dev/nvme0n1", "PASSED", "ok"), ("/dev/sda", "PASSED", "ok")]
    assert {"chip": "coretemp-isa-0000", "label": "Core 0", "celsius": 43.0} in body["sensors"]
    assert not [e for e in body["errors"] if e["source"] in ("disks", "sensors")]
    assert ["smartctl", "--json", "-a", "-d", "sat", "/dev/sda"] in host.fake.calls("smartctl")
    assert all("usage_pct" in s and "alert" in s for s in body["storage"])
    assert child.terminate() == 0


def test_a_hanging_smartctl_delays_no_report(tmp_path: Path,
                                             keys: tuple[KeyPair, KeyPair, Path]) -> None:
    """While smartctl hangs the daemon keeps reporting every interval (its disks from PVE,
    ``smart: pending``); the hanging process is still running meanwhile."""
    host = Host(tmp_path, keys, hang=["smartctl"])
    try:
        child = host.start()
        wait_until(host.hub, lambda: bool(host.fake.pids("smartctl")), TIMEOUT, child=child)
        pid = host.fake.pids("smartctl")[0]
        seen = len(host.hub.reports())
        bodies = [wait_report(host.hub, lambda _b: True, TIMEOUT, after=seen + i, child=child)
                  for i in range(3)]
        os.kill(pid, 0)  # raises if smartctl had ended: the reports came while it hung
        assert len(host.fake.pids("smartctl")) == 1
        assert [d["smart"] for d in bodies[-1]["disks"]] == ["pending", "pending"]
        assert child.terminate() == 0
    finally:
        host.close()


def test_signed_mount_makes_one_mount_one_line_one_storage_that_takes_backups(
        host: Host) -> None:
    """A signed host.mount_usb: one mount argv, one fstab line, one PVE storage with
    is_mountpoint=yes; it appears in ``storage`` and a backup policy on it is carried out.
    The same disk signed again changes nothing."""
    params = {"uuid": UUID, "name": "usb1", "fstype": "ext4", "content": "backup"}
    first = host.sign("host.mount_usb", params)
    child = host.start()
    wait_until(host.hub, lambda: host.outcome(first) is not None, TIMEOUT, child=child)
    outcome = host.outcome(first)
    assert outcome is not None and outcome["state"] == "applied", outcome
    assert outcome["vmid"] is None
    mp = f"{host.root}/usb1"
    assert len(host.fake.calls("mount")) == 1
    assert host.fake.calls("mount")[0][-2:] == [f"UUID={UUID}", mp]
    ours = [e for e in parse_fstab(host.fstab.read_text()) if e.mountpoint == mp]
    assert [(e.source, e.fstype) for e in ours] == [(f"UUID={UUID}", "ext4")]
    assert "nofail,x-systemd.device-timeout=10s" in ours[0].options
    configs = [s for s in _storage_cfg(host) if s["storage"] == "usb1"]
    assert configs == [{"storage": "usb1", "type": "dir", "content": "backup", "path": mp,
                        "is_mountpoint": "yes", "nodes": "pve1"}]
    body = wait_report(host.hub, lambda b: any(s["storage"] == "usb1" and s["active"]
                                               for s in b["storage"]), TIMEOUT, child=child)
    assert any(a["op_id"] == first and a["vmid"] is None for a in body["audit"])

    second = host.sign("host.mount_usb", params)
    wait_until(host.hub, lambda: host.outcome(second) is not None, TIMEOUT, child=child)
    again = host.outcome(second)
    assert again is not None and again["state"] == "applied" and "nothing to do" in (
        again["reason"] or "")
    assert len(host.fake.calls("mount")) == 1
    assert len([e for e in parse_fstab(host.fstab.read_text()) if e.mountpoint == mp]) == 1

    host.hub.set_desired({"generation": 1, "guests": {
        "102": {"type": "lxc", "backup": {"storage": "usb1", "every_h": 24}}}})
    wait_until(host.hub, lambda: bool(host.pve.backups("usb1")), TIMEOUT, child=child)
    assert [b["vmid"] for b in host.pve.backups("usb1")] == [102]
    assert child.terminate() == 0


def _storage_cfg(host: Host) -> list[dict[str, Any]]:
    session = pinned_session(host.pve.fingerprint, host.pve.auth_header)
    answer = session.get(f"{host.pve.url}/api2/json/storage", timeout=10)
    data: list[dict[str, Any]] = answer.json()["data"]
    return [{k: v for k, v in s.items() if k != "digest"} for s in data]
