"""``host.mount_usb`` / ``host.unmount_usb`` through the engine, the queue's host lane and the
executor, against the PVE simulator and fake host tools (real processes, scratch fstab and
mount root; the machine's ``/etc/fstab`` is never touched).

The simulator's mount table is the fake tools' (its ``mounts_file``), so the storage the op
adds goes online exactly when the fake disk is mounted.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from felhom_agent.compose.root import build_executor
from felhom_agent.execution.engine import Engine
from felhom_agent.execution.executor import ExecResult, HostJob
from felhom_agent.execution.queue import HOST_LANE, SerializerQueue
from felhom_agent.kinds.model import HostTools
from felhom_agent.planning.providers import HubProvider
from felhom_agent.privileged import DisabledRunner, LocalRunner, Privileged
from felhom_agent.privileged.fstab import parse_fstab
from felhom_agent.proxmox.client import ProxmoxClient
from felhom_agent.sim.pve import PveSimulator
from felhom_agent.state.audit import AuditLog
from felhom_agent.state.journal import Journal, OpState
from tests.privileged.fakehost import FakeHost
from tests.sim.helpers import make_scenario
from tests.support.pve import sim_client

LOG = logging.getLogger("test.host_kinds")
#: A hang guard for waits on jobs (never a limit on how fast they must be).
TIMEOUT = 30.0
UUID = "0f3c6a2e-9d1b-4c55-8a0e-7e2b5d8c1f00"
MOUNT = {"uuid": UUID, "name": "usb1", "fstype": "ext4", "content": "backup"}


class Rig:
    """Simulator, fake host, journal, audit log, queue, executor with host tools, engine."""

    def __init__(self, tmp: Path, *, fenced_off: bool = False) -> None:
        self.tmp = tmp
        self.fake = FakeHost(tmp / "host", {"devices": [
            {"disk": "/dev/sda", "name": "/dev/sda1", "uuid": UUID, "fstype": "ext4"}]})
        self.root = tmp / "mnt"
        self.root.mkdir()
        self.fstab = tmp / "fstab"
        self.fstab.write_text("/dev/pve/root / ext4 errors=remount-ro 0 1\n")
        self.sim = PveSimulator(make_scenario(mounts_file=str(self.fake.mounts)))
        self.sim.__enter__()
        self.client: ProxmoxClient = sim_client(self.sim)
        runner = DisabledRunner() if fenced_off else LocalRunner(path=self.fake.path)
        self.fenced = Privileged(runner, fstab_path=self.fstab, mount_root=str(self.root))
        self.stop = threading.Event()
        self.journal = Journal.open(tmp / "state", clock=time.time, logger=LOG)
        self.audit = AuditLog.open(tmp / "state", clock=time.time, logger=LOG)
        self.queue = SerializerQueue(workers=2, logger=LOG)
        self.queue.start()
        self.build()

    def build(self) -> None:
        watcher, executor = build_executor(
            client=self.client, journal=self.journal, audit=self.audit, task_timeout_s=10.0,
            stop_event=self.stop, clock=time.time, logger=LOG,
            host=HostTools(client=self.client, fenced=self.fenced, node="pve1"))
        self.engine = Engine(client=self.client, node="pve1", provider=HubProvider(logger=LOG),
                             queue=self.queue, journal=self.journal, audit=self.audit,
                             executor=executor, watcher=watcher, interval_s=30.0,
                             stop_event=self.stop, logger=LOG)

    def run(self, kind: str, params: dict[str, Any], op_id: str | None = None) -> ExecResult:
        job = HostJob(op_id or str(uuid.uuid4()), kind, params, "alice@ops")
        return self.engine.submit_host(job).result(TIMEOUT)

    def usb_storages(self) -> list[dict[str, Any]]:
        return [s for s in self.client_config() if s["storage"] == "usb1"]

    def client_config(self) -> list[dict[str, Any]]:
        return [{"storage": c.storage, "type": c.type, "path": c.path,
                 "is_mountpoint": c.is_mountpoint, "nodes": c.nodes, "content": c.content}
                for c in self.client.storage_config()]

    def our_lines(self) -> list[str]:
        return [e.source for e in parse_fstab(self.fstab.read_text())
                if e.mountpoint.startswith(str(self.root))]

    def audit_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in
                (self.tmp / "state" / "audit.log").read_text().splitlines()]

    def close(self) -> None:
        self.stop.set()
        self.engine.watcher.stop()
        self.queue.shutdown(5)
        self.journal.close()
        self.audit.close()
        self.client.close()
        self.sim.__exit__(None, None, None)


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    r = Rig(tmp_path)
    yield r
    r.close()


def test_mount_makes_one_mount_one_line_one_storage(rig: Rig) -> None:
    """One mount argv, one fstab line, one PVE storage (dir, is_mountpoint=yes, backup, our
    node) that is online because the disk is mounted; vmid null in journal, audit, result."""
    result = rig.run("host.mount_usb", MOUNT)
    assert (result.state, result.vmid) == ("applied", None), result.reason
    mp = f"{rig.root}/usb1"
    assert rig.fake.calls("mount") == [[
        "mount", "-t", "ext4", "-o",
        "nofail,x-systemd.device-timeout=10s,noatime,nodev,nosuid,noexec", "--",
        f"UUID={UUID}", mp]]
    assert rig.our_lines() == [f"UUID={UUID}"]
    assert "nofail,x-systemd.device-timeout=10s" in rig.fstab.read_text()
    assert rig.usb_storages() == [{"storage": "usb1", "type": "dir", "path": mp,
                                   "is_mountpoint": "yes", "nodes": ("pve1",),
                                   "content": ("backup",)}]
    listed = next(s for s in rig.client.storages() if s.storage == "usb1")
    assert listed.reachable and listed.total
    entry = rig.journal.get(result.op_id)
    assert entry is not None and entry.vmid is None and entry.began_at is not None
    assert [(a["kind"], a["vmid"], a["outcome"]) for a in rig.audit_lines()] == [
        ("host.mount_usb", None, "applied")]


def test_mounting_the_same_uuid_again_changes_nothing(rig: Rig) -> None:
    """A second op for the same disk: applied without a call (one record, no ``begin``);
    still one mount, one line, one storage. The same op id again: its stored outcome."""
    first = rig.run("host.mount_usb", MOUNT)
    second = rig.run("host.mount_usb", MOUNT)
    again = rig.run("host.mount_usb", MOUNT, op_id=first.op_id)
    assert second.state == "applied" and "nothing to do" in second.reason
    assert again.already_applied and again.state == "applied"
    entry = rig.journal.get(second.op_id)
    assert entry is not None and entry.began_at is None  # decided without a call
    assert len(rig.fake.calls("mount")) == 1
    assert rig.our_lines() == [f"UUID={UUID}"]
    assert len(rig.usb_storages()) == 1


@pytest.mark.parametrize(
    ("prepare", "fragment"),
    [
        ("absent", "is the disk plugged in"),
        ("busy-mountpoint", "already used by /dev/sdc1"),
        ("taken-id", "storage id usb1 is taken"),
        ("fstab-line", "remove or fix that line first"),
    ],
)
def test_mount_refusals_change_nothing(rig: Rig, prepare: str, fragment: str) -> None:
    """An absent device, a mount point used by something else, a taken storage id, another
    fstab line: refused with the reason in one record; no mount, no line, no storage."""
    params = dict(MOUNT)
    if prepare == "absent":
        params["uuid"] = "11111111-2222-3333-4444-555555555555"
    elif prepare == "busy-mountpoint":
        (rig.root / "usb1").mkdir()
        rig.fake.mounts.write_text(f"/dev/sdc1 {rig.root}/usb1 xfs rw 0 0\n")
    elif prepare == "taken-id":
        rig.client.add_mountpoint_dir_storage("usb1", "/srv/elsewhere", content=["backup"],
                                              nodes=["pve1"])
    else:
        with rig.fstab.open("a") as f:
            f.write(f"/dev/sdc1 {rig.root}/usb1 ext4 defaults 0 2\n")
    before = rig.fstab.read_text()
    result = rig.run("host.mount_usb", params)
    assert result.state == "refused" and fragment in result.reason, result.reason
    assert rig.fake.calls("mount") == [] and rig.fstab.read_text() == before
    entry = rig.journal.get(result.op_id)
    assert entry is not None and entry.began_at is None and entry.vmid is None


def test_missing_tool_fails_naming_the_package(rig: Rig) -> None:
    """findmnt not on PATH: the op fails (one record) saying what to install."""
    rig.fake.remove("findmnt")
    result = rig.run("host.mount_usb", MOUNT)
    assert result.state == "failed" and "install util-linux" in result.reason
    assert rig.fake.calls("mount") == []


def test_privileged_mode_off_refuses(tmp_path: Path) -> None:
    """Without a local fenced CLI a host op is refused, naming proxmox.privileged.mode."""
    rig = Rig(tmp_path, fenced_off=True)
    try:
        result = rig.run("host.mount_usb", MOUNT)
    finally:
        rig.close()
    assert result.state == "refused" and "proxmox.privileged.mode local" in result.reason


def test_unmount_removes_storage_mount_and_line_keeps_data(rig: Rig) -> None:
    """Unmount removes the storage entry (its backups stay on the disk: mounting again lists
    them), unmounts and removes the agent's line; the operator's lines stay."""
    rig.run("host.mount_usb", MOUNT)
    backup = rig.client.vzdump(102, "usb1")
    assert backup.upid is not None
    rig.client.wait(backup.upid)
    assert len(rig.client.backups("usb1")) == 1
    result = rig.run("host.unmount_usb", {"name": "usb1"})
    assert result.state == "applied", result.reason
    assert rig.usb_storages() == [] and rig.fake.mounted() == [] and rig.our_lines() == []
    assert rig.fstab.read_text() == "/dev/pve/root / ext4 errors=remount-ro 0 1\n"
    assert rig.fake.calls("umount") == [["umount", "--", f"{rig.root}/usb1"]]
    again = rig.run("host.unmount_usb", {"name": "usb1"})
    assert again.state == "applied" and "nothing to do" in again.reason
    rig.run("host.mount_usb", MOUNT)
    assert len(rig.client.backups("usb1")) == 1


def test_unmount_is_refused_while_a_task_uses_the_storage(rig: Rig) -> None:
    """A backup to the storage still running: refused, nothing removed."""
    rig.run("host.mount_usb", MOUNT)
    rig.sim.set_task_duration("vzdump", 3600.0)
    running = rig.client.vzdump(102, "usb1")
    try:
        result = rig.run("host.unmount_usb", {"name": "usb1"})
    finally:
        rig.sim.release_tasks()
    assert running.upid is not None
    assert result.state == "refused" and running.upid.raw in result.reason
    assert len(rig.usb_storages()) == 1 and rig.fake.calls("umount") == []


def test_a_crash_in_the_middle_is_completed_by_recovery(rig: Rig) -> None:
    """The agent died after the mount, before the fstab line and the storage: the pending op
    is run again by recovery on the host lane and completes; nothing is done twice."""
    op_id = str(uuid.uuid4())
    rig.journal.begin(op_id, None, "host.mount_usb", MOUNT, "alice@ops")
    (rig.root / "usb1").mkdir()
    rig.fake.mounts.write_text(f"/dev/sda1 {rig.root}/usb1 ext4 rw 0 0\n")
    report = rig.engine.recover()
    assert report.rerun == (op_id,)
    results = [h.result(TIMEOUT) for h in report.handles]
    assert [(r.op_id, r.state) for r in results] == [(op_id, "applied")]
    assert "completed after a restart" in results[0].reason
    assert rig.fake.calls("mount") == []  # already mounted: not mounted twice
    assert rig.our_lines() == [f"UUID={UUID}"] and len(rig.usb_storages()) == 1
    outcome = rig.journal.outcome(op_id)
    assert outcome is not None and outcome.state is OpState.APPLIED


def test_host_jobs_run_on_the_reserved_lane(rig: Rig) -> None:
    """Host jobs use lane 0, no guest's: a host op never blocks a guest lane."""
    assert HOST_LANE == 0
    seen: list[int] = []
    gate = threading.Event()
    handle = rig.queue.submit(HOST_LANE, lambda: gate.wait(TIMEOUT), label="hold host lane")
    seen.extend(rig.queue.depths())
    gate.set()
    handle.result(TIMEOUT)
    assert seen == [HOST_LANE]
    assert not rig.engine.busy(102)
