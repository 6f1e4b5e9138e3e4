"""USB mount: the fstab line is appended idempotently and crash-safely, mounts are not repeated.

The mount and unmount flows run the real :class:`LocalRunner` against the fake host tools of
:mod:`tests.privileged.fakehost` (``findmnt``, ``lsblk``, ``mount``, ``umount`` on ``PATH``) with
a scratch fstab and mount root; refusals that must happen before any process are checked with
the recording runner.
"""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from felhom_agent.durable import DurabilityError
from felhom_agent.privileged import (
    CommandFailed,
    DeviceNotFound,
    FstabConflict,
    LocalRunner,
    MountConflict,
    MountOutcome,
    Privileged,
    PrivilegedDisabled,
    RefusedArgument,
    UnmountOutcome,
    UsbMount,
    UsbUnmount,
)
from felhom_agent.privileged.fstab import ensure_fstab_line, parse_fstab, remove_fstab_lines
from felhom_agent.privileged.ops import USB_OPTIONS
from tests.privileged.fakehost import FakeHost
from tests.privileged.priv_fakes import RecordingRunner

EXISTING = (
    "# /etc/fstab: static file system information.\n"
    "/dev/pve/root / ext4 errors=remount-ro 0 1\n"
    "UUID=5A1B-2C3D /boot/efi vfat defaults 0 1\n"
    "\n"
    "/dev/pve/swap none swap sw 0 0\n"
)
USB = UsbMount(source="UUID=0f3c6a2e-9d1b-4c55-8a0e-7e2b5d8c1f00",
               mountpoint="/mnt/felhom/backup1", fstype="ext4")
LINE = ("UUID=0f3c6a2e-9d1b-4c55-8a0e-7e2b5d8c1f00\t/mnt/felhom/backup1\text4\t"
        "nofail,x-systemd.device-timeout=10s,noatime,nodev,nosuid,noexec\t0\t2\n")


UUID = "0f3c6a2e-9d1b-4c55-8a0e-7e2b5d8c1f00"
DEVICES = [{"disk": "/dev/sdb", "name": "/dev/sdb1", "uuid": UUID, "fstype": "ext4"}]


def _priv(tmp_path: Path, runner: RecordingRunner) -> Privileged:
    return Privileged(runner, fstab_path=tmp_path / "fstab")


def _host(tmp_path: Path, **host: object) -> tuple[FakeHost, Path]:
    """Fake tools with the USB disk attached, and a scratch mount root."""
    fake = FakeHost(tmp_path / "host", {"devices": DEVICES, **host})
    root = tmp_path / "mnt"
    root.mkdir()
    return fake, root


def _usb(root: Path, name: str = "backup1", uuid: str = UUID, fstype: str = "ext4") -> UsbMount:
    return UsbMount(source=f"UUID={uuid}", mountpoint=f"{root}/{name}", fstype=fstype,
                    root=str(root))


def _local(tmp_path: Path, fake: FakeHost, root: Path) -> Privileged:
    return Privileged(LocalRunner(path=fake.path), fstab_path=tmp_path / "fstab",
                      mount_root=str(root))


def test_line_appended_once_and_existing_lines_kept(tmp_path: Path) -> None:
    """The first call appends exactly our line after the operator's lines; the second is a no-op."""
    fstab = tmp_path / "fstab"
    fstab.write_text(EXISTING)
    fstab.chmod(0o644)
    assert ensure_fstab_line(fstab, USB.fstab_fields()) is True
    assert fstab.read_text() == EXISTING + LINE
    assert ensure_fstab_line(fstab, USB.fstab_fields()) is False
    assert fstab.read_text() == EXISTING + LINE
    assert stat.S_IMODE(fstab.stat().st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fstab"]  # no temp file left


def test_same_line_with_other_whitespace_is_recognised(tmp_path: Path) -> None:
    """An equivalent line written with spaces instead of tabs counts as present."""
    fstab = tmp_path / "fstab"
    fstab.write_text(EXISTING + "  " + LINE.replace("\t", "   "))
    assert ensure_fstab_line(fstab, USB.fstab_fields()) is False


def test_missing_newline_and_missing_file(tmp_path: Path) -> None:
    """A file without a final newline gets one before our line; a missing file is created 0644."""
    fstab = tmp_path / "fstab"
    fstab.write_text(EXISTING.rstrip("\n"))
    ensure_fstab_line(fstab, USB.fstab_fields())
    assert fstab.read_text() == EXISTING + LINE
    fresh = tmp_path / "fresh"
    ensure_fstab_line(fresh, USB.fstab_fields())
    assert fresh.read_text() == LINE
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o644


@pytest.mark.parametrize(
    "line",
    [
        "/dev/sdc1 /mnt/felhom/backup1 ext4 defaults 0 2\n",
        "UUID=0f3c6a2e-9d1b-4c55-8a0e-7e2b5d8c1f00 /mnt/felhom/backup1 ext4 defaults 0 2\n",
        "UUID=0f3c6a2e-9d1b-4c55-8a0e-7e2b5d8c1f00 /srv/usb ext4 defaults 0 2\n",
        "/dev/sdc1 /mnt/felhom/backup1/ xfs defaults\n",
    ],
)
def test_conflicting_line_is_refused_and_file_untouched(tmp_path: Path, line: str) -> None:
    """Another line for our mount point or our source is never rewritten: FstabConflict."""
    fstab = tmp_path / "fstab"
    fstab.write_text(EXISTING + line)
    with pytest.raises(FstabConflict, match=r"fstab:6"):
        ensure_fstab_line(fstab, USB.fstab_fields())
    assert fstab.read_text() == EXISTING + line


def test_symlinked_fstab_is_edited_at_its_target(tmp_path: Path) -> None:
    """A symlinked fstab stays a symlink; the target file gets the line."""
    target = tmp_path / "real-fstab"
    target.write_text(EXISTING)
    link = tmp_path / "fstab"
    link.symlink_to(target)
    ensure_fstab_line(link, USB.fstab_fields())
    assert link.is_symlink()
    assert target.read_text() == EXISTING + LINE


def test_failed_rename_leaves_old_file_intact(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A crash-equivalent failure during the atomic replace leaves the old fstab byte-identical."""
    fstab = tmp_path / "fstab"
    fstab.write_text(EXISTING)

    def broken_replace(src: object, dst: object) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(DurabilityError):
        ensure_fstab_line(fstab, USB.fstab_fields())
    monkeypatch.undo()
    assert fstab.read_text() == EXISTING
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fstab"]


def test_parse_fstab_fields_and_escapes() -> None:
    """fstab parsing skips comments, decodes octal escapes and defaults short lines."""
    entries = parse_fstab("# c\n\n/dev/a /mnt/with\\040space ext4\nbad\n/dev/b /x\n")
    assert entries[0].mountpoint == "/mnt/with space"
    assert entries[0].fields()[3:] == ("defaults", "0", "0")
    assert entries[0].lineno == 3
    assert entries[1].fields() == ("/dev/b", "/x", "auto", "defaults", "0", "0")


def test_mount_usb_full_flow_then_idempotent(tmp_path: Path) -> None:
    """The first call mounts (one mount argv) and writes one line; the second only checks."""
    fake, root = _host(tmp_path)
    priv = _local(tmp_path, fake, root)
    usb = _usb(root)
    assert priv.mount_usb(usb) == MountOutcome(fstab_appended=True, mounted_now=True)
    assert fake.calls("mount") == [usb.mount_argv()]
    assert fake.mounted() == [("/dev/sdb1", f"{root}/backup1")]
    assert priv.mount_usb(usb) == MountOutcome(fstab_appended=False, mounted_now=False)
    assert len(fake.calls("mount")) == 1
    assert [c[0] for c in fake.calls()] == ["findmnt", "lsblk", "mount", "findmnt"]
    line = "\t".join(usb.fstab_fields()) + "\n"
    assert (tmp_path / "fstab").read_text() == line
    assert (root / "backup1").is_dir()


def test_mounted_but_not_in_fstab_is_completed(tmp_path: Path) -> None:
    """An interrupted mount (mounted, no line yet) is completed by running it again."""
    fake, root = _host(tmp_path)
    (root / "backup1").mkdir()
    (fake.mounts).write_text(f"/dev/sdb1 {root}/backup1 ext4 rw 0 0\n")
    outcome = _local(tmp_path, fake, root).mount_usb(_usb(root))
    assert outcome == MountOutcome(fstab_appended=True, mounted_now=False)
    assert fake.calls("mount") == []
    assert len(parse_fstab((tmp_path / "fstab").read_text())) == 1


def test_failed_mount_leaves_no_fstab_line(tmp_path: Path) -> None:
    """mount failing (exit 32) raises with its message; the fstab is not touched."""
    fake, root = _host(tmp_path, fail={"mount": [32, "mount: wrong fs type"]})
    with pytest.raises(CommandFailed) as info:
        _local(tmp_path, fake, root).mount_usb(_usb(root))
    assert info.value.returncode == 32
    assert "wrong fs type" in str(info.value)
    assert not (tmp_path / "fstab").exists()


def test_absent_device_is_refused_before_any_change(tmp_path: Path) -> None:
    """A UUID no block device holds: DeviceNotFound, no mkdir, no mount, no line."""
    fake, root = _host(tmp_path)
    other = "11111111-2222-3333-4444-555555555555"
    with pytest.raises(DeviceNotFound, match="is the disk plugged in"):
        _local(tmp_path, fake, root).mount_usb(_usb(root, uuid=other))
    assert [c[0] for c in fake.calls()] == ["findmnt", "lsblk"]
    assert not (root / "backup1").exists()
    assert not (tmp_path / "fstab").exists()


def test_other_file_system_type_is_refused(tmp_path: Path) -> None:
    """The disk holds ext4 but xfs was asked: refused before mounting."""
    fake, root = _host(tmp_path)
    with pytest.raises(MountConflict, match="holds ext4, not xfs"):
        _local(tmp_path, fake, root).mount_usb(_usb(root, fstype="xfs"))
    assert fake.calls("mount") == []


def test_mount_point_used_by_something_else_is_refused(tmp_path: Path) -> None:
    """Another file system mounted at the mount point: refused, nothing changed."""
    fake, root = _host(tmp_path)
    (root / "backup1").mkdir()
    fake.mounts.write_text(f"/dev/sdc1 {root}/backup1 xfs rw 0 0\n")
    with pytest.raises(MountConflict, match="already has /dev/sdc1"):
        _local(tmp_path, fake, root).mount_usb(_usb(root))
    assert fake.calls("mount") == []
    assert not (tmp_path / "fstab").exists()


def test_unmount_then_idempotent(tmp_path: Path) -> None:
    """unmount_usb unmounts and removes exactly the agent's line; again, it changes nothing."""
    fake, root = _host(tmp_path)
    priv = _local(tmp_path, fake, root)
    (tmp_path / "fstab").write_text(EXISTING)
    priv.mount_usb(_usb(root))
    off = UsbUnmount(mountpoint=f"{root}/backup1", root=str(root))
    assert priv.unmount_usb(off) == UnmountOutcome(unmounted_now=True, fstab_removed=1)
    assert fake.calls("umount") == [["umount", "--", f"{root}/backup1"]]
    assert fake.mounted() == []
    assert (tmp_path / "fstab").read_text() == EXISTING
    assert priv.unmount_usb(off) == UnmountOutcome(unmounted_now=False, fstab_removed=0)
    assert len(fake.calls("umount")) == 1


def test_busy_unmount_keeps_the_line(tmp_path: Path) -> None:
    """umount refusing (target is busy) leaves the mount and its fstab line consistent."""
    fake, root = _host(tmp_path)
    priv = _local(tmp_path, fake, root)
    priv.mount_usb(_usb(root))
    fake.update(busy=[f"{root}/backup1"])
    with pytest.raises(CommandFailed, match="target is busy"):
        priv.unmount_usb(UsbUnmount(mountpoint=f"{root}/backup1", root=str(root)))
    assert len(parse_fstab((tmp_path / "fstab").read_text())) == 1
    assert fake.mounted() == [("/dev/sdb1", f"{root}/backup1")]


def test_foreign_line_for_the_mount_point_refuses_unmount(tmp_path: Path) -> None:
    """A line for the mount point with options the agent never writes: refused before umount."""
    fake, root = _host(tmp_path)
    (tmp_path / "fstab").write_text(f"/dev/sdb1 {root}/backup1 ext4 defaults 0 2\n")
    with pytest.raises(FstabConflict, match="did not write"):
        _local(tmp_path, fake, root).unmount_usb(
            UsbUnmount(mountpoint=f"{root}/backup1", root=str(root)))
    assert fake.calls("umount") == []


def test_remove_lines_keeps_every_other_byte(tmp_path: Path) -> None:
    """Only the agent's line goes; comments, blank lines and spacing of the others stay."""
    fstab = tmp_path / "fstab"
    ours = f"UUID={UUID}\t/mnt/felhom/backup1\text4\t{USB_OPTIONS}\t0\t2\n"
    fstab.write_text(EXISTING + ours + "# trailing comment\n")
    options = frozenset({USB_OPTIONS})
    assert remove_fstab_lines(fstab, "/mnt/felhom/backup1", options, dry_run=True) == 1
    assert fstab.read_text() == EXISTING + ours + "# trailing comment\n"
    assert remove_fstab_lines(fstab, "/mnt/felhom/backup1", options) == 1
    assert fstab.read_text() == EXISTING + "# trailing comment\n"
    assert remove_fstab_lines(fstab, "/mnt/felhom/backup1", options) == 0


def test_mount_root_other_than_the_executors_is_refused(tmp_path: Path) -> None:
    """A UsbMount below another root than the executor's mount root never runs."""
    runner = RecordingRunner()
    priv = Privileged(runner, fstab_path=tmp_path / "fstab", mount_root="/mnt/felhom")
    with pytest.raises(RefusedArgument, match="mount root"):
        priv.mount_usb(_usb(tmp_path))
    assert runner.calls == []


def test_conflict_stops_before_any_process(tmp_path: Path) -> None:
    """An fstab conflict is raised before mkdir or mount start."""
    (tmp_path / "fstab").write_text("/dev/sdc1 /mnt/felhom/backup1 ext4 defaults 0 2\n")
    runner = RecordingRunner()
    with pytest.raises(FstabConflict):
        _priv(tmp_path, runner).mount_usb(USB)
    assert runner.calls == []


def test_mount_needs_a_local_runner(tmp_path: Path) -> None:
    """With a remote runner the local fstab is not the host's: refused, nothing written or run."""
    runner = RecordingRunner(local=False)
    with pytest.raises(PrivilegedDisabled):
        _priv(tmp_path, runner).mount_usb(USB)
    assert runner.calls == []
    assert not (tmp_path / "fstab").exists()


def test_concurrent_mounts_lose_no_line(tmp_path: Path) -> None:
    """Parallel mount_usb calls on one Privileged serialise their fstab edits: every line lands."""
    uuids = [f"0f3c6a2e-9d1b-4c55-8a0e-7e2b5d8c1f0{i}" for i in range(8)]
    fake = FakeHost(tmp_path / "host", {"devices": [
        {"disk": f"/dev/sd{chr(98 + i)}", "name": f"/dev/sd{chr(98 + i)}1", "uuid": u,
         "fstype": "xfs"} for i, u in enumerate(uuids)]})
    root = tmp_path / "mnt"
    root.mkdir()
    priv = _local(tmp_path, fake, root)
    start = threading.Barrier(8, timeout=10)
    errors: list[BaseException] = []

    def mount(i: int) -> None:
        try:
            start.wait()
            priv.mount_usb(_usb(root, f"disk{i}", uuids[i], "xfs"))
        except BaseException as err:  # collected and asserted below
            errors.append(err)

    threads = [threading.Thread(target=mount, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    mountpoints = {e.mountpoint for e in parse_fstab((tmp_path / "fstab").read_text())}
    assert mountpoints == {f"{root}/disk{i}" for i in range(8)}
    assert len(fake.calls("mount")) == 8


@pytest.mark.parametrize("bad", ["", "a b", "a#b", "a\\040b", "é", "a\tb"])
def test_unvalidated_field_is_refused_before_writing(tmp_path: Path, bad: str) -> None:
    """A field that would corrupt fstab (space, #, escape, non-ASCII, empty) is never written."""
    fstab = tmp_path / "fstab"
    fstab.write_text(EXISTING)
    fields = (bad, "/mnt/felhom/x", "ext4", "defaults", "0", "0")
    with pytest.raises(RefusedArgument):
        ensure_fstab_line(fstab, fields)
    assert fstab.read_text() == EXISTING
