"""The pure host-storage rules: usage alerts, disk/sensor entries, USB disk params and
decisions, which task uses a storage."""

from __future__ import annotations

from typing import Any

import pytest

from felhom_agent.host.health import (
    DiskEntry,
    disk_entry,
    sensor_entries,
    smart_device_type,
    smart_note,
    tool_problem,
)
from felhom_agent.host.thresholds import alert, usage_pct
from felhom_agent.host.usb import (
    UsbFacts,
    decide_mount,
    decide_unmount,
    is_our_storage,
    mount_params_problem,
    task_uses_storage,
    unmount_params_problem,
)
from felhom_agent.privileged import (
    CommandFailed,
    CommandTimeout,
    OutputParseError,
    ProgramNotFound,
    parse_sensors,
    parse_smartctl,
)
from felhom_agent.privileged.parse import BlockDevice, Mounted
from felhom_agent.proxmox.backup_models import StorageConfig
from felhom_agent.proxmox.models import Disk
from tests.privileged.priv_fakes import DATA

UUID = "0f3c6a2e-9d1b-4c55-8a0e-7e2b5d8c1f00"
GOOD = {"uuid": UUID, "name": "usb1", "fstype": "ext4", "content": "backup"}
MP = "/mnt/felhom/usb1"


# -- thresholds -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("used", "total", "pct", "level"),
    [(0, 100, 0.0, None), (849, 1000, 84.9, None), (850, 1000, 85.0, "warn"),
     (949, 1000, 94.9, "warn"), (950, 1000, 95.0, "crit"), (1000, 1000, 100.0, "crit"),
     (None, 1000, None, None), (10, None, None, None), (0, 0, None, None)],
)
def test_usage_and_alert_boundaries(used: int | None, total: int | None, pct: float | None,
                                    level: str | None) -> None:
    """Thresholds are inclusive; unknown sizes (an unreachable storage) give no alert."""
    assert usage_pct(used, total) == pct
    assert alert(pct, warn_pct=85, crit_pct=95) == level


def test_equal_thresholds_go_straight_to_crit() -> None:
    """warn == crit: at the threshold the storage is crit, below it nothing."""
    assert alert(90.0, warn_pct=90, crit_pct=90) == "crit"
    assert alert(89.9, warn_pct=90, crit_pct=90) is None


# -- disk entries ---------------------------------------------------------------------------


def _disk(**kw: Any) -> Disk:
    base = {"devpath": "/dev/sdb", "size": 4_000_787_030_016, "type": "usb",
            "model": "Elements", "serial": "", "health": "UNKNOWN", "wearout": "N/A"}
    return Disk.from_api({**base, **kw})


def _smart(name: str = "smartctl_ata.json", changes: dict[str, Any] | None = None,
           **top: Any) -> bytes:
    import json

    doc = json.loads((DATA / name).read_text())
    doc.update(top)
    for path, value in (changes or {}).items():
        node = doc
        keys = path.split(".")
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = value
    return json.dumps(doc).encode()


def test_smart_decides_health_and_brings_the_temperature() -> None:
    """smartctl's verdict wins over PVE's; temperature and a missing serial come from SMART."""
    entry = disk_entry(_disk(), parse_smartctl(_smart()), "ok")
    assert entry == DiskEntry(devpath="/dev/sdb", model="Elements", serial="WX11D9000001",
                              size=4_000_787_030_016, type="usb", health="PASSED",
                              wearout=None, temperature_c=36, smart="ok")
    failing = parse_smartctl(_smart(changes={"smart_status.passed": False}))
    assert disk_entry(_disk(health="PASSED"), failing, "ok").health == "FAILED"
    bit3 = parse_smartctl(_smart(changes={"smartctl.exit_status": 8}))
    assert disk_entry(_disk(health="PASSED"), bit3, "ok").health == "FAILED"


def test_nvme_wearout_and_temperature_from_its_health_log() -> None:
    """An NVMe disk without PVE wearout gets 100 - percentage_used; its temperature."""
    report = parse_smartctl(_smart("smartctl_nvme.json", temperature=None))
    entry = disk_entry(_disk(devpath="/dev/nvme0n1", type="nvme"), report, "ok")
    assert (entry.wearout, entry.temperature_c, entry.health) == (97, 41, "PASSED")


@pytest.mark.parametrize(("api", "expected"),
                         [("PASSED", "PASSED"), ("OK", "PASSED"), ("FAILED", "FAILED"),
                          ("UNKNOWN", "UNKNOWN"), ("", "UNKNOWN"), ("weird", "UNKNOWN")])
def test_without_smart_pve_health_is_normalised(api: str, expected: str) -> None:
    """No SMART reading: PVE's health, normalised to PASSED/FAILED/UNKNOWN; no temperature."""
    entry = disk_entry(_disk(health=api, wearout="98"), None, "off")
    assert (entry.health, entry.temperature_c, entry.wearout, entry.smart) == (
        expected, None, 98, "off")


def test_usb_disks_need_sat_and_others_autodetect() -> None:
    """smartctl gets ``-d sat`` for a disk PVE types ``usb`` only."""
    assert smart_device_type(_disk(type="usb")) == "sat"
    assert smart_device_type(_disk(type="hdd")) is None


def test_smartctl_error_bits_are_noted_findings_are_not() -> None:
    """Bits 0-2 are an errors entry (data still used); bits 3-7 are not errors."""
    partial = parse_smartctl(_smart("smartctl_nvme.json"))  # exit status 4, bit 2
    note = smart_note("/dev/nvme0", partial)
    assert note is not None and "error bits 100" in note and "Read Self-test Log" in note
    assert smart_note("/dev/sda", parse_smartctl(_smart(changes={"smartctl.exit_status": 0xF8}))) \
        is None


def test_tool_problems_name_what_to_install() -> None:
    """A missing tool (local or over SSH) names its package; others keep their message."""
    missing = ProgramNotFound("cannot start smartctl: No such file", program="smartctl")
    assert "install smartmontools (apt install smartmontools)" in tool_problem(
        missing, "smartctl /dev/sda")
    remote = CommandFailed("sensors failed", program="sensors", returncode=127,
                           stderr="sh: sensors: not found")
    assert "install lm-sensors" in tool_problem(remote, "sensors -j")
    hung = CommandTimeout("smartctl ran longer than 60 s and was killed", program="smartctl")
    assert tool_problem(hung, "smartctl /dev/sda").endswith("was killed")
    bad = OutputParseError("sensors output is not JSON", program="sensors")
    assert "not JSON" in tool_problem(bad, "sensors -j")


def test_sensor_entries_are_the_temperatures() -> None:
    """Only temperature sensors with a current reading; fans, voltages, alarms left out."""
    entries = sensor_entries(parse_sensors((DATA / "sensors.json").read_bytes()))
    assert [(e.chip, e.label, e.celsius) for e in entries] == [
        ("coretemp-isa-0000", "Package id 0", 45.0), ("coretemp-isa-0000", "Core 0", 43.0),
        ("nvme-pci-0100", "Composite", 40.85)]


# -- USB params -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"uuid": "not-a-uuid"}, "is not a file system UUID"),
        ({"uuid": "0F3C-ABCD"}, "is not a file system UUID"),
        ({"uuid": UUID + "0"}, "is not a file system UUID"),
        ({"uuid": UUID[:-1] + "g"}, "is not a file system UUID"),
        ({"uuid": 7}, "is not a file system UUID"),
        ({"name": "USB1"}, "[a-z][a-z0-9-]{0,31}"),
        ({"name": "1usb"}, "[a-z][a-z0-9-]{0,31}"),
        ({"name": "usb_1"}, "[a-z][a-z0-9-]{0,31}"),
        ({"name": "usb/1"}, "[a-z][a-z0-9-]{0,31}"),
        ({"name": "../etc"}, "[a-z][a-z0-9-]{0,31}"),
        ({"name": "a" * 33}, "[a-z][a-z0-9-]{0,31}"),
        ({"name": ""}, "[a-z][a-z0-9-]{0,31}"),
        ({"name": "u"}, "at least 2 characters"),
        ({"name": "usb-"}, "end in a letter or digit"),
        ({"fstype": "ntfs"}, "is not one of ext4, xfs"),
        ({"fstype": "vfat"}, "is not one of ext4, xfs"),
        ({"fstype": "EXT4"}, "is not one of ext4, xfs"),
        ({"content": "images"}, "is not one of backup"),
        ({"content": "backup,iso"}, "is not one of backup"),
    ],
)
def test_every_bad_mount_param_is_named(change: dict[str, Any], fragment: str) -> None:
    """A UUID that is not one, a name outside the rule, an fstype or content outside the
    list: each is refused with what is allowed."""
    problem = mount_params_problem({**GOOD, **change})
    assert problem is not None and fragment in problem


def test_good_params_pass() -> None:
    """The issue's example params (and an upper-case UUID) are accepted."""
    assert mount_params_problem(GOOD) is None
    assert mount_params_problem({**GOOD, "uuid": UUID.upper(), "fstype": "xfs"}) is None
    assert mount_params_problem({**GOOD, "name": "a" * 32}) is None
    assert unmount_params_problem({"name": "usb1"}) is None
    assert unmount_params_problem({"name": "Usb1"}) is not None


# -- decisions ------------------------------------------------------------------------------


def _storage(name: str = "usb1", path: str = MP, flag: str | None = "yes",
             stype: str = "dir") -> StorageConfig:
    data: dict[str, Any] = {"storage": name, "type": stype, "path": path, "content": "backup"}
    if flag is not None:
        data["is_mountpoint"] = flag
    return StorageConfig.from_api(data)


DEVICE = BlockDevice(name="/dev/sdb1", uuid=UUID, fstype="ext4")
OURS = Mounted(target=MP, source="/dev/sdb1", fstype="ext4", uuid=UUID)


def _facts(**kw: Any) -> UsbFacts:
    base: dict[str, Any] = {"mountpoint": MP, "storages": (), "mounted": None,
                            "in_fstab": False, "devices": (DEVICE,)}
    return UsbFacts(**{**base, **kw})


def test_mount_goes_when_the_disk_is_there_and_nothing_is_taken() -> None:
    """A fresh disk: go; fully in place: nothing to do."""
    assert decide_mount(GOOD, _facts()).refused is None
    assert decide_mount(GOOD, _facts()).done is None
    done = decide_mount(GOOD, _facts(mounted=OURS, in_fstab=True, storages=(_storage(),)))
    assert done.done is not None and "nothing to do" in done.done
    # mounted with its line but no storage yet (a crash before the POST): go
    partial = decide_mount(GOOD, _facts(mounted=OURS, in_fstab=True))
    assert partial.refused is None and partial.done is None


@pytest.mark.parametrize(
    ("facts", "fragment"),
    [
        (_facts(devices=()), "is the disk plugged in"),
        (_facts(devices=(BlockDevice("/dev/sdb1", UUID, "xfs"),)), "holds xfs, not ext4"),
        (_facts(mounted=Mounted(MP, "/dev/sdc1", "xfs", "1" * 8 + UUID[8:])),
         "already used by /dev/sdc1"),
        (_facts(fstab_conflict="fstab:3 already mounts /dev/sdc1 on /mnt/felhom/usb1"),
         "fstab:3"),
        (_facts(storages=(_storage(stype="nfs", path="/srv/x", flag=None),)),
         "storage id usb1 is taken by a nfs storage"),
        (_facts(storages=(_storage(flag=None),)), "storage id usb1 is taken"),
        (_facts(storages=(_storage(name="other"),)), "storage other already uses"),
    ],
)
def test_mount_refusals(facts: UsbFacts, fragment: str) -> None:
    """An absent device, another file system type, a mount point or fstab line or storage id
    used by something else: refused with the reason."""
    verdict = decide_mount(GOOD, facts)
    assert verdict.refused is not None and fragment in verdict.refused


def test_is_our_storage_needs_dir_path_and_mountpoint_flag() -> None:
    """Only a dir storage at the exact path with is_mountpoint is the agent's."""
    assert is_our_storage(_storage(), MP)
    assert is_our_storage(_storage(flag=MP), MP)
    assert not is_our_storage(_storage(flag="no"), MP)
    assert not is_our_storage(_storage(path=MP + "x"), MP)
    assert not is_our_storage(_storage(stype="nfs"), MP)


def test_unmount_decisions() -> None:
    """Busy: refused; nothing there: done; a foreign storage of that name: refused."""
    params = {"name": "usb1"}
    busy = decide_unmount(params, _facts(storages=(_storage(),), mounted=OURS,
                                         busy=("UPID:pve1:x",)))
    assert busy.refused is not None and "in use by task(s) UPID:pve1:x" in busy.refused
    gone = decide_unmount(params, _facts())
    assert gone.done is not None
    foreign = decide_unmount(params, _facts(storages=(_storage(stype="nfs"),)))
    assert foreign.refused is not None and "leaves it alone" in foreign.refused
    go = decide_unmount(params, _facts(storages=(_storage(),), mounted=OURS, in_fstab=True))
    assert go.refused is None and go.done is None


@pytest.mark.parametrize(
    ("ttype", "tid", "log", "uses"),
    [
        ("prunebackups", "101@usb1", [], True),
        ("imgdel", "101@usb1", [], True),
        ("imgdel", "101@local", [], False),
        ("vzdump", "101", ["INFO: starting new backup job: vzdump 101 --storage usb1 --mode "
                           "snapshot"], True),
        ("vzdump", "101", ["INFO: starting new backup job: vzdump 101 --storage pbs1"], False),
        ("vzdump", "101", ["INFO: starting new backup job: vzdump 101 --mode snapshot"], True),
        ("vzdump", "101", ["INFO: trying to get global lock - waiting..."], True),
        ("vzdump", "", [], True),
        ("qmrestore", "105", ["restore vma archive: zstd -q -d -c "
                              f"{MP}/dump/vzdump-qemu-101.vma.zst"], True),
        ("vzrestore", "105", ["extracting archive 'local:backup/vzdump-lxc-1.tar.zst'"], False),
        ("vzrestore", "105", ["recovering backed-up configuration"], True),
        ("qmstart", "101", [], False),
    ],
)
def test_which_task_uses_the_storage(ttype: str, tid: str, log: list[str], uses: bool) -> None:
    """A task uses the storage when its id or log says so, or when its log cannot tell."""
    assert task_uses_storage(ttype, tid, log, "usb1", MP) is uses
