"""Operation 4 for real: a socket placed inside a test container by its init pid.

The containers are real processes in their own mount namespace and cgroup ``lxc/<vmid>``
(:mod:`tests.guestapi.containers`); the helper really enters the namespace and binds.
"""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from felhom_agent.guestapi.errors import PlacementError
from felhom_agent.guestapi.placement import place_container_socket, socket_in_place
from felhom_agent.privileged.errors import PrivilegedDisabled, RefusedArgument
from felhom_agent.privileged.guestsock import (
    HELPER,
    GuestSocketPlacer,
    LocalFdRunner,
    PlaceGuestSocket,
)
from felhom_agent.privileged.runner import RunResult
from tests.guestapi.containers import FakeContainer, why_no_containers

PATH = "/run/felhom/agent.sock"
NO_CONTAINERS = why_no_containers()
needs_containers = pytest.mark.skipif(NO_CONTAINERS is not None, reason=str(NO_CONTAINERS))


@pytest.fixture
def ct() -> Iterator[FakeContainer]:
    with FakeContainer(9101) as c:
        yield c


def _in_ct(ct: FakeContainer, path: str = PATH) -> Path:
    return Path(f"/proc/{ct.pid}/root{path}")


def test_this_machine_can_make_test_containers() -> None:
    """The container tests need root and a writable cgroup v2: say so, never skip silently."""
    assert NO_CONTAINERS is None, NO_CONTAINERS


@needs_containers
def test_the_socket_is_placed_inside_the_container_only(ct: FakeContainer) -> None:
    """Bound at the path inside the container (mode 0600, owned by its root), listening,
    handed back; the host's own /run is untouched."""
    placed = place_container_socket(GuestSocketPlacer(LocalFdRunner()), vmid=9101, pid=ct.pid,
                                    start=ct.start_time, path=PATH)
    with placed.sock:
        st = os.lstat(_in_ct(ct))
        assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
        assert (st.st_uid, st.st_gid) == (os.stat(f"/proc/{ct.pid}").st_uid,
                                          os.stat(f"/proc/{ct.pid}").st_gid)
        assert not Path(PATH).exists()
        assert socket_in_place(ct.pid, PATH, placed)
        code = ("import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); "
                "s.sendall(b'hello'); print('sent')")
        out = ct.python(code, PATH)
        assert out.returncode == 0, out.stderr
        conn, _ = placed.sock.accept()
        with conn:
            assert conn.recv(5) == b"hello"


@needs_containers
def test_a_restart_means_placing_again(ct: FakeContainer) -> None:
    """After the container restarts the old socket is gone (socket_in_place is False), and a
    new placement for the new init works; a stale socket of ours is replaced."""
    placer = GuestSocketPlacer(LocalFdRunner())
    first = place_container_socket(placer, vmid=9101, pid=ct.pid, start=ct.start_time,
                                   path=PATH)
    first.sock.close()
    again = place_container_socket(placer, vmid=9101, pid=ct.pid, start=ct.start_time,
                                   path=PATH)  # replaces the stale socket file
    assert not socket_in_place(ct.pid, PATH, first)
    again.sock.close()
    old_pid = ct.pid
    ct.restart()
    assert ct.pid != old_pid
    assert not socket_in_place(ct.pid, PATH, again)
    third = place_container_socket(placer, vmid=9101, pid=ct.pid, start=ct.start_time,
                                   path=PATH)
    with third.sock:
        assert socket_in_place(ct.pid, PATH, third)


@needs_containers
def test_a_container_whose_cgroup_does_not_match_gets_no_socket() -> None:
    """Init in lxc/9102 but asked for as 9101 (a clone with stale wiring): refused, nothing
    placed, the reason names what was found."""
    with FakeContainer(9101, cgroup="lxc/9102/ns") as ct:
        with pytest.raises(PlacementError, match="not in container 9101's cgroup"):
            place_container_socket(GuestSocketPlacer(LocalFdRunner()), vmid=9101, pid=ct.pid,
                                   start=ct.start_time, path=PATH)
        assert not _in_ct(ct).parent.exists()


@needs_containers
def test_a_reused_pid_is_not_taken_for_the_container(ct: FakeContainer) -> None:
    """A start time that does not match the pid's process: refused."""
    with pytest.raises(PlacementError, match="not the container's init"):
        place_container_socket(GuestSocketPlacer(LocalFdRunner()), vmid=9101, pid=ct.pid,
                               start=ct.start_time + 1, path=PATH)


@needs_containers
@pytest.mark.parametrize(("setup", "message"), [
    ("ln -s /etc /run/felhom", "not a plain directory"),
    ("mkdir -p /run/felhom && echo x > /run/felhom/agent.sock", "is not a socket"),
    ("mkdir -p /run/felhom && ln -s /etc/passwd /run/felhom/agent.sock", "is not a socket"),
])
def test_what_the_guest_planted_is_never_followed_or_replaced(ct: FakeContainer, setup: str,
                                                              message: str) -> None:
    """A symbolic link or a file at the path (planted by the guest) is refused, not used."""
    assert ct.run(["sh", "-c", setup]).returncode == 0
    with pytest.raises(PlacementError, match=message):
        place_container_socket(GuestSocketPlacer(LocalFdRunner()), vmid=9101, pid=ct.pid,
                               start=ct.start_time, path=PATH)
    assert Path("/etc/passwd").is_file() and not Path("/etc/agent.sock").exists()


def test_without_the_local_runner_nothing_is_placed() -> None:
    """mode ssh/off: refused with the reason, before any process starts."""
    with pytest.raises(PlacementError, match="mode local"):
        place_container_socket(GuestSocketPlacer(None), vmid=101, pid=4242, start=1, path=PATH)
    assert not GuestSocketPlacer(None).enabled


class Recording:
    """A runner that records argv and inherited descriptors, and starts nothing."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[str], tuple[int, ...]]] = []

    def run_with_fds(self, argv: Sequence[str], *, pass_fds: tuple[int, ...],
                     timeout_s: float) -> RunResult:
        self.calls.append((list(argv), pass_fds))
        return RunResult(tuple(argv), 1, b"", b"recording runner")


@pytest.mark.parametrize(("field", "value"), [
    ("vmid", 99), ("vmid", True), ("pid", 1), ("pid", 2**23), ("start", -1),
    ("path", "run/felhom/agent.sock"), ("path", "/agent.sock"), ("path", "/run/../etc/x"),
    ("path", "/run/felhom/agent sock"), ("path", "/run/-x/agent.sock"),
    ("path", "/run/" + "a" * 60 + "/" + "b" * 60), ("backlog", 0),
])
def test_arguments_are_validated_before_any_process(field: str, value: object) -> None:
    """Every argument is checked when the operation is built; nothing reaches a runner."""
    good: dict[str, object] = {"vmid": 101, "pid": 4242, "start": 7, "path": PATH}
    with pytest.raises(RefusedArgument):
        PlaceGuestSocket(**{**good, field: value})  # type: ignore[arg-type]


def test_the_argv_runs_the_helper_with_one_inherited_descriptor() -> None:
    """argv only, the helper file, the descriptor passed; a forged instance is re-checked."""
    runner = Recording()
    placer = GuestSocketPlacer(runner, python="/usr/bin/python3")
    args = PlaceGuestSocket(vmid=101, pid=4242, start=7, path=PATH)
    a, b = socket.socketpair()
    with a, b, pytest.raises(Exception, match="recording runner"):
        placer.place(args, b.fileno())
    argv, fds = runner.calls[0]
    assert argv == ["/usr/bin/python3", "-I", "-S", HELPER, "--vmid", "101", "--pid", "4242",
                    "--start", "7", "--path", PATH, "--fd", str(fds[0]), "--backlog", "8"]
    forged = PlaceGuestSocket(vmid=101, pid=4242, start=7, path=PATH)
    object.__setattr__(forged, "path", "/run/../../etc/shadow")
    with pytest.raises(RefusedArgument):
        placer.place(forged, 5)
    with pytest.raises(RefusedArgument):
        placer.place("not an op", 5)  # type: ignore[arg-type]
    assert len(runner.calls) == 1
    with pytest.raises(PrivilegedDisabled):
        GuestSocketPlacer(None).place(args, 5)
