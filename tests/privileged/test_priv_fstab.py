"""USB mount: the fstab line is appended idempotently and crash-safely, mounts are not repeated."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from felhom_agent.durable import DurabilityError
from felhom_agent.privileged import (
    CommandFailed,
    FstabConflict,
    MountOutcome,
    Privileged,
    PrivilegedDisabled,
    RefusedArgument,
    UsbMount,
)
from felhom_agent.privileged.fstab import ensure_fstab_line, is_mounted, parse_fstab
from tests.privileged.priv_fakes import RecordingRunner, Scripted

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


def _priv(tmp_path: Path, runner: RecordingRunner, mounts: str = "") -> Privileged:
    (tmp_path / "mounts").write_text(mounts)
    return Privileged(runner, fstab_path=tmp_path / "fstab", mounts_path=tmp_path / "mounts")


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


def test_is_mounted_reads_the_mount_table(tmp_path: Path) -> None:
    """A mount point is found in /proc/self/mounts format, octal escapes decoded."""
    mounts = tmp_path / "mounts"
    mounts.write_text("/dev/sdc1 /mnt/felhom/a\\040b ext4 rw 0 0\n"
                      "/dev/sdd1 /mnt/felhom/backup1 ext4 rw 0 0\n")
    assert is_mounted(mounts, "/mnt/felhom/a b")
    assert is_mounted(mounts, "/mnt/felhom/backup1")
    assert not is_mounted(mounts, "/mnt/felhom/backup")


def test_mount_usb_full_flow_then_idempotent(tmp_path: Path) -> None:
    """mount_usb writes fstab, creates the mount point and mounts; once mounted it only checks."""
    runner = RecordingRunner()
    priv = _priv(tmp_path, runner)
    assert priv.mount_usb(USB) == MountOutcome(fstab_appended=True, mounted_now=True)
    assert [c[0] for c in runner.calls] == ["mkdir", "mount"]
    assert runner.calls[1] == tuple(USB.mount_argv())
    (tmp_path / "mounts").write_text(
        "/dev/sdc1 /mnt/felhom/backup1 ext4 rw,nosuid,nodev,noexec,noatime 0 0\n")
    runner.calls.clear()
    assert priv.mount_usb(USB) == MountOutcome(fstab_appended=False, mounted_now=False)
    assert [c[0] for c in runner.calls] == ["mkdir"]
    assert (tmp_path / "fstab").read_text() == LINE


def test_fstab_written_before_mount_and_kept_on_mount_failure(tmp_path: Path) -> None:
    """The fstab line is durable before mount runs, so a failed mount leaves the intent on disk."""
    runner = RecordingRunner(script={"mount": Scripted(
        returncode=32, stderr=b"mount: /mnt/felhom/backup1: can't find UUID=0f3c...\n")})
    priv = _priv(tmp_path, runner)
    with pytest.raises(CommandFailed) as info:
        priv.mount_usb(USB)
    assert info.value.returncode == 32
    assert (tmp_path / "fstab").read_text() == LINE


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
    runner = RecordingRunner()
    priv = _priv(tmp_path, runner)
    start = threading.Barrier(8, timeout=10)
    errors: list[BaseException] = []

    def mount(i: int) -> None:
        try:
            start.wait()
            priv.mount_usb(UsbMount(source=f"UUID=0f3c6a2e-9d1b-4c55-8a0e-7e2b5d8c1f0{i}",
                                    mountpoint=f"/mnt/felhom/disk{i}", fstype="xfs"))
        except BaseException as err:  # collected and asserted below
            errors.append(err)

    threads = [threading.Thread(target=mount, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert errors == []
    mountpoints = {e.mountpoint for e in parse_fstab((tmp_path / "fstab").read_text())}
    assert mountpoints == {f"/mnt/felhom/disk{i}" for i in range(8)}


@pytest.mark.parametrize("bad", ["", "a b", "a#b", "a\\040b", "é", "a\tb"])
def test_unvalidated_field_is_refused_before_writing(tmp_path: Path, bad: str) -> None:
    """A field that would corrupt fstab (space, #, escape, non-ASCII, empty) is never written."""
    fstab = tmp_path / "fstab"
    fstab.write_text(EXISTING)
    fields = (bad, "/mnt/felhom/x", "ext4", "defaults", "0", "0")
    with pytest.raises(RefusedArgument):
        ensure_fstab_line(fstab, fields)
    assert fstab.read_text() == EXISTING
