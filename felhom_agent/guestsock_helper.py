"""The helper program of the fenced operation 4: a listening socket inside a container.

Run by :mod:`felhom_agent.privileged.guestsock` (never imported by the agent) as a fresh,
single-threaded interpreter that imports only the standard library (``python -I -S``)::

    python -I -S guestsock_helper.py --vmid 101 --pid 4242 --start 123456 \\
        --path /run/felhom/agent.sock --fd 3 --backlog 8

It runs as root and does exactly this (``docs/architecture.md``, "The fenced root CLI"):

1. opens the mount namespace and the root directory of process ``pid`` (the container's
   init, as the PVE API reported it), then checks -- with both held open, so they cannot
   change under it -- that ``pid`` is still the process that started at ``start`` (no pid
   reuse) and that its cgroup v2 path lies under ``/lxc/<vmid>/``: a container whose cgroup
   does not match is refused, nothing is placed;
2. joins that mount namespace (``setns``) and that root (``chroot``), so every path below
   is the container's own;
3. walks the directories of ``path`` one by one without following a symbolic link (a link
   planted by the guest is refused), creating a missing one (mode 0755, owned by the
   container's root: the owner of its init process);
4. removes an old *socket* at ``path`` (a stale one of an earlier agent), refuses anything
   else there, binds a new unix stream socket (mode 0600, owned by the container's root, so
   only the container's root may connect), and listens with ``backlog``;
5. sends the listening descriptor, with the socket file's inode and device, over the unix
   socket ``fd`` it inherited (``SCM_RIGHTS``), and exits. It touches nothing else.

Exit status 0 on success; otherwise 1 with one line on standard error.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import socket
import stat
import sys

CLONE_NEWNS = 0x00020000
_ARGS = ("--vmid", "--pid", "--start", "--path", "--fd", "--backlog")
_COMPONENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class HelperError(Exception):
    """Why nothing was placed (printed on standard error)."""


def _args(argv: list[str]) -> dict[str, str]:
    if len(argv) != 2 * len(_ARGS) or argv[0::2] != list(_ARGS):
        raise HelperError("usage: " + " ".join(f"{a} VALUE" for a in _ARGS))
    return dict(zip(argv[0::2], argv[1::2], strict=True))


def _number(text: str, name: str) -> int:
    if not text.isdigit() or len(text) > 19:
        raise HelperError(f"{name} must be a decimal number")
    return int(text)


def _cgroup_vmid(text: str) -> int | None:
    lines = [line[3:] for line in text.splitlines() if line.startswith("0::")]
    if len(lines) != 1:
        return None
    m = re.fullmatch(r"/lxc/([1-9][0-9]{0,9})(?:/.*)?", lines[0])
    return int(m.group(1)) if m else None


def _start_time(pid: int) -> int | None:
    with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
        rest = f.read().rpartition(")")[2].split()
    return int(rest[19]) if len(rest) > 19 and rest[19].isdigit() else None


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNS) != 0:
        err = ctypes.get_errno()
        raise HelperError(f"cannot join the container's mount namespace: {os.strerror(err)}")


def _walk(parts: list[str], uid: int, gid: int) -> int:
    """Open the directory ``/parts[0]/parts[1]/...`` without following links; create the
    missing ones. Returns its descriptor."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open("/", flags)
    for part in parts:
        try:
            os.mkdir(part, 0o755, dir_fd=fd)
        except FileExistsError:
            pass
        else:
            os.chown(part, uid, gid, dir_fd=fd, follow_symlinks=False)
        try:
            nxt = os.open(part, flags, dir_fd=fd)
        except OSError as err:
            os.close(fd)
            raise HelperError(f"{part}: not a plain directory ({err.strerror}); a symbolic "
                              "link or a file is in the way") from None
        os.close(fd)
        fd = nxt
    return fd


def place(vmid: int, pid: int, start: int, path: str, *, chan_fd: int, backlog: int) -> None:
    """Steps 1-5 of the module docstring."""
    parts = path.split("/")[1:]
    if len(parts) < 2 or not all(_COMPONENT.fullmatch(p) for p in parts):
        raise HelperError("path must be absolute with plain components")
    chan = socket.socket(fileno=chan_fd)
    try:
        ns = os.open(f"/proc/{pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
        root = os.open(f"/proc/{pid}/root", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        owner = os.stat(f"/proc/{pid}")
        with open(f"/proc/{pid}/cgroup", encoding="utf-8", errors="replace") as f:
            cgroup = f.read()
        if _start_time(pid) != start:
            raise HelperError(f"process {pid} is not the container's init any more")
    except OSError as err:
        raise HelperError(f"process {pid}: {err.strerror}") from None
    found = _cgroup_vmid(cgroup)
    if found != vmid:
        raise HelperError(f"process {pid} is not in container {vmid}'s cgroup (found "
                          f"{'no container' if found is None else found}); nothing placed")
    _setns(ns)
    os.fchdir(root)
    os.chroot(".")
    uid, gid = owner.st_uid, owner.st_gid
    dirfd = _walk(parts[:-1], uid, gid)
    name = parts[-1]
    try:
        old = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISSOCK(old.st_mode):
            raise HelperError(f"{path} exists and is not a socket; not replaced")
        os.unlink(name, dir_fd=dirfd)
    os.fchdir(dirfd)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    mask = os.umask(0o177)
    try:
        listener.bind(name)
    finally:
        os.umask(mask)
    os.chown(name, uid, gid, dir_fd=dirfd, follow_symlinks=False)
    listener.listen(backlog)
    st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
    message = json.dumps({"ino": st.st_ino, "dev": st.st_dev}).encode("ascii")
    socket.send_fds(chan, [message], [listener.fileno()])


def main(argv: list[str]) -> int:
    """Parse, place, report."""
    try:
        a = _args(argv)
        place(_number(a["--vmid"], "vmid"), _number(a["--pid"], "pid"),
              _number(a["--start"], "start"), a["--path"], chan_fd=_number(a["--fd"], "fd"),
              backlog=_number(a["--backlog"], "backlog"))
    except HelperError as err:
        sys.stderr.write(f"{err}\n")
        return 1
    except OSError as err:
        sys.stderr.write(f"{err.filename or ''}: {err.strerror}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
