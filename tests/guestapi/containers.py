"""Test "containers": real processes in their own mount namespace and cgroup ``lxc/<vmid>``.

What PVE makes of a container, as far as the guest API can see it: its processes are in the
cgroup v2 directory ``lxc/<vmid>`` (the payload below ``lxc/<vmid>/ns``), its files are in its
own mount namespace, and the API reports its init's pid. A :class:`FakeContainer` is that:

* ``unshare -m`` (private propagation) starts its "init", which mounts a fresh tmpfs on
  ``/run`` (so a socket placed at ``/run/felhom/agent.sock`` is this container's alone)
  and then sleeps;
* the init is moved into ``<cgroup2>/lxc/<vmid>/ns``, the cgroup2 mount being found from
  ``/proc/self/mountinfo`` (``/sys/fs/cgroup`` or, on a hybrid host,
  ``/sys/fs/cgroup/unified``);
* :meth:`FakeContainer.run` starts a process *inside* it: it moves itself into the cgroup
  first, then enters the mount namespace (``nsenter``) and execs the command.

A :class:`FakeVM` is QEMU's end of a VM's serial socket: a process in cgroup
``qemu.slice/<vmid>.scope`` listening where PVE puts ``<vmid>.serial1``.

The tests run as root (cgroups and namespaces need it); :func:`why_no_containers` says why
when the machine cannot make them.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shlex
import subprocess
import sys
import threading
from pathlib import Path

from felhom_agent.guestapi.identity import cgroup2_mount, process_start

READY = b"ready\n"


def cgroup_root() -> Path:
    """The cgroup v2 mount of this machine."""
    mount = cgroup2_mount(Path("/proc/self/mountinfo").read_text())
    if mount is None:
        raise RuntimeError("no cgroup2 mount in /proc/self/mountinfo")
    return mount


def why_no_containers() -> str | None:
    """None when test containers can be made here; else the reason."""
    if os.geteuid() != 0:
        return "not root: cgroups and mount namespaces need root"
    try:
        root = cgroup_root()
    except RuntimeError as err:
        return str(err)
    probe = root / "lxc" / "felhom-probe"
    try:
        probe.mkdir(parents=True, exist_ok=True)
        probe.rmdir()
    except OSError as err:
        return f"cannot create a cgroup under {root}: {err.strerror}"
    return None


def _kill_cgroup(path: Path) -> None:
    if not path.exists():
        return
    for child in sorted((p for p in path.rglob("*") if p.is_dir()), reverse=True):
        _kill_cgroup_dir(child)
    _kill_cgroup_dir(path)


def _kill_cgroup_dir(path: Path) -> None:
    kill = path / "cgroup.kill"
    if kill.exists():
        with contextlib.suppress(OSError):
            kill.write_text("1")
    waited = threading.Event()
    for _ in range(500):  # the killed processes leave the cgroup within milliseconds
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            waited.wait(0.01)


class FakeContainer:
    """One test container; use as a context manager (or call :meth:`stop`)."""

    def __init__(self, vmid: int, *, cgroup: str | None = None) -> None:
        self.vmid = vmid
        self.root = cgroup_root()
        relative = Path(cgroup or f"lxc/{vmid}/ns")
        self.cgroup_dir = self.root / relative
        self.owned = self.root / Path(*relative.parts[:2])  # lxc/<n>: removed at stop
        _kill_cgroup(self.owned)
        self.cgroup_dir.mkdir(parents=True, exist_ok=True)
        script = "mount -t tmpfs -o mode=0755 felhom-ct /run && echo ready && exec sleep 1d"
        self.init = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
        assert self.init.stdout is not None
        line = self.init.stdout.readline()
        if line != READY:
            self.init.kill()
            raise RuntimeError(f"test container {vmid} did not start: {line!r}")
        (self.cgroup_dir / "cgroup.procs").write_text(str(self.init.pid))
        self.pid = self.init.pid
        start = process_start(self.pid)
        assert start is not None
        self.start_time = start

    def run(self, argv: list[str], *, cgroup: Path | None = None, timeout: float = 60,
            input_: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        """Run ``argv`` inside this container (its cgroup, its mount namespace) to the end.

        ``cgroup`` puts the process in another cgroup directory instead (an attacker in
        another container reaching this one's files).
        """
        procs = (cgroup or self.cgroup_dir) / "cgroup.procs"
        inner = " ".join(shlex.quote(a) for a in argv)
        script = (f"echo $$ > {shlex.quote(str(procs))} && exec nsenter --target {self.pid} "
                  f"--mount -- {inner}")
        return subprocess.run(["sh", "-c", script], capture_output=True, timeout=timeout,
                              input=input_, check=False)

    def python(self, code: str, *args: str, cgroup: Path | None = None,
               timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
        """Run Python ``code`` inside this container (the same interpreter as the tests)."""
        return self.run([sys.executable, "-c", code, *args], cgroup=cgroup, timeout=timeout)

    def popen_python(self, code: str, *args: str) -> subprocess.Popen[str]:
        """Start Python ``code`` inside this container; its stdout is a text pipe."""
        procs = shlex.quote(str(self.cgroup_dir / "cgroup.procs"))
        inner = " ".join(shlex.quote(a) for a in (sys.executable, "-c", code, *args))
        script = f"echo $$ > {procs} && exec nsenter --target {self.pid} --mount -- {inner}"
        return subprocess.Popen(["sh", "-c", script], stdout=subprocess.PIPE, text=True)

    def restart(self) -> None:
        """Stop the init and start a new one (a fresh /run: the placed socket is gone)."""
        self._stop_init()
        fresh = FakeContainer.__new__(FakeContainer)
        FakeContainer.__init__(fresh, self.vmid,
                               cgroup=str(self.cgroup_dir.relative_to(self.root)))
        self.__dict__.update(fresh.__dict__)

    def _stop_init(self) -> None:
        self.init.kill()
        self.init.wait()
        if self.init.stdout is not None:
            self.init.stdout.close()

    def stop(self) -> None:
        """Kill every process of the container and remove its cgroup."""
        self._stop_init()
        _kill_cgroup(self.owned)

    def __enter__(self) -> FakeContainer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


_RELAY = r"""
import os, select, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(sys.argv[1])
s.listen(1)
sys.stderr.write("ready\n")
sys.stderr.flush()
conn = None
while True:
    fds = [s, 0] + ([conn] if conn is not None else [])
    ready = select.select(fds, [], [])[0]
    if s in ready:
        if conn is not None:
            conn.close()
        conn = s.accept()[0]
    if conn is not None and conn in ready:
        data = conn.recv(65536)
        if data:
            os.write(1, data)
        else:
            conn.close()
            conn = None
    if 0 in ready:
        data = os.read(0, 65536)
        if not data:
            break
        if conn is not None:
            conn.sendall(data)
"""


class FakeVM:
    """QEMU's end of a VM's ``serial1`` socket, for the tests.

    A process in cgroup ``qemu.slice/<vmid>.scope`` (where PVE runs a VM's QEMU) listens at
    ``<serial_dir>/<vmid>.serial1`` like QEMU's ``server=on`` chardev, and relays the one
    connection (the agent's) to its standard input and output: what the test writes to it is
    what the guest writes to its serial port, and what the agent answers comes back.
    """

    def __init__(self, vmid: int, serial_dir: Path, *, cgroup: str | None = None) -> None:
        self.vmid = vmid
        self.root = cgroup_root()
        relative = Path(cgroup or f"qemu.slice/{vmid}.scope")
        self.cgroup_dir = self.root / relative
        self.owned = self.cgroup_dir
        _kill_cgroup(self.owned)
        self.cgroup_dir.mkdir(parents=True, exist_ok=True)
        self.path = serial_dir / f"{vmid}.serial1"
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        procs = shlex.quote(str(self.cgroup_dir / "cgroup.procs"))
        script = (f"echo $$ > {procs} && exec {shlex.quote(sys.executable)} -c "
                  f"{shlex.quote(_RELAY)} {shlex.quote(str(self.path))}")
        self.proc = subprocess.Popen(["sh", "-c", script], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert self.proc.stderr is not None
        line = self.proc.stderr.readline()
        if line != READY:
            self.proc.kill()
            raise RuntimeError(f"fake VM {vmid} did not start: {line!r}")

    def send(self, frame: dict[str, object]) -> None:
        """One request line from the guest."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(frame).encode() + b"\n")
        self.proc.stdin.flush()

    def send_raw(self, data: bytes) -> None:
        """Raw bytes on the serial line (noise, partial lines)."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def recv(self, timeout: float = 30.0) -> dict[str, object]:
        """The next answer line (a hang guard, not a limit)."""
        assert self.proc.stdout is not None
        ready = select.select([self.proc.stdout], [], [], timeout)[0]
        if not ready:
            raise TimeoutError("no answer on the serial line")
        line = self.proc.stdout.readline()
        answer: dict[str, object] = json.loads(line)
        return answer

    def stop(self) -> None:
        """Stop the relay and remove its cgroup and socket."""
        self.proc.kill()
        self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()
        _kill_cgroup(self.owned)
        with contextlib.suppress(OSError):
            self.cgroup_dir.parent.rmdir()  # qemu.slice, when no other test VM is left
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def __enter__(self) -> FakeVM:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
