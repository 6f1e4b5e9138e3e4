"""Who is at the other end: cgroup v2 parsing, the container rule, the real SO_PEERCRED."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from felhom_agent.guestapi.identity import (
    cgroup2_mount,
    cgroup_v2_path,
    check_peer,
    lxc_vmid,
    peer_credentials,
    process_start,
)

HYBRID = (
    "9:name=systemd:/\n4:memory:/process_api/abc\n1:cpu:/\n0::/lxc/101/ns/system.slice\n")


@pytest.mark.parametrize(("text", "path"), [
    ("0::/lxc/101/ns\n", "/lxc/101/ns"),
    (HYBRID, "/lxc/101/ns/system.slice"),
    ("0::/\n", "/"),
    ("4:memory:/lxc/101\n", None),  # v1 only
    ("0::/lxc/101\n0::/lxc/102\n", None),  # damaged: two v2 lines
    ("0::relative\n", None),
    ("", None),
])
def test_cgroup_v2_line(text: str, path: str | None) -> None:
    """Exactly one ``0::/...`` line is the v2 path; anything else has none."""
    assert cgroup_v2_path(text) == path


@pytest.mark.parametrize(("path", "vmid"), [
    ("/lxc/101", 101), ("/lxc/101/ns", 101), ("/lxc/101/ns/lxc/5/x", 101),
    ("/lxc.monitor/101", None), ("/lxc/101x", None), ("/lxc/0101", None), ("/lxc", None),
    ("/system.slice/pve-container@101.service", None), ("/qemu.slice/101.scope", None),
    ("/machine/lxc/101", None), ("/", None),
])
def test_container_paths(path: str, vmid: int | None) -> None:
    """Only ``/lxc/<vmid>`` and below belong to a container (not its monitor, not a VM)."""
    assert lxc_vmid(path) == vmid


def test_cgroup2_mount_from_mountinfo() -> None:
    """The v2 mount is found on a hybrid host and on a pure v2 one, escapes undone."""
    hybrid = ("31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n"
              "35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"
              "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n")
    assert cgroup2_mount(hybrid) == Path("/sys/fs/cgroup/unified")
    pure = "30 23 0:27 / /sys/fs/cgroup rw shared:9 - cgroup2 cgroup2 rw,nsdelegate\n"
    assert cgroup2_mount(pure) == Path("/sys/fs/cgroup")
    odd = r"30 23 0:27 / /mnt/my\040cg rw - cgroup2 none rw" + "\n"
    assert cgroup2_mount(odd) == Path("/mnt/my cg")
    assert cgroup2_mount("31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n") is None


def test_this_machine_has_a_cgroup2_mount() -> None:
    """The machine the suite runs on mounts cgroup v2 somewhere (the container tests need it)."""
    mount = cgroup2_mount(Path("/proc/self/mountinfo").read_text())
    assert mount is not None and (mount / "cgroup.procs").exists()


def test_real_peer_credentials_are_ours() -> None:
    """SO_PEERCRED over a real socketpair names this process."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with a, b:
        pid, uid, gid = peer_credentials(a)
    assert (pid, uid, gid) == (os.getpid(), os.getuid(), os.getgid())


def test_a_host_process_is_not_a_container() -> None:
    """This test process is in no container: any listener refuses it, with the reason."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with a, b:
        check = check_peer(a, 101)
    assert not check.ok
    assert check.pid == os.getpid()
    assert "not in a container" in check.reason


def _fake_proc(tmp_path: Path, pid: int, cgroup: str) -> Path:
    (tmp_path / str(pid)).mkdir()
    (tmp_path / str(pid) / "cgroup").write_text(cgroup)
    return tmp_path


def test_the_peer_cgroup_decides_against_the_listener(tmp_path: Path) -> None:
    """With a fake /proc naming our pid's cgroup: own container ok, another container or a
    monitor refused, naming what was found."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with a, b:
        proc = _fake_proc(tmp_path, os.getpid(), "0::/lxc/101/ns/init.scope\n")
        assert check_peer(a, 101, proc=proc).ok
        other = check_peer(a, 102, proc=proc)
        assert not other.ok and "in container 101, not 102" in other.reason
        (proc / str(os.getpid()) / "cgroup").write_text("0::/lxc.monitor/101\n")
        assert "not in a container" in check_peer(a, 101, proc=proc).reason
        (proc / str(os.getpid()) / "cgroup").write_text("1:cpu:/lxc/101\n")
        assert "no cgroup v2 path" in check_peer(a, 101, proc=proc).reason
        (proc / str(os.getpid()) / "cgroup").unlink()
        assert "unreadable" in check_peer(a, 101, proc=proc).reason


def test_process_start_time_is_read() -> None:
    """Our own start time is a number and stable; a missing pid has none."""
    first = process_start(os.getpid())
    assert first is not None and first == process_start(os.getpid())
    assert process_start(2**22 + 1) is None
