"""The three fenced operations: exact argv lists, strict validation, refusal before any process."""

from __future__ import annotations

import pickle
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from felhom_agent.compose.root import privileged
from felhom_agent.config import PrivilegedConfig
from felhom_agent.privileged import (
    CommandFailed,
    DisabledRunner,
    LocalRunner,
    NetSpec,
    PctCreate,
    Privileged,
    PrivilegedDisabled,
    PrivilegedError,
    RefusedArgument,
    SensorsRead,
    SmartRead,
    SshRunner,
    UsbMount,
    UsbUnmount,
)
from felhom_agent.privileged.errors import CommandTimeout, SshHostKeyRejected
from felhom_agent.privileged.ops import PROGRAMS, BlockDevices, MountQuery
from tests.privileged.priv_fakes import DATA, RecordingRunner, Scripted
from tests.support.hypo import examples

GOOD_PCT: dict[str, Any] = {
    "vmid": 101,
    "ostemplate": "local:vztmpl/felhom-golden-1.4.tar.zst",
    "hostname": "web-1.example.org",
    "storage": "local-lvm",
    "net0": NetSpec(bridge="vmbr0"),
}
GOOD_USB: dict[str, Any] = {
    "source": "/dev/disk/by-id/usb-WD_Elements_25A3_5758313144393030-0:0-part1",
    "mountpoint": "/mnt/felhom/backup1",
    "fstype": "ext4",
}


def test_pct_create_argv_is_exact() -> None:
    """pct create gets positional vmid and template, then only validated options, keyctl=1."""
    op = PctCreate(**GOOD_PCT, rootfs_gb=16, memory_mb=2048, cores=2)
    assert op.argv() == [
        "pct", "create", "101", "local:vztmpl/felhom-golden-1.4.tar.zst",
        "--hostname", "web-1.example.org",
        "--rootfs", "local-lvm:16",
        "--memory", "2048",
        "--cores", "2",
        "--net0", "name=eth0,bridge=vmbr0,ip=dhcp",
        "--unprivileged", "1",
        "--features", "keyctl=1",
    ]


def test_pct_create_flags() -> None:
    """nesting adds nesting=1 next to keyctl=1; a privileged CT must be asked for explicitly."""
    argv = PctCreate(**GOOD_PCT, nesting=True, unprivileged=False).argv()
    assert argv[argv.index("--features") + 1] == "keyctl=1,nesting=1"
    assert argv[argv.index("--unprivileged") + 1] == "0"


def test_netspec_renders_every_part_in_fixed_order() -> None:
    """A static NetSpec renders name, bridge, ip, gw, ip6, gw6, hwaddr, tag, firewall in order."""
    spec = NetSpec(bridge="vmbr1", name="eth1", ip="192.0.2.10/24", gw="192.0.2.1",
                   ip6="2001:db8::10/64", gw6="2001:db8::1", hwaddr="BC:24:11:00:00:01",
                   tag=42, firewall=True)
    assert spec.render() == (
        "name=eth1,bridge=vmbr1,ip=192.0.2.10/24,gw=192.0.2.1,ip6=2001:db8::10/64,"
        "gw6=2001:db8::1,hwaddr=BC:24:11:00:00:01,tag=42,firewall=1"
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("vmid", 99), ("vmid", 1_000_000_000), ("vmid", -101), ("vmid", True), ("vmid", "101"),
        ("vmid", 101.0),
        ("ostemplate", "../../etc/shadow"),
        ("ostemplate", "local:vztmpl/../x.tar.zst"),
        ("ostemplate", "local:vztmpl/x.tar.zst;reboot"),
        ("ostemplate", "-local:vztmpl/x.tar.zst"),
        ("ostemplate", "local:vztmpl/x.tar.zst\n"),
        ("ostemplate", "local:vztmpl/x.tar.zst\x00"),
        ("ostemplate", "local:iso/x.iso"),
        ("ostemplate", "local:vztmpl/x y.tar.zst"),
        ("ostemplate", "local:vztmpl/sub/x.tar.zst"),
        ("ostemplate", "/var/lib/vz/template/cache/x.tar.zst"),
        ("hostname", "-oProxyCommand=x"), ("hostname", "a b"), ("hostname", "a;b"),
        ("hostname", "a..b"), ("hostname", "x" * 64), ("hostname", "a_b"), ("hostname", ""),
        ("hostname", "web$(id)"), ("hostname", "web\n"),
        ("storage", "local lvm"), ("storage", "-x"), ("storage", "a..b"), ("storage", "lo/cal"),
        ("storage", "local:"), ("storage", "x"),
        ("rootfs_gb", 0), ("rootfs_gb", 65537),
        ("memory_mb", 8), ("memory_mb", 2**21), ("memory_mb", 1.5),
        ("cores", 0), ("cores", 513),
        ("unprivileged", "yes"), ("nesting", 1),
        ("net0", "name=eth0,bridge=vmbr0"),
    ],
)
def test_pct_create_refuses_hostile_values(field: str, value: object) -> None:
    """Every PctCreate value outside its allow-list is refused, naming the field."""
    with pytest.raises(RefusedArgument) as info:
        PctCreate(**{**GOOD_PCT, field: value})
    assert info.value.field == field


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"bridge": "vmbr0,ip=192.0.2.9/24"}, "bridge"),
        ({"bridge": "vmbr0 "}, "bridge"),
        ({"bridge": "vmbr0", "name": "eth100"}, "name"),
        ({"bridge": "vmbr0", "name": "lo"}, "name"),
        ({"bridge": "vmbr0", "ip": "192.0.2.10"}, "ip"),
        ({"bridge": "vmbr0", "ip": "192.0.2.300/24"}, "ip"),
        ({"bridge": "vmbr0", "ip": "dhcp,gw=192.0.2.1"}, "ip"),
        ({"bridge": "vmbr0", "gw": "192.0.2.1"}, "gw"),
        ({"bridge": "vmbr0", "ip": "192.0.2.10/24", "gw": "2001:db8::1"}, "gw"),
        ({"bridge": "vmbr0", "ip6": "2001:db8::zz/64"}, "ip6"),
        ({"bridge": "vmbr0", "gw6": "2001:db8::1"}, "gw6"),
        ({"bridge": "vmbr0", "hwaddr": "bc:24:11:00:00:01"}, "hwaddr"),
        ({"bridge": "vmbr0", "hwaddr": "01:24:11:00:00:01"}, "hwaddr"),
        ({"bridge": "vmbr0", "tag": 0}, "tag"),
        ({"bridge": "vmbr0", "tag": 4095}, "tag"),
        ({"bridge": "vmbr0", "firewall": 1}, "firewall"),
    ],
)
def test_netspec_refuses_hostile_values(kwargs: dict[str, Any], field: str) -> None:
    """A NetSpec part that could inject another key or is malformed is refused."""
    with pytest.raises(RefusedArgument) as info:
        NetSpec(**kwargs)
    assert info.value.field == field


def test_usb_mount_argv_and_fstab_fields() -> None:
    """The mount argv and the fstab line carry the same source, target, type and fixed options."""
    op = UsbMount(**GOOD_USB)
    opts = "nofail,x-systemd.device-timeout=10s,noatime,nodev,nosuid,noexec"
    assert op.fstab_fields() == (GOOD_USB["source"], "/mnt/felhom/backup1", "ext4", opts,
                                 "0", "2")
    assert op.mount_argv() == ["mount", "-t", "ext4", "-o", opts, "--", GOOD_USB["source"],
                               "/mnt/felhom/backup1"]
    assert op.mkdir_argv() == ["mkdir", "-p", "-m", "0755", "--", "/mnt/felhom/backup1"]
    ro = UsbMount(source="UUID=0123-ABCD", mountpoint="/mnt/felhom/a/b", fstype="vfat",
                  read_only=True)
    assert ro.fstab_fields()[3].endswith(",ro")
    assert ro.fstab_fields()[5] == "0"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("source", "/dev/sda1"),
        ("source", "/dev/disk/by-id/ata-WDC_WD40-part1"),
        ("source", "/dev/disk/by-id/usb-../../sda"),
        ("source", "/dev/disk/by-id/usb-X;reboot"),
        ("source", "/dev/disk/by-id/usb-X Y"),
        ("source", "UUID=xyz"),
        ("source", "UUID=0123-abcd"),
        ("source", "LABEL=backup"),
        ("source", "-o remount"),
        ("mountpoint", "/mnt/felhom"),
        ("mountpoint", "/mnt/felhom/"),
        ("mountpoint", "/mnt/felhom/../etc"),
        ("mountpoint", "/mnt/felhom/x/.."),
        ("mountpoint", "/mnt/other/x"),
        ("mountpoint", "/mnt/felhomx"),
        ("mountpoint", "/mnt/felhom/a b"),
        ("mountpoint", "/mnt/felhom/-x"),
        ("mountpoint", "/mnt/felhom//x"),
        ("mountpoint", "/mnt/felhom/x\n"),
        ("mountpoint", "/mnt/felhom/a/b/c/d/e"),
        ("mountpoint", "mnt/felhom/x"),
        ("fstype", "ntfs"), ("fstype", "ext4,rw"), ("fstype", "EXT4"), ("fstype", "nfs"),
        ("read_only", "no"),
    ],
)
def test_usb_mount_refuses_hostile_values(field: str, value: object) -> None:
    """USB sources other than by-id/usb or UUID, mount points outside the root, odd fs refused."""
    with pytest.raises(RefusedArgument) as info:
        UsbMount(**{**GOOD_USB, field: value})
    assert info.value.field == field


def test_unmount_and_read_argv() -> None:
    """umount takes exactly the mount point; findmnt and lsblk ask for JSON and fixed columns."""
    assert UsbUnmount("/mnt/felhom/backup1").umount_argv() == [
        "umount", "--", "/mnt/felhom/backup1"]
    assert MountQuery("/mnt/felhom/backup1").argv() == [
        "findmnt", "--json", "--mountpoint", "/mnt/felhom/backup1",
        "--output", "TARGET,SOURCE,FSTYPE,UUID"]
    assert BlockDevices().argv() == ["lsblk", "--json", "--paths", "--output",
                                     "NAME,UUID,FSTYPE"]
    other = UsbMount(source="UUID=0123-ABCD", mountpoint="/srv/usb/x", fstype="vfat",
                     root="/srv/usb")
    assert other.mount_argv()[-1] == "/srv/usb/x"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"mountpoint": "/mnt/felhom"}, "mountpoint"),
        ({"mountpoint": "/mnt/felhom/../etc"}, "mountpoint"),
        ({"mountpoint": "/mnt/other/x"}, "mountpoint"),
        ({"mountpoint": "/mnt/felhom/x", "root": "/mnt/felhom/"}, "root"),
        ({"mountpoint": "/x/y", "root": "x"}, "root"),
        ({"mountpoint": "/a b/y", "root": "/a b"}, "root"),
        ({"mountpoint": "/mnt/felhom/-x"}, "mountpoint"),
    ],
)
def test_unmount_refuses_hostile_values(kwargs: dict[str, Any], field: str) -> None:
    """umount only ever gets a plain path below the mount root."""
    with pytest.raises(RefusedArgument) as info:
        UsbUnmount(**kwargs)
    assert info.value.field == field


def test_smart_read_argv() -> None:
    """smartctl gets --json -a, an optional allow-listed -d type, then the device."""
    assert SmartRead("/dev/sda").argv() == ["smartctl", "--json", "-a", "/dev/sda"]
    assert SmartRead("/dev/nvme0n1").argv()[-1] == "/dev/nvme0n1"
    usb = SmartRead("/dev/disk/by-id/usb-WD_Elements_25A3-0:0", device_type="sat")
    assert usb.argv() == ["smartctl", "--json", "-a", "-d", "sat",
                          "/dev/disk/by-id/usb-WD_Elements_25A3-0:0"]
    assert SensorsRead().argv() == ["sensors", "-j"]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"device": "/dev/sda1"}, "device"),
        ({"device": "/dev/../dev/sda"}, "device"),
        ({"device": "/etc/passwd"}, "device"),
        ({"device": "-a"}, "device"),
        ({"device": "/dev/sda;id"}, "device"),
        ({"device": "/dev/disk/by-id/dm-name-pve-root"}, "device"),
        ({"device": "/dev/sda", "device_type": "megaraid,0"}, "device_type"),
        ({"device": "/dev/sda", "device_type": "-d"}, "device_type"),
        ({"device": "/dev/sda", "device_type": ""}, "device_type"),
    ],
)
def test_smart_read_refuses_hostile_values(kwargs: dict[str, Any], field: str) -> None:
    """Only whole-disk device nodes and allow-listed -d types reach smartctl."""
    with pytest.raises(RefusedArgument) as info:
        SmartRead(**kwargs)
    assert info.value.field == field


def test_refusal_message_is_one_line_and_bounded() -> None:
    """A refused value is shown with repr and truncated, so it cannot forge log lines."""
    with pytest.raises(RefusedArgument) as info:
        PctCreate(**{**GOOD_PCT, "hostname": "x\nFAKE LOG LINE" + "y" * 200})
    message = str(info.value)
    assert "\n" not in message
    assert len(message) < 200


def test_facade_refuses_wrong_types_before_any_process(tmp_path: Path) -> None:
    """Privileged accepts only its operation classes; anything else never reaches the runner."""
    runner = RecordingRunner()
    priv = Privileged(runner, fstab_path=tmp_path / "fstab")
    smart = SmartRead("/dev/sda")
    with pytest.raises(RefusedArgument):
        priv.create_golden_ct(smart)  # type: ignore[arg-type]
    with pytest.raises(RefusedArgument):
        priv.mount_usb({"source": "/dev/sda1"})  # type: ignore[arg-type]
    with pytest.raises(RefusedArgument):
        priv.read_smart(["smartctl", "-a", "/dev/sda"])  # type: ignore[arg-type]
    with pytest.raises(RefusedArgument):
        priv.read_sensors(smart)  # type: ignore[arg-type]
    assert runner.calls == []


@pytest.mark.parametrize(
    ("make", "field", "forged"),
    [
        (lambda: PctCreate(**GOOD_PCT), "vmid", 5),
        (lambda: PctCreate(**GOOD_PCT), "hostname", "x; reboot"),
        (lambda: UsbMount(**GOOD_USB), "mountpoint", "/etc"),
        (lambda: SmartRead("/dev/sda"), "device", "/dev/mem"),
    ],
)
def test_facade_revalidates_forged_instances(tmp_path: Path, make: Any, field: str,
                                              forged: object) -> None:
    """An argument object mutated past its frozen validators is refused before any process."""
    runner = RecordingRunner()
    priv = Privileged(runner, fstab_path=tmp_path / "fstab")
    op = make()
    object.__setattr__(op, field, forged)
    methods: dict[type, Callable[[Any], object]] = {
        PctCreate: priv.create_golden_ct, UsbMount: priv.mount_usb, SmartRead: priv.read_smart}
    method = methods[type(op)]
    with pytest.raises(RefusedArgument):
        method(op)
    assert runner.calls == []
    assert not (tmp_path / "fstab").exists()


def test_facade_refuses_forged_nested_netspec() -> None:
    """A NetSpec forged past its validators is caught when the PctCreate is re-validated."""
    spec = NetSpec(bridge="vmbr0")
    object.__setattr__(spec, "bridge", "vmbr0,ip=192.0.2.9/24")
    runner = RecordingRunner()
    with pytest.raises(RefusedArgument):
        Privileged(runner).create_golden_ct(PctCreate(**{**GOOD_PCT, "net0": spec}))
    assert runner.calls == []


def test_facade_starts_only_allow_listed_programs(tmp_path: Path) -> None:
    """Running every operation starts only programs from PROGRAMS, each with its timeout."""
    runner = RecordingRunner(script={
        "smartctl": Scripted(stdout=(DATA / "smartctl_ata.json").read_bytes()),
        "sensors": Scripted(stdout=(DATA / "sensors.json").read_bytes()),
        "lsblk": Scripted(stdout=b'{"blockdevices": []}'),
    })
    priv = Privileged(runner, fstab_path=tmp_path / "fstab")
    priv.create_golden_ct(PctCreate(**GOOD_PCT))
    priv.mount_usb(UsbMount(**GOOD_USB))
    priv.read_smart(SmartRead("/dev/sdb", device_type="sat"))
    priv.read_sensors()
    priv.unmount_usb(UsbUnmount(GOOD_USB["mountpoint"]))
    assert priv.block_devices() == ()
    assert [c[0] for c in runner.calls] == ["pct", "findmnt", "mkdir", "mount", "smartctl",
                                            "sensors", "findmnt", "lsblk"]
    assert {c[0] for c in runner.calls} <= PROGRAMS
    assert runner.timeouts == [900.0, 15.0, 10.0, 120.0, 60.0, 15.0, 15.0, 15.0]


def test_pct_create_failure_is_typed() -> None:
    """A non-zero pct exit raises CommandFailed with the status and pct's stderr."""
    runner = RecordingRunner(script={"pct": Scripted(
        returncode=255, stderr=b"CT 101 already exists on node 'pve1'\n")})
    with pytest.raises(CommandFailed) as info:
        Privileged(runner).create_golden_ct(PctCreate(**GOOD_PCT))
    assert info.value.returncode == 255
    assert info.value.program == "pct"
    assert "already exists" in str(info.value)


def test_smart_health_bits_return_data_but_open_failure_raises() -> None:
    """smartctl exit bits >= 2 come back as data; bits 0-1 raise with smartctl's own message."""
    nvme = (DATA / "smartctl_nvme.json").read_bytes()
    runner = RecordingRunner(script={"smartctl": Scripted(returncode=4, stdout=nvme)})
    report = Privileged(runner).read_smart(SmartRead("/dev/nvme0"))
    assert report.exit_status == 4
    failed = (DATA / "smartctl_open_failed.json").read_bytes()
    runner = RecordingRunner(script={"smartctl": Scripted(returncode=1, stdout=failed)})
    with pytest.raises(CommandFailed) as info:
        Privileged(runner).read_smart(SmartRead("/dev/sdz"))
    assert "Unable to detect device type" in str(info.value)
    runner = RecordingRunner(script={"smartctl": Scripted(returncode=2, stdout=b"",
                                                          stderr=b"open failed")})
    with pytest.raises(CommandFailed, match="open failed"):
        Privileged(runner).read_smart(SmartRead("/dev/sdz"))


def test_sensors_failure_is_typed() -> None:
    """sensors exiting non-zero (no sensors found) raises CommandFailed."""
    runner = RecordingRunner(script={"sensors": Scripted(returncode=1,
                                                         stderr=b"No sensors found!\n")})
    with pytest.raises(CommandFailed, match="No sensors found"):
        Privileged(runner).read_sensors()


def test_privileged_from_config_modes(tmp_path: Path) -> None:
    """mode local builds a LocalRunner, ssh an SshRunner, off a runner that refuses everything."""
    local = privileged(PrivilegedConfig(mode="local"))
    assert isinstance(local._runner, LocalRunner)
    ssh = privileged(PrivilegedConfig(
        mode="ssh", ssh_host="pve1.example.org", ssh_key_file=tmp_path / "id",
        ssh_known_hosts=tmp_path / "known_hosts"))
    assert isinstance(ssh._runner, SshRunner)
    off = privileged(PrivilegedConfig(mode="off"))
    assert isinstance(off._runner, DisabledRunner)
    with pytest.raises(PrivilegedDisabled):
        off.read_sensors()
    with pytest.raises(PrivilegedDisabled):
        privileged(PrivilegedConfig(mode="ssh"))


@pytest.mark.parametrize(
    "err",
    [
        RefusedArgument("vmid", 5, "must be within 100..999999999"),
        CommandFailed("pct create 101 failed", program="pct", returncode=2, stderr="boom"),
        CommandTimeout("sleep ran too long", program="sleep"),
        SshHostKeyRejected("unknown host key"),
    ],
)
def test_errors_pickle_with_their_context(err: PrivilegedError) -> None:
    """Privileged errors survive pickling with message and context attributes intact."""
    clone = pickle.loads(pickle.dumps(err))  # noqa: S301 - our own object, round trip
    assert type(clone) is type(err)
    assert str(clone) == str(err)
    assert clone.__dict__ == err.__dict__


def test_evolve_keeps_validation() -> None:
    """attrs.evolve on an operation re-runs its validators (the facade relies on it)."""
    with pytest.raises(RefusedArgument):
        attrs.evolve(PctCreate(**GOOD_PCT), cores=0)


_SAFE_WORD = re.compile(r"[A-Za-z0-9._:/+=,-]+")


_OUR_OPTIONS = frozenset({"--hostname", "--rootfs", "--memory", "--cores", "--net0",
                          "--unprivileged", "--features", "-t", "-o", "--", "--json", "-a",
                          "-d"})


def _assert_safe(word: str) -> None:
    assert _SAFE_WORD.fullmatch(word), word
    assert word in _OUR_OPTIONS or not word.startswith("-"), word
    assert ".." not in word


@settings(max_examples=examples(300))
@given(value=st.text(max_size=40) | st.from_regex(r"[a-z0-9.:/_-]{1,30}", fullmatch=True))
def test_any_accepted_string_yields_only_safe_argv_words(value: str) -> None:
    """Whatever string is offered, an accepted value never puts an unsafe word on the argv."""
    attempts: list[Callable[[], list[str]]] = [
        lambda: PctCreate(**{**GOOD_PCT, "hostname": value}).argv(),
        lambda: PctCreate(**{**GOOD_PCT, "storage": value}).argv(),
        lambda: PctCreate(**{**GOOD_PCT, "ostemplate": f"local:vztmpl/{value}.tar.zst"}).argv(),
        lambda: UsbMount(**{**GOOD_USB, "mountpoint": f"/mnt/felhom/{value}"}).mount_argv(),
        lambda: UsbMount(**{**GOOD_USB, "source": f"/dev/disk/by-id/usb-{value}"}).mount_argv(),
        lambda: SmartRead(f"/dev/{value}").argv(),
    ]
    for attempt in attempts:
        try:
            argv = attempt()
        except RefusedArgument:
            continue
        for word in argv[1:]:
            _assert_safe(word)


def test_facade_runs_only_allow_listed_programs_even_internally(tmp_path: Path) -> None:
    """The facade's last check refuses a program outside PROGRAMS before the runner sees it."""
    runner = RecordingRunner()
    priv = Privileged(runner)
    for argv in (["sh", "-c", "id"], ["/usr/sbin/pct", "list"], []):
        with pytest.raises(RefusedArgument):
            priv._run(argv, 1.0, "x")
    assert runner.calls == []
