"""Receiving a container's listening socket from the fenced operation 4.

``docs/architecture.md`` ("The per-guest local API"). The privileged placer
(:class:`~felhom_agent.privileged.guestsock.GuestSocketPlacer`) runs its helper with one end
of a socket pair; this module owns the other end, receives the listening descriptor and
checks it is what was asked for (a listening unix stream socket) before anyone accepts on it.
:func:`socket_in_place` later tells whether the socket file is still the one placed (a
container restart, or a guest that removed it, means placing it again).
"""

from __future__ import annotations

import json
import os
import socket
import stat
from pathlib import Path
from typing import Protocol

import attrs

from felhom_agent.errors import AgentError
from felhom_agent.guestapi.errors import PlacementError
from felhom_agent.privileged.guestsock import PlaceGuestSocket

__all__ = ["Placed", "Placer", "place_container_socket", "socket_in_place"]


class Placer(Protocol):
    """The fenced operation 4 (:class:`~felhom_agent.privileged.guestsock.GuestSocketPlacer`)."""

    @property
    def enabled(self) -> bool:
        """Whether sockets can be placed at all."""
        ...

    def place(self, args: PlaceGuestSocket, channel_fd: int) -> None:
        """Run the helper; the descriptor arrives on the peer of ``channel_fd``."""
        ...


@attrs.frozen
class Placed:
    """A socket placed in a container: the listener, and its file's identity there."""

    sock: socket.socket
    ino: int
    dev: int


def place_container_socket(placer: Placer, *, vmid: int, pid: int, start: int, path: str,
                           backlog: int = 8) -> Placed:
    """Place the socket of container ``vmid`` (init ``pid`` started at ``start``) at ``path``.

    Raises:
        PlacementError: the placer refused or failed, or what came back is not a listening
            unix stream socket.
    """
    args = PlaceGuestSocket(vmid=vmid, pid=pid, start=start, path=path, backlog=backlog)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with ours:
        try:
            placer.place(args, theirs.fileno())
        except AgentError as err:
            raise PlacementError(str(err)) from err
        finally:
            theirs.close()
        ours.settimeout(5.0)
        try:
            message, fds, _flags, _addr = socket.recv_fds(ours, 1024, 2)
        except OSError as err:
            raise PlacementError(f"the helper sent no socket: {err}") from err
    if len(fds) != 1:
        for fd in fds:
            os.close(fd)
        raise PlacementError(f"the helper sent {len(fds)} descriptors instead of one")
    sock = socket.socket(fileno=fds[0])
    try:
        listening = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
        if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM or not listening:
            raise PlacementError("the helper sent something other than a listening unix "
                                 "stream socket")
        info = json.loads(message.decode("ascii"))
        ino, dev = info["ino"], info["dev"]
        if not (isinstance(ino, int) and isinstance(dev, int)):
            raise PlacementError("the helper's message lacks the socket's inode")
    except (PlacementError, ValueError, KeyError, UnicodeDecodeError, OSError) as err:
        sock.close()
        if isinstance(err, PlacementError):
            raise
        raise PlacementError(f"the helper's answer is unusable: {err}") from err
    return Placed(sock, ino, dev)


def socket_in_place(pid: int, path: str, placed: Placed, *,
                    proc: Path = Path("/proc")) -> bool:
    """Whether the socket file at ``path`` in process ``pid``'s root is still ``placed``."""
    try:
        st = os.lstat(f"{proc}/{pid}/root{path}")
    except OSError:
        return False
    return stat.S_ISSOCK(st.st_mode) and (st.st_ino, st.st_dev) == (placed.ino, placed.dev)
