"""Who is at the other end of a guest's socket: the kernel's answer, never the guest's.

``docs/architecture.md`` ("The per-guest local API"). A container's request is served for the
guest whose listener accepted it; on every accepted connection that is cross-checked with
what the kernel says about the peer:

1. ``SO_PEERCRED`` gives the pid of the process that connected (in our pid namespace);
2. ``SO_PEERPIDFD`` (Linux 6.5 and later) pins that process, so a pid reused between the
   reads below cannot pass for it;
3. ``/proc/<pid>/cgroup``: its cgroup v2 line (``0::<path>``) must lie under
   ``/lxc/<vmid>/`` (or be ``/lxc/<vmid>`` itself) of the listener's vmid -- where PVE puts
   every process of container ``vmid``, and which a process inside the container cannot
   leave (``docs/pve-facts.md``, "Guest API transport");
4. the pidfd still refers to a live process after the read.

Anything else -- a process outside every container (the host), another container's, a
monitor (``/lxc.monitor/<vmid>``), an unreadable or v1-only ``cgroup`` file -- is a
mismatch: the connection is dropped and the event audited.

:func:`cgroup2_mount` finds where the cgroup v2 hierarchy is mounted (``/sys/fs/cgroup`` on a
pure v2 host, ``/sys/fs/cgroup/unified`` on a hybrid one) from ``/proc/self/mountinfo``.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Final

import attrs

__all__ = [
    "PeerCheck",
    "cgroup2_mount",
    "cgroup_v2_path",
    "check_peer",
    "check_qemu_peer",
    "lxc_vmid",
    "peer_credentials",
    "process_cgroup",
    "process_start",
    "qemu_vmid",
]

#: ``SO_PEERPIDFD`` (Linux 6.5); Python 3.11 has no constant for it.
SO_PEERPIDFD: Final = getattr(socket, "SO_PEERPIDFD", 77)
_LXC: Final = re.compile(r"/lxc/([1-9][0-9]{0,9})(?:/.*)?")
_QEMU: Final = re.compile(r"/qemu\.slice/([1-9][0-9]{0,9})\.scope(?:/.*)?")


def cgroup_v2_path(text: str) -> str | None:
    """The cgroup v2 path of a ``/proc/<pid>/cgroup`` file (its one ``0::`` line), or None.

    A file with no such line (cgroup v1 only) or with two (damaged) has no v2 path.
    """
    found = [line[3:] for line in text.splitlines() if line.startswith("0::")]
    return found[0] if len(found) == 1 and found[0].startswith("/") else None


def lxc_vmid(path: str) -> int | None:
    """The vmid of a PVE container cgroup path (``/lxc/101`` or below it), else None.

    ``/lxc.monitor/101`` (the container's monitor, a host process) is not a container path.
    """
    m = _LXC.fullmatch(path)
    return int(m.group(1)) if m is not None else None


def qemu_vmid(path: str) -> int | None:
    """The vmid of a PVE VM's cgroup path (``/qemu.slice/<vmid>.scope``), else None."""
    m = _QEMU.fullmatch(path)
    return int(m.group(1)) if m is not None else None


def cgroup2_mount(mountinfo: str) -> Path | None:
    """The mount point of the cgroup v2 hierarchy from ``/proc/self/mountinfo`` text.

    Each line is ``id parent major:minor root mountpoint options ... - fstype source
    superoptions``; the first mount of fstype ``cgroup2`` whose root is ``/`` is taken.
    """
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        fields = left.split()
        if not sep or len(fields) < 5 or not right.split():
            continue
        if right.split()[0] == "cgroup2" and fields[3] == "/":
            return Path(_unescape(fields[4]))
    return None


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal ``\\NNN``."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


@attrs.frozen
class PeerCheck:
    """The verdict on one connection's peer.

    Attributes:
        ok: the peer is a process of the expected container.
        pid / uid: what ``SO_PEERCRED`` said (``None`` when unreadable).
        cgroup: the peer's cgroup v2 path, if read.
        reason: why it was refused (empty when ``ok``).
    """

    ok: bool
    pid: int | None = None
    uid: int | None = None
    cgroup: str | None = None
    reason: str = ""


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """``(pid, uid, gid)`` of a connected unix socket's peer (``SO_PEERCRED``)."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return pid, uid, gid


def _peer_pidfd(sock: socket.socket) -> int | None:
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERPIDFD, struct.calcsize("i"))
    except OSError:
        return None  # a kernel before 6.5: the pid alone, checked for liveness below
    (fd,) = struct.unpack("i", raw)
    return fd if fd >= 0 else None


def _alive(pid: int, pidfd: int | None) -> bool:
    try:
        if pidfd is not None:
            signal.pidfd_send_signal(pidfd, 0)
        else:
            os.kill(pid, 0)
    except (ProcessLookupError, PermissionError, OSError):
        return False
    return True


def check_peer(sock: socket.socket, vmid: int, *, proc: Path = Path("/proc")) -> PeerCheck:
    """Is the peer of ``sock`` a process of container ``vmid``? (See the module docstring.)"""
    return _check(sock, vmid, lxc_vmid, "container", proc)


def check_qemu_peer(sock: socket.socket, vmid: int, *,
                    proc: Path = Path("/proc")) -> PeerCheck:
    """Is the listener behind a VM's serial socket the QEMU of VM ``vmid``?

    For a connection the agent made, ``SO_PEERCRED`` names the process that listens on the
    socket: QEMU, in cgroup ``/qemu.slice/<vmid>.scope`` on PVE.
    """
    return _check(sock, vmid, qemu_vmid, "VM", proc)


def _check(sock: socket.socket, vmid: int, parse: Callable[[str], int | None], what: str,
           proc: Path) -> PeerCheck:
    try:
        pid, uid, _gid = peer_credentials(sock)
    except OSError as err:
        return PeerCheck(False, reason=f"peer credentials unreadable: {err.strerror}")
    if pid <= 0:
        return PeerCheck(False, pid, uid, reason="the peer has no pid in this pid namespace")
    pidfd = _peer_pidfd(sock)
    try:
        try:
            text = (proc / str(pid) / "cgroup").read_text(encoding="utf-8", errors="replace")
        except OSError as err:
            return PeerCheck(False, pid, uid, reason=f"peer pid {pid}: cgroup unreadable "
                             f"({err.strerror})")
        path = cgroup_v2_path(text)
        if not _alive(pid, pidfd):
            return PeerCheck(False, pid, uid, path, reason=f"peer pid {pid} exited before "
                             "its cgroup could be confirmed")
    finally:
        if pidfd is not None:
            with contextlib.suppress(OSError):
                os.close(pidfd)
    if path is None:
        return PeerCheck(False, pid, uid, reason=f"peer pid {pid} has no cgroup v2 path")
    found = parse(path)
    if found is None:
        return PeerCheck(False, pid, uid, path, reason=f"peer pid {pid} is not in a "
                         f"{what} (cgroup {path[:120]})")
    if found != vmid:
        return PeerCheck(False, pid, uid, path, reason=f"peer pid {pid} is in {what} "
                         f"{found}, not {vmid} (cgroup {path[:120]})")
    return PeerCheck(True, pid, uid, path)


def process_cgroup(pid: int, *, proc: Path = Path("/proc")) -> str | None:
    """The cgroup v2 path of process ``pid`` (``None`` when unreadable or v1 only)."""
    try:
        return cgroup_v2_path((proc / str(pid) / "cgroup").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        return None


def process_start(pid: int, *, proc: Path = Path("/proc")) -> int | None:
    """The start time of process ``pid`` (clock ticks since boot; field 22 of ``stat``).

    With the pid it names one process for the life of the system: a container restarted
    with the same init pid (pid reuse) has another start time.
    """
    try:
        text = (proc / str(pid) / "stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may itself contain ") ".
    rest = text.rpartition(")")[2].split()
    try:
        return int(rest[19])
    except (IndexError, ValueError):
        return None
