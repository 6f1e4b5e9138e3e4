"""The public face of the PVE simulator: start/stop, inspect state, inject faults.

Usage::

    with PveSimulator(PveScenario.default()) as sim:
        requests.get(f"{sim.url}/api2/json/version", ...)   # pin sim.fingerprint
        sim.inject(Fault("http_error", path="/version", status=503, count=1))
        sim.guest(100)["status"]

``__enter__`` returns once the socket listens (well under a second: an ECDSA key, no
subprocess). ``stop`` interrupts held requests and task waits and joins every thread it
started, so no thread outlives a test.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

import attrs

from felhom_agent.sim.pve import node_shell
from felhom_agent.sim.pve.faults import Fault
from felhom_agent.sim.pve.node_shell import ShellResult
from felhom_agent.sim.pve.runtime import NodeRuntime
from felhom_agent.sim.pve.scenario import PveScenario
from felhom_agent.sim.pve.server import PveHttpServer
from felhom_agent.sim.tls import generate_certificate

__all__ = ["PveSimulator"]

JOIN_TIMEOUT_S = 5.0


class PveSimulator:
    """A simulated PVE node serving HTTPS on 127.0.0.1.

    Args:
        scenario: what the node starts with.
        host: listen address (loopback only is sensible).
        port: listen port; 0 picks a free one.
        clock: epoch-seconds clock for UPID start times, uptimes and snapshot times.
    """

    def __init__(self, scenario: PveScenario, *, host: str = "127.0.0.1", port: int = 0,
                 clock: Callable[[], float] = time.time) -> None:
        self._scenario = scenario
        self._host = host
        self._port = port
        self._clock = clock
        self._cert = generate_certificate(
            scenario.node, organization="PVE Cluster Node (felhom simulator)",
            dns_name=scenario.node,
        )
        self._rt = NodeRuntime(scenario, clock=clock, fingerprint=self._cert.fingerprint)
        self._server: PveHttpServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> PveSimulator:
        """Bind and serve in a background thread; returns when ready."""
        if self._server is not None:
            raise RuntimeError("simulator already started")
        self._server = PveHttpServer((self._host, self._port), self._rt,
                                     self._cert.server_context())
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.1},
                                        name="pve-sim-accept", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, interrupt waits, and join every thread."""
        server = self._server
        if server is None:
            return
        self._rt.stop_event.set()
        self._rt.faults.wake_all()
        with self._rt.counters:
            self._rt.counters.notify_all()
        server.shutdown()
        server.close_connections()
        self._rt.tasks.stop(JOIN_TIMEOUT_S)
        server.server_close()  # joins the connection threads (block_on_close)
        if self._thread is not None:
            self._thread.join(timeout=JOIN_TIMEOUT_S)
        self._server = None

    def __enter__(self) -> PveSimulator:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- connection data ---------------------------------------------------------------------
    @property
    def port(self) -> int:
        """The bound port."""
        if self._server is None:
            raise RuntimeError("simulator not started")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """``https://127.0.0.1:PORT`` (append ``/api2/json/...``)."""
        return f"https://{self._host}:{self.port}"

    @property
    def fingerprint(self) -> str:
        """SHA-256 fingerprint of the served leaf, ``AB:CD:...``."""
        return self._cert.fingerprint

    @property
    def cert_pem(self) -> bytes:
        """The served certificate (PEM), for CA-file style tests."""
        return self._cert.cert_pem

    @property
    def node(self) -> str:
        """The node name."""
        return self._scenario.node

    @property
    def token_id(self) -> str:
        """The scenario's first token id."""
        return self._scenario.tokens[0].token_id

    @property
    def token_secret(self) -> str:
        """The scenario's first token secret (a plain str, for building headers in tests)."""
        return self._scenario.tokens[0].secret.reveal()

    @property
    def auth_header(self) -> str:
        """``PVEAPIToken=<id>=<secret>`` for the first token."""
        return f"PVEAPIToken={self.token_id}={self.token_secret}"

    # -- observation -------------------------------------------------------------------------
    @property
    def requests_seen(self) -> int:
        """HTTP requests parsed so far (a failed TLS handshake never counts)."""
        with self._rt.counters:
            return self._rt.requests_seen

    def requests_by_route(self) -> dict[str, int]:
        """Authenticated requests per endpoint, keyed ``"GET /nodes/{node}/storage"`` (the
        schema template, so every storage's content listing counts under one key)."""
        with self._rt.counters:
            return dict(self._rt.routed)

    @property
    def peak_in_flight(self) -> int:
        """Most requests that held a worker slot at the same time."""
        with self._rt.counters:
            return self._rt.peak_in_flight

    @property
    def served(self) -> int:
        """Requests that held a worker slot and were answered (or dropped) before stop."""
        with self._rt.counters:
            return self._rt.served

    @property
    def min_service_s(self) -> float:
        """The shortest time any of those held its slot (monotonic seconds; inf if none):
        never below the scenario's ``request_latency_s``."""
        with self._rt.counters:
            return self._rt.min_service_s

    def wait_requests(self, *, seen: int | None = None, in_flight: int | None = None,
                      queued: int | None = None, timeout: float = 5.0) -> bool:
        """Block until at least ``seen`` requests were parsed, ``in_flight`` hold a worker
        slot and ``queued`` wait for one (each bound optional); False on timeout."""
        return self._rt.wait_counters(
            lambda rt: (seen is None or rt.requests_seen >= seen)
            and (in_flight is None or rt.in_flight >= in_flight)
            and (queued is None or rt.queued >= queued), timeout)

    @property
    def internal_errors(self) -> list[str]:
        """Tracebacks of simulator bugs that were answered as 500 (should stay empty)."""
        with self._rt.counters:
            return list(self._rt.internal_errors)

    def guest(self, vmid: int) -> dict[str, Any]:
        """A deep copy of a guest's state: status, lock, config (raw), snapshots, tasks, pool."""
        with self._rt.state.cond:
            g = self._rt.state.guests.get(vmid)
            if g is None:
                raise KeyError(vmid)
            return {
                "vmid": g.vmid, "type": g.type, "status": g.status, "lock": g.lock,
                "config": copy.deepcopy(g.config), "digest": g.digest(),
                "snapshots": {n: {"description": s.description, "parent": s.parent,
                                  "snapstate": s.snapstate, "config": copy.deepcopy(s.config)}
                              for n, s in g.snapshots.items()},
                "pending_tasks": list(g.pending_tasks),
                "pool": g.pool,
            }

    def wait_lock(self, vmid: int, lock: str | None, timeout: float = 5.0) -> bool:
        """Block until guest ``vmid`` carries config lock ``lock`` (None: no lock)."""
        state = self._rt.state

        def holds() -> bool:
            g = state.guests.get(vmid)
            return g is not None and g.lock == lock

        with state.cond:
            return state.cond.wait_for(holds, timeout=timeout)

    def wait_guest(self, vmid: int, predicate: Callable[[dict[str, Any]], bool],
                   timeout: float = 5.0) -> bool:
        """Block until guest ``vmid`` exists and ``predicate(self.guest(vmid))`` holds."""
        state = self._rt.state

        def holds() -> bool:
            return vmid in state.guests and predicate(self.guest(vmid))

        with state.cond:
            return state.cond.wait_for(holds, timeout=timeout)

    def wait_log(self, upid: str, line: str, timeout: float = 5.0) -> bool:
        """Block until task ``upid`` logged ``line`` (waiting points of a task notify)."""
        state = self._rt.state

        def logged() -> bool:
            rec = self._rt.tasks.get(upid)
            return rec is not None and (line in rec.log.lines or rec.status == "stopped")

        with state.cond:
            state.cond.wait_for(logged, timeout=timeout)
            rec = self._rt.tasks.get(upid)
            return rec is not None and line in rec.log.lines

    def has_guest(self, vmid: int) -> bool:
        """Whether ``vmid`` exists."""
        with self._rt.state.cond:
            return vmid in self._rt.state.guests

    def tasks(self) -> list[dict[str, Any]]:
        """Every task record (upid, type, id, user, status, exitstatus, log), oldest first."""
        with self._rt.state.cond:
            return [r.snapshot() for r in self._rt.tasks.records()]

    def wait_task(self, upid: str, timeout: float = 5.0) -> dict[str, Any]:
        """Block until task ``upid`` stopped; return its record (raises TimeoutError)."""
        if not self._rt.tasks.wait(upid, timeout):
            raise TimeoutError(f"task {upid} still running after {timeout} s")
        rec = self._rt.tasks.get(upid)
        if rec is None:
            raise KeyError(upid)
        with self._rt.state.cond:
            return rec.snapshot()

    # -- storages and backups ----------------------------------------------------------------
    def backups(self, storage: str | None = None) -> list[dict[str, Any]]:
        """Every backup volume (all storages or one), unfiltered by permissions: volid, vmid,
        subtype, format, size, ctime, full notes, protected, encrypted, verification."""
        with self._rt.state.cond:
            return [{**attrs.asdict(b), "notes": b.notes}
                    for name, st in sorted(self._rt.state.storages.items())
                    if storage in (None, name) for b in st.backups]

    def storage(self, name: str) -> dict[str, Any]:
        """A storage's live figures: used, avail, active, gc_pending, backup count."""
        with self._rt.state.cond:
            st = self._rt.state.storages[name]
            return {"storage": name, "type": st.spec.type, "used": st.used, "avail": st.avail,
                    "active": st.active, "gc_pending": st.gc_pending,
                    "backups": len(st.backups)}

    def set_storage(self, name: str, *, active: bool | None = None,
                    avail: int | None = None) -> None:
        """Make a storage (un)reachable or change its free space (``used`` is kept)."""
        with self._rt.state.cond:
            st = self._rt.state.storages[name]
            if active is not None:
                st.active = active
            if avail is not None:
                st.avail = avail

    def run_gc(self, name: str) -> int:
        """PBS garbage collection on ``name``: frees what deleted backups held; the bytes."""
        with self._rt.state.cond:
            return self._rt.state.storages[name].run_gc()

    def set_verification(self, volid: str, state: str | None) -> None:
        """Record a PBS verify job result (``ok``/``failed``) on a backup; None: never."""
        with self._rt.state.cond:
            for st in self._rt.state.storages.values():
                b = st.find(volid)
                if b is not None:
                    b.verification = None if state is None else {
                        "state": state, "upid": f"UPID:pbs:00000A1B:0000C0DE:00000000:"
                                                f"{b.ctime + 3600:08X}:verificationjob::root@pam:"}
                    return
            raise KeyError(volid)

    def set_lock(self, vmid: int, lock: str | None) -> None:
        """Set or clear a guest's config lock directly (e.g. a ``backup`` lock left behind by
        a killed vzdump: no task holds it)."""
        with self._rt.state.cond:
            g = self._rt.state.guests[vmid]
            if lock is None:
                g.config.pop("lock", None)
            else:
                g.config["lock"] = lock
            self._rt.state.cond.notify_all()

    def set_backup(self, vmid: int, *, size: int | None = None,
                   duration_s: float | None = None) -> None:
        """How many bytes a backup of ``vmid`` writes and how many seconds it takes."""
        with self._rt.state.cond:
            g = self._rt.state.guests[vmid]
            if size is not None:
                g.backup_size = size
            if duration_s is not None:
                g.backup_duration_s = duration_s

    def set_pid(self, vmid: int, pid: int | None) -> None:
        """The pid ``status/current`` (and the guest lists) report while ``vmid`` runs: a
        test container's init, say (``None``: the default 100000 + vmid)."""
        with self._rt.state.cond:
            self._rt.state.guests[vmid].pid = pid

    # -- control -----------------------------------------------------------------------------
    def inject(self, fault: Fault) -> None:
        """Activate a fault at run time."""
        self._rt.faults.add(fault)

    def clear_faults(self) -> None:
        """Remove every fault and release requests held by latency faults."""
        self._rt.faults.clear()

    def pct(self, argv: list[str]) -> ShellResult:
        """Run ``pct create ...`` in the node's root shell (what the fenced root CLI reaches on
        a real node; a test's fake ``pct`` program forwards here). See
        :mod:`felhom_agent.sim.pve.node_shell`."""
        return node_shell.pct(self._rt, argv)

    def set_task_duration(self, task_type: str, seconds: float) -> None:
        """Make tasks of ``task_type`` (``default`` for all others) take ``seconds``."""
        self._rt.tasks.set_duration(task_type, seconds)

    def release_tasks(self) -> None:
        """Let every running task (except ``task_hang`` ones) finish now."""
        self._rt.tasks.release_all()
