"""The hand-written sd_notify sender against a real AF_UNIX datagram socket."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from felhom_agent.daemon.sdnotify import Notifier, child_environment


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(5)
    yield sock, path
    sock.close()


def test_ready_status_watchdog_datagrams(notify_socket: tuple[socket.socket, str]) -> None:
    """Each call sends one datagram of KEY=VALUE lines to $NOTIFY_SOCKET."""
    sock, path = notify_socket
    notifier = Notifier({"NOTIFY_SOCKET": path})
    assert notifier.enabled
    assert notifier.ready("serving 3 guests")
    assert sock.recv(4096) == b"READY=1\nSTATUS=serving 3 guests"
    assert notifier.watchdog()
    assert sock.recv(4096) == b"WATCHDOG=1"
    assert notifier.stopping("draining\n2 jobs")
    assert sock.recv(4096) == b"STOPPING=1\nSTATUS=draining 2 jobs"


def test_abstract_socket_address() -> None:
    """An @name NOTIFY_SOCKET addresses the abstract namespace."""
    name = f"felhom-test-{id(object())}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(5)
    try:
        assert Notifier({"NOTIFY_SOCKET": "@" + name}).status("x")
        assert sock.recv(100) == b"STATUS=x"
    finally:
        sock.close()


def test_disabled_without_socket() -> None:
    """Without NOTIFY_SOCKET every call is a no-op that reports False."""
    notifier = Notifier({})
    assert not notifier.enabled
    assert not notifier.ready("x")
    assert notifier.watchdog_interval_s is None


def test_missing_socket_is_not_fatal(tmp_path: Path) -> None:
    """A socket path that does not exist makes send return False, not raise."""
    assert not Notifier({"NOTIFY_SOCKET": str(tmp_path / "absent")}).watchdog()


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"WATCHDOG_USEC": "20000000"}, 10.0),
        ({"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": "4242"}, 10.0),
        ({"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": "1"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
    ],
)
def test_watchdog_interval_is_half_and_pid_checked(env: dict[str, str],
                                                   expected: float | None) -> None:
    """The ping interval is half of WATCHDOG_USEC, honoured only for our own pid."""
    assert Notifier(env, pid=4242).watchdog_interval_s == expected


def test_child_environment_strips_notify_variables() -> None:
    """Subprocesses never inherit the notify socket or the watchdog settings."""
    env = {"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "1", "WATCHDOG_PID": "2", "PATH": "/bin"}
    assert child_environment(env) == {"PATH": "/bin"}
