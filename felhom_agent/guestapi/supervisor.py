"""Keeping one listener per enabled, running guest: placing, re-placing, connecting.

``docs/architecture.md`` ("The per-guest local API", "Threads"). One thread
(``felhom-guestapi-sync``) wakes every ``interval_s`` and whenever the desired state changes,
and per pass:

1. reads the desired state (which guests have ``"guestapi": true``) and the node's guest
   list (one API read), and refreshes the :class:`~felhom_agent.guestapi.backend.Directory`
   the endpoints answer from;
2. for a running **container**: if its listener is missing, or its init is not the process
   the socket was placed for any more (another pid or start time: the container restarted),
   or the socket file at ``container_path`` is not the one placed (removed by the guest),
   reads its init pid from ``status/current``, checks that the init is in cgroup
   ``lxc/<vmid>/`` -- a container whose cgroup does not match is alerted (an ERROR log line,
   the audit, the report's ``last_error``) and gets no socket -- and runs the fenced
   operation 4 to place a fresh socket, then hands it to the loop;
3. for a running **VM**: if it has no serial connection, connects to
   ``<serial_dir>/<vmid>.serial1`` (the socket PVE creates for ``serial1: socket``), checks
   that the listener behind it is the VM's QEMU (cgroup ``qemu.slice/<vmid>.scope``) and
   hands the connection to the loop;
4. a guest that stopped, left the node or is no longer enabled loses its listener.

A failure is the guest's ``last_error`` and is tried again on a later pass, less often the
more it fails (up to every :data:`MAX_RETRY_S`). Nothing here runs on the loop thread, the
hub loop, the reconciler or a queue worker; the only PVE reads are one guest list per pass
and one ``status/current`` per placement.

``socket_dir/placed.json`` records every socket placed (vmid, init pid and start time, the
socket file's inode) for an operator's eyes; the agent never trusts it.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, Protocol

import attrs

from felhom_agent.backoff import Attempt, Exponential
from felhom_agent.core.desired import DesiredState
from felhom_agent.durable import DurabilityError, atomic_write_bytes
from felhom_agent.errors import AgentError
from felhom_agent.guestapi.api import GuestInfo
from felhom_agent.guestapi.backend import Directory
from felhom_agent.guestapi.identity import (
    PeerCheck,
    check_qemu_peer,
    lxc_vmid,
    process_cgroup,
    process_start,
)
from felhom_agent.guestapi.placement import (
    Placed,
    Placer,
    place_container_socket,
    socket_in_place,
)
from felhom_agent.guestapi.server import AuditWriter, GuestApiServer
from felhom_agent.proxmox.errors import PveError
from felhom_agent.proxmox.models import Guest, GuestStatus, GuestType

__all__ = ["DEFAULT_INTERVAL_S", "MAX_RETRY_S", "GuestApiSupervisor", "SupervisorReader"]

DEFAULT_INTERVAL_S: Final = 10.0
MAX_RETRY_S: Final = 300.0
PLACED_NAME: Final = "placed.json"


class SupervisorReader(Protocol):
    """The two PVE reads of a pass (``ProxmoxClient``)."""

    def guests(self) -> tuple[Guest, ...]:
        """The guests on our node."""
        ...

    def guest_status(self, vmid: int, kind: GuestType) -> GuestStatus:
        """``status/current`` (with the init pid)."""
        ...


DesiredSource = Callable[[], "DesiredState | None"]
SerialPeerCheck = Callable[[socket.socket, int], PeerCheck]


@attrs.define
class _Container:
    pid: int
    start: int
    placed: Placed


@attrs.define
class _Retry:
    failures: int = 0
    not_before: float = 0.0


class GuestApiSupervisor:
    """See the module docstring.

    Args:
        server: the event loop (listeners and serial connections are handed to it).
        directory: the facts the endpoints answer from (refreshed every pass).
        client: the guest list and ``status/current``.
        desired: the desired state's current value (the provider's ``current``).
        placer: the fenced operation 4.
        node / host_id: reported by ``/1.0/identity``.
        container_path: where a container's socket goes, inside it.
        serial_dir: where PVE puts the VMs' serial sockets.
        socket_dir: the agent's runtime directory (``placed.json``); ``None``: no record.
        audit: where a container whose cgroup does not match is recorded.
        interval_s: seconds between passes.
        stop_event: stops the thread.
        monotonic: the retry clock.
        serial_peer_check: the VM serial socket's listener check.
        proc: the ``/proc`` to read (tests).
        logger: placements at INFO, failures at WARNING, a cgroup mismatch at ERROR.
    """

    def __init__(self, *, server: GuestApiServer, directory: Directory,
                 client: SupervisorReader, desired: DesiredSource, placer: Placer, node: str,
                 host_id: str, container_path: str, serial_dir: Path,
                 socket_dir: Path | None = None, audit: AuditWriter | None = None,
                 interval_s: float = DEFAULT_INTERVAL_S,
                 stop_event: threading.Event | None = None,
                 monotonic: Callable[[], float] = time.monotonic,
                 serial_peer_check: SerialPeerCheck = check_qemu_peer,
                 proc: Path = Path("/proc"), logger: logging.Logger | None = None) -> None:
        self._server = server
        self._directory = directory
        self._client = client
        self._desired = desired
        self._placer = placer
        self._node = node
        self._host_id = host_id
        self._path = container_path
        self._serial_dir = serial_dir
        self._socket_dir = socket_dir
        self._audit = audit
        self._interval = interval_s
        self._stop = stop_event if stop_event is not None else threading.Event()
        self._now = monotonic
        self._serial_check = serial_peer_check
        self._proc = proc
        self._log = logger if logger is not None else logging.getLogger(__name__)
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._containers: dict[int, _Container] = {}
        self._serial: set[int] = set()
        self._retry: dict[int, _Retry] = {}
        self._errors: dict[int, str | None] = {}
        self._served: dict[int, str] = {}
        self._alerted: dict[int, str] = {}

    # ------------------------------------------------------------------ thread

    def start(self) -> None:
        """Start the thread (``felhom-guestapi-sync``, daemon)."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="felhom-guestapi-sync",
                                        daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Run a pass soon (the desired state changed)."""
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread (the server is stopped by its owner)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.sync_once()
            except Exception:  # the thread never dies of a pass
                self._log.exception("guest API: a supervisor pass failed")
            self._wake.wait(self._interval)
            self._wake.clear()

    # ------------------------------------------------------------------ one pass

    def sync_once(self) -> None:
        """One pass (see the module docstring); the tests call it directly."""
        state = self._desired()
        wanted = {v: g for v, g in (state.guests.items() if state is not None else ())
                  if g.guestapi}
        for vmid in [v for v in self._served if v not in wanted]:
            self._forget(vmid)
        if not wanted:
            self._directory.replace({})
            return
        try:
            listed = {g.vmid: g for g in self._client.guests() if g.node == self._node}
        except PveError as err:
            for vmid, want in wanted.items():
                self._error(vmid, want.type, f"the node's guest list could not be read: {err}")
            return
        infos: dict[int, GuestInfo] = {}
        for vmid, want in wanted.items():
            self._served[vmid] = want.type
            guest = listed.get(vmid)
            if guest is None:
                self._drop(vmid, want.type, f"guest {vmid} is not on node {self._node}")
                continue
            if guest.type.value != want.type:
                self._drop(vmid, want.type, f"guest {vmid} is a {guest.type.value}, the desired "
                           f"state says {want.type}")
                continue
            policy = want.backup
            infos[vmid] = GuestInfo(vmid, guest.type.value, guest.name, self._node,
                                    self._host_id, guest.tags,
                                    None if policy is None else policy.storage,
                                    "snapshot" if policy is None else policy.mode.value)
        self._directory.replace(infos)
        for vmid, info in infos.items():
            guest = listed[vmid]
            if guest.status != "running":
                self._drop(vmid, info.type, None)
            elif not self._due(vmid):
                continue
            elif info.type == GuestType.LXC.value:
                self._ensure_container(vmid)
            else:
                self._ensure_serial(vmid)
        self._server.settle()  # the next pass sees what this one attached
        self._record()

    # ------------------------------------------------------------------ containers

    def _ensure_container(self, vmid: int) -> None:
        current = self._containers.get(vmid)
        if current is not None:
            if (process_start(current.pid, proc=self._proc) == current.start
                    and socket_in_place(current.pid, self._path, current.placed,
                                        proc=self._proc)
                    and self._server.is_listening(vmid)):
                return
            self._log.info("guest API of %d: the container restarted or its socket is gone; "
                           "placing it again", vmid)
            self._server.detach(vmid)
            del self._containers[vmid]
        try:
            status = self._client.guest_status(vmid, GuestType.LXC)
        except PveError as err:
            self._failed(vmid, "lxc", f"status/current could not be read: {err}")
            return
        if not status.running:  # stopped since the (lagging) listing was read
            self._drop(vmid, "lxc", None)
            return
        if status.pid is None:
            self._failed(vmid, "lxc", "PVE reports no init pid for the running container")
            return
        pid = status.pid
        start = process_start(pid, proc=self._proc)
        cgroup = process_cgroup(pid, proc=self._proc)
        if start is None or cgroup is None:
            self._failed(vmid, "lxc", f"the container's init pid {pid} is not readable in "
                         f"{self._proc}")
            return
        if lxc_vmid(cgroup) != vmid:
            self._alert(vmid, f"the init pid {pid} PVE reports for container {vmid} is in "
                        f"cgroup {cgroup[:120]}, not under lxc/{vmid}/: no socket placed")
            return
        try:
            placed = place_container_socket(self._placer, vmid=vmid, pid=pid, start=start,
                                            path=self._path)
        except AgentError as err:
            text = str(err)
            if "cgroup" in text:
                self._alert(vmid, text)
            else:
                self._failed(vmid, "lxc", f"placing the socket failed: {text}")
            return
        self._containers[vmid] = _Container(pid, start, placed)
        self._server.attach_listener(vmid, placed.sock)
        self._ok(vmid)
        self._log.info("guest API of container %d: socket placed at %s (init pid %d)", vmid,
                       self._path, pid)

    # ------------------------------------------------------------------ VMs

    def _ensure_serial(self, vmid: int) -> None:
        if vmid in self._serial and self._server.is_listening(vmid):
            return
        self._serial.discard(vmid)
        path = self._serial_dir / f"{vmid}.serial1"
        try:
            if not stat.S_ISSOCK(os.stat(path).st_mode):
                raise FileNotFoundError(path)
        except OSError:
            self._failed(vmid, "qemu", f"no serial socket {path}: the VM needs serial1: socket "
                         "(the signed guestapi.enable) and a start after it")
            return
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(2.0)
            sock.connect(str(path))
        except OSError as err:
            sock.close()
            self._failed(vmid, "qemu", f"cannot connect to {path}: {err.strerror or err}")
            return
        check = self._serial_check(sock, vmid)
        if not check.ok:
            sock.close()
            self._alert(vmid, f"the serial socket {path} is not the VM's: {check.reason}",
                        gtype="qemu")
            return
        self._serial.add(vmid)
        self._server.attach_serial(vmid, sock)
        self._ok(vmid)
        self._log.info("guest API of VM %d: connected to %s", vmid, path)

    # ------------------------------------------------------------------ bookkeeping

    def _due(self, vmid: int) -> bool:
        retry = self._retry.get(vmid)
        return retry is None or self._now() >= retry.not_before

    def _ok(self, vmid: int) -> None:
        self._retry.pop(vmid, None)
        self._errors.pop(vmid, None)
        self._alerted.pop(vmid, None)

    def _failed(self, vmid: int, gtype: str, message: str) -> None:
        retry = self._retry.setdefault(vmid, _Retry())
        retry.failures += 1
        wait = Exponential(self._interval, cap_s=MAX_RETRY_S)(Attempt(retry.failures))
        retry.not_before = self._now() + wait
        if self._errors.get(vmid) != message:
            self._log.warning("guest API of %d: %s", vmid, message)
        self._error(vmid, gtype, message)

    def _alert(self, vmid: int, message: str, *, gtype: str = "lxc") -> None:
        """A security event: ERROR log, audit (once per distinct text), last_error."""
        if self._alerted.get(vmid) != message:
            self._alerted[vmid] = message
            self._log.error("guest API of %d: %s", vmid, message)
            if self._audit is not None:
                try:
                    self._audit.append(op_id=f"guest-{vmid}-placement", source=f"guest:{vmid}",
                                       kind="guestapi", vmid=vmid, upid=None, outcome="refused",
                                       reason=message[:500])
                except DurabilityError as err:
                    self._log.error("guest API audit record lost: %s", err)
        self._failed(vmid, gtype, message)

    def _error(self, vmid: int, gtype: str, message: str | None) -> None:
        if self._errors.get(vmid, "unset") == message:
            return
        self._errors[vmid] = message
        self._server.note_error(vmid, gtype, message)

    def _drop(self, vmid: int, gtype: str, message: str | None) -> None:
        """Not served now (stopped, gone): close what it had, keep its counters."""
        if vmid in self._containers or vmid in self._serial:
            self._containers.pop(vmid, None)
            self._serial.discard(vmid)
            self._server.detach(vmid)
        self._retry.pop(vmid, None)
        self._error(vmid, gtype, message)

    def _forget(self, vmid: int) -> None:
        """No longer enabled: close everything and drop its report entry."""
        self._containers.pop(vmid, None)
        self._serial.discard(vmid)
        self._retry.pop(vmid, None)
        self._errors.pop(vmid, None)
        self._alerted.pop(vmid, None)
        self._served.pop(vmid, None)
        self._server.detach(vmid, forget=True)

    def _record(self) -> None:
        if self._socket_dir is None:
            return
        doc: dict[str, Any] = {str(v): {"pid": c.pid, "start": c.start, "path": self._path,
                                        "inode": c.placed.ino, "device": c.placed.dev}
                               for v, c in sorted(self._containers.items())}
        data = (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode("ascii")
        target = self._socket_dir / PLACED_NAME
        try:
            if target.exists() and target.read_bytes() == data:
                return
            self._socket_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            atomic_write_bytes(target, data, mode=0o600)
        except (OSError, DurabilityError) as err:
            self._log.debug("guest API: %s not written: %s", target, err)

