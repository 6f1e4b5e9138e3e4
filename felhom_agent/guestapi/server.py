"""The per-guest API's event loop: every guest's socket on one thread, a small handler pool.

``docs/architecture.md`` ("The per-guest local API", "Threads"). One thread
(``felhom-guestapi``) runs a ``selectors`` loop over every listener (one per enabled,
running container), every accepted connection and every VM serial connection; a bounded
pool (``felhom-guestapi-pool``, :data:`DEFAULT_POOL` threads) runs the handlers that may call
PVE or the queue. So the number of threads does not grow with the number of guests or of
idle connections, and nothing here ever runs on the hub loop, the reconciler or a queue
worker.

Per connection, on the loop:

1. accept, then the peer check (:func:`~felhom_agent.guestapi.identity.check_peer`): the
   connecting process must be in the listener's container, else the connection is dropped
   and the event audited (a security event: also logged as an error and reported as the
   guest's ``last_error``; like every refusal it is sampled, see below); more than
   ``max_connections`` open connections of one guest: answered 503 and closed;
2. read with the strict HTTP reader (or the serial framing); a request must be complete
   within ``timeout_s`` of its first byte (slowloris: 408 and closed), an idle persistent
   connection is closed after ``timeout_s``, an answer must be taken within ``timeout_s``;
3. the guest's token bucket (429 with ``Retry-After`` when empty), the header rules, the
   routing -- all answered on the loop, so a flooding guest costs the loop a few
   microseconds per request and never a pool thread;
4. ``GET /1.0`` and ``GET /1.0/identity`` are answered on the loop from memory; the other
   endpoints go to the pool, at most one request per guest at a time (a guest's further
   requests wait on their own connections), so a slow or malicious guest holds at most its
   own connections and one pool thread.

Every mutating request gets its own audit record (source ``guest:<vmid>``); refusals are
audited too, through the guest's :class:`~felhom_agent.guestapi.policy.RefusalSampler` (the
first of each minute one by one, the rest as one counted record), so a flood cannot rotate
the audit log. Audit appends (an ``fsync`` each) run on the pool, never on the loop.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import heapq
import itertools
import logging
import selectors
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, Final, Protocol

import attrs

from felhom_agent.durable import DurabilityError
from felhom_agent.guestapi.api import Api, ApiRequest, ApiResponse, Caller, Endpoint
from felhom_agent.guestapi.errors import WireError
from felhom_agent.guestapi.frames import BadFrame, Frame, FrameReader, render_frame
from felhom_agent.guestapi.httpwire import CONTINUE, HttpRequest, RequestReader, render_response
from felhom_agent.guestapi.identity import PeerCheck, check_peer
from felhom_agent.guestapi.policy import (
    Limits,
    Refusal,
    RefusalSampler,
    TokenBucket,
    check_headers,
    retry_after,
)

__all__ = ["DEFAULT_POOL", "AuditWriter", "GuestApiServer", "GuestEntry"]

#: Handler pool threads: PVE answers slowly, the loop never waits for it.
DEFAULT_POOL: Final = 4
_RECV: Final = 8192
_ACCEPTS_PER_TURN: Final = 8
_AUDIT_KIND: Final = "guestapi"

PeerChecker = Callable[[socket.socket, int], PeerCheck]


class AuditWriter(Protocol):
    """The audit log's append (``felhom_agent.state.audit.AuditLog.append``)."""

    def append(self, *, op_id: str, source: str, kind: str, vmid: int, upid: str | None,
               outcome: str, reason: str = "") -> object:
        """Durably append one record."""
        ...


@attrs.frozen
class GuestEntry:
    """One guest's line in the report's ``guestapi`` list."""

    vmid: int
    transport: str
    listening: bool
    requests: int
    refused: int
    last_error: str | None

    def to_json(self) -> dict[str, Any]:
        """The wire form."""
        return {"vmid": self.vmid, "transport": self.transport, "listening": self.listening,
                "requests": self.requests, "refused": self.refused,
                "last_error": self.last_error}


class _Slot:
    """One guest: its listener or serial connection, its connections, limits, counters."""

    def __init__(self, vmid: int, gtype: str, limits: Limits, now: float) -> None:
        self.vmid = vmid
        self.type = gtype
        self.transport = "serial" if gtype == "qemu" else "unix"
        self.caller = Caller(vmid, gtype, self.transport)
        self.bucket = TokenBucket(limits.rate_per_s, limits.burst, now)
        self.sampler = RefusalSampler(limits.audited_refusals_per_min)
        self.listener: socket.socket | None = None
        self.conns: set[_Conn] = set()
        self.waiting: collections.deque[_Conn] = collections.deque()
        self.busy = False
        self.requests = 0
        self.refused = 0
        self.last_error: str | None = None

    @property
    def listening(self) -> bool:
        if self.transport == "serial":
            return any(c.serial for c in self.conns)
        return self.listener is not None


class _Conn:
    """One connection (an accepted HTTP connection, or the serial connection of a VM)."""

    _ids = itertools.count(1)

    def __init__(self, sock: socket.socket, slot: _Slot, *, serial: bool) -> None:
        self.id = next(self._ids)
        self.sock = sock
        self.slot = slot
        self.serial = serial
        self.http = RequestReader()
        self.frames = FrameReader()
        self.queued: collections.deque[Frame | BadFrame] = collections.deque()
        self.out = bytearray()
        self.deadline: float | None = None
        self.waiting = False  # a request of it is with the pool
        self.close_after = False
        self.closed = False
        self.partial_since: float | None = None
        self.job: tuple[Endpoint, str, ApiRequest, Any, bool] | None = None


@attrs.frozen
class _Result:
    conn: _Conn
    response: ApiResponse
    frame_id: Any
    keep_alive: bool


class GuestApiServer:
    """The loop; see the module docstring.

    Args:
        api: the endpoints.
        limits: every guest's limits.
        audit: where mutating requests and refusals are recorded (``None``: nowhere).
        pool_size: handler threads.
        monotonic: the loop's clock (deadlines, token buckets).
        peer_check: the connection check (``check_peer``; tests may narrow ``/proc``).
        logger: security events at ERROR, the rest at DEBUG/INFO.
    """

    def __init__(self, api: Api, limits: Limits, *, audit: AuditWriter | None,
                 pool_size: int = DEFAULT_POOL,
                 monotonic: Callable[[], float] = time.monotonic,
                 peer_check: PeerChecker = check_peer,
                 logger: logging.Logger | None = None) -> None:
        self._api = api
        self._limits = limits
        self._audit = audit
        self._now = monotonic
        self._peer_check = peer_check
        self._log = logger if logger is not None else logging.getLogger(__name__)
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=pool_size, thread_name_prefix="felhom-guestapi-pool")
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._lock = threading.Lock()
        self._commands: collections.deque[Callable[[], None]] = collections.deque()
        self._results: collections.deque[_Result] = collections.deque()
        self._slots: dict[int, _Slot] = {}
        self._entries: dict[int, GuestEntry] = {}
        self._deadlines: list[tuple[float, int, _Conn]] = []
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._seq = itertools.count()
        self._next_flush = 0.0

    # ------------------------------------------------------------ control (any thread)

    def start(self) -> None:
        """Start the loop thread (``felhom-guestapi``, daemon)."""
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._run, name="felhom-guestapi",
                                            daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the loop; every listener and connection is closed, the pool released."""
        self._stopping.set()
        self._wake()
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        else:
            self._close_all()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def attach_listener(self, vmid: int, sock: socket.socket) -> None:
        """Serve container ``vmid`` on the listening ``sock`` (replacing an earlier one)."""
        sock.setblocking(False)
        self._command(lambda: self._attach_listener(vmid, sock))

    def attach_serial(self, vmid: int, sock: socket.socket) -> None:
        """Serve VM ``vmid`` on its connected serial socket (replacing an earlier one)."""
        sock.setblocking(False)
        self._command(lambda: self._attach_serial(vmid, sock))

    def detach(self, vmid: int, *, forget: bool = False) -> None:
        """Stop serving ``vmid`` (its listener or serial connection and its connections);
        ``forget`` also drops its counters (no longer enabled)."""
        self._command(lambda: self._detach(vmid, forget=forget))

    def note_error(self, vmid: int, gtype: str, error: str | None) -> None:
        """Set the guest's ``last_error`` as the supervisor found it (placement, serial)."""
        self._command(lambda: self._note(vmid, gtype, error))

    def settle(self, timeout: float = 10.0) -> bool:
        """Wait until the loop has run every command given before this call (attach, detach,
        errors); True when it has. For callers that read :meth:`entries` right after."""
        done = threading.Event()
        self._command(done.set)
        return done.wait(timeout)

    def entries(self) -> list[GuestEntry]:
        """The report's ``guestapi`` entries (a snapshot the loop refreshes)."""
        with self._lock:
            return [self._entries[v] for v in sorted(self._entries)]

    def is_listening(self, vmid: int) -> bool:
        """Whether ``vmid`` is served right now (as of the last loop turn)."""
        with self._lock:
            entry = self._entries.get(vmid)
        return entry is not None and entry.listening

    # ------------------------------------------------------------ loop plumbing

    def _command(self, fn: Callable[[], None]) -> None:
        with self._lock:
            self._commands.append(fn)
        self._wake()

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            self._wake_w.send(b"\0")

    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                timeout = self._timeout()
                for key, mask in self._sel.select(timeout):
                    data = key.data
                    if data is None:
                        self._drain_wake()
                    elif isinstance(data, _Slot):
                        self._accept(data)
                    elif isinstance(data, _Conn) and not data.closed:
                        if mask & selectors.EVENT_WRITE:
                            self._flush(data)
                        if mask & selectors.EVENT_READ and not data.closed:
                            self._readable(data)
                self._run_commands()
                self._take_results()
                self._expire()
                self._housekeeping()
        except Exception:  # the loop must not die silently: every guest would go dark
            self._log.exception("guest API loop failed; the guest API is down")
        finally:
            self._close_all()

    def _timeout(self) -> float:
        now = self._now()
        timeout = max(0.0, self._next_flush - now) if self._next_flush else 1.0
        while self._deadlines:
            deadline, _seq, conn = self._deadlines[0]
            if conn.closed or conn.deadline != deadline:
                heapq.heappop(self._deadlines)
                continue
            timeout = min(timeout, max(0.0, deadline - now))
            break
        return min(timeout, 1.0)

    def _drain_wake(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            while self._wake_r.recv(4096):
                pass

    def _run_commands(self) -> None:
        while True:
            with self._lock:
                if not self._commands:
                    return
                fn = self._commands.popleft()
            fn()

    def _slot(self, vmid: int, gtype: str) -> _Slot:
        slot = self._slots.get(vmid)
        if slot is None or slot.type != gtype:
            if slot is not None:
                self._detach(vmid, forget=True)
            slot = _Slot(vmid, gtype, self._limits, self._now())
            self._slots[vmid] = slot
        return slot

    def _attach_listener(self, vmid: int, sock: socket.socket) -> None:
        slot = self._slot(vmid, "lxc")
        if slot.listener is not None:
            self._close_listener(slot)
        slot.listener = sock
        slot.last_error = None
        self._sel.register(sock, selectors.EVENT_READ, slot)
        self._publish(slot)

    def _attach_serial(self, vmid: int, sock: socket.socket) -> None:
        slot = self._slot(vmid, "qemu")
        for conn in [c for c in slot.conns if c.serial]:
            self._close(conn)
        conn = _Conn(sock, slot, serial=True)
        slot.conns.add(conn)
        slot.last_error = None
        self._sel.register(sock, selectors.EVENT_READ, conn)
        self._publish(slot)

    def _detach(self, vmid: int, *, forget: bool) -> None:
        slot = self._slots.get(vmid)
        if slot is None:
            return
        self._close_listener(slot)
        for conn in list(slot.conns):
            self._close(conn)
        if forget:
            del self._slots[vmid]
            with self._lock:
                self._entries.pop(vmid, None)
        else:
            self._publish(slot)

    def _note(self, vmid: int, gtype: str, error: str | None) -> None:
        slot = self._slot(vmid, gtype)
        slot.last_error = error
        self._publish(slot)

    def _close_listener(self, slot: _Slot) -> None:
        if slot.listener is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._sel.unregister(slot.listener)
            slot.listener.close()
            slot.listener = None

    def _publish(self, slot: _Slot) -> None:
        entry = GuestEntry(slot.vmid, slot.transport, slot.listening, slot.requests,
                           slot.refused, slot.last_error)
        with self._lock:
            self._entries[slot.vmid] = entry

    def _close_all(self) -> None:
        for vmid in list(self._slots):
            self._detach(vmid, forget=False)
        with contextlib.suppress(OSError):
            self._sel.close()
        for s in (self._wake_r, self._wake_w):
            s.close()

    # ------------------------------------------------------------ connections

    def _accept(self, slot: _Slot) -> None:
        listener = slot.listener
        if listener is None:
            return
        for _ in range(_ACCEPTS_PER_TURN):
            try:
                sock, _addr = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as err:
                self._log.warning("guest %d: accept failed: %s", slot.vmid, err)
                return
            check = self._peer_check(sock, slot.vmid)
            if not check.ok:
                sock.close()
                slot.last_error = f"connection dropped: {check.reason}"
                if self._refuse(slot, "connect", check.reason):
                    self._log.error("guest API of %d: dropped a connection: %s", slot.vmid,
                                    check.reason)
                self._count_refusal(slot)
                continue
            if len(slot.conns) >= self._limits.max_connections:
                reason = (f"more than {self._limits.max_connections} open connections of "
                          "this guest")
                with contextlib.suppress(OSError):
                    sock.setblocking(False)
                    sock.send(render_response(503, ApiResponse(503, {"error": reason})
                                              .json_bytes(), keep_alive=False))
                sock.close()
                self._refuse(slot, "connect", reason)
                self._count_refusal(slot)
                continue
            sock.setblocking(False)
            conn = _Conn(sock, slot, serial=False)
            slot.conns.add(conn)
            self._sel.register(sock, selectors.EVENT_READ, conn)
            self._set_deadline(conn, self._now() + self._limits.timeout_s)

    def _set_deadline(self, conn: _Conn, deadline: float | None) -> None:
        conn.deadline = deadline
        if deadline is not None:
            heapq.heappush(self._deadlines, (deadline, next(self._seq), conn))

    def _close(self, conn: _Conn) -> None:
        if conn.closed:
            return
        conn.closed = True
        conn.deadline = None
        with contextlib.suppress(KeyError, ValueError):
            self._sel.unregister(conn.sock)
        conn.sock.close()
        slot = conn.slot
        slot.conns.discard(conn)
        with contextlib.suppress(ValueError):
            slot.waiting.remove(conn)
        if conn.serial:
            self._publish(slot)

    def _readable(self, conn: _Conn) -> None:
        try:
            data = conn.sock.recv(_RECV)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            if conn.serial:
                conn.slot.last_error = "the serial connection was closed (VM stopped?)"
            self._close(conn)
            return
        if conn.serial:
            self._serial_bytes(conn, data)
        else:
            self._http_bytes(conn, data)

    # ------------------------------------------------------------ HTTP

    def _http_bytes(self, conn: _Conn, data: bytes) -> None:
        if not conn.http.pending:
            # the first byte of a request starts its clock (the idle clock stops)
            self._set_deadline(conn, self._now() + self._limits.timeout_s)
        try:
            conn.http.feed(data)
        except WireError as err:
            self._wire_refusal(conn, err)
            return
        self._next_http(conn)

    def _next_http(self, conn: _Conn) -> None:
        while not conn.closed and not conn.waiting and not conn.out:
            try:
                request = conn.http.next()
            except WireError as err:
                self._wire_refusal(conn, err)
                return
            if request is None:
                if conn.http.wants_continue():
                    self._send(conn, CONTINUE)
                return
            self._http_request(conn, request)

    def _wire_refusal(self, conn: _Conn, err: WireError) -> None:
        conn.slot.requests += 1
        self._refuse(conn.slot, "request", err.reason)
        response = ApiResponse(err.status, {"error": err.reason})
        self._answer(conn, response, None, keep_alive=False)

    def _http_request(self, conn: _Conn, request: HttpRequest) -> None:
        slot = conn.slot
        slot.requests += 1
        wait = slot.bucket.take(self._now())
        what = f"{request.method} {request.path[:80]}"
        if wait > 0:
            refusal = Refusal(429, f"more than {self._limits.rate_per_s:g} requests per "
                              "second", retry_after(wait))
            self._refuse(slot, what, refusal.reason)
            self._answer(conn, ApiResponse.refusal(refusal), None, request.keep_alive)
            return
        bad = check_headers(request)
        if bad is not None:
            self._refuse(slot, what, bad.reason)
            self._answer(conn, ApiResponse.refusal(bad), None, request.keep_alive)
            return
        api_request = ApiRequest(request.method, request.path, request.query, request.body)
        self._dispatch(conn, api_request, None, request.keep_alive)

    # ------------------------------------------------------------ serial

    def _serial_bytes(self, conn: _Conn, data: bytes) -> None:
        frames = conn.frames.feed(data)
        conn.queued.extend(frames)
        if conn.frames.pending and conn.partial_since is None:
            conn.partial_since = self._now()
            self._set_deadline(conn, conn.partial_since + self._limits.timeout_s)
        elif not conn.frames.pending:
            conn.partial_since = None
            conn.deadline = None
        self._next_frame(conn)

    def _next_frame(self, conn: _Conn) -> None:
        while not conn.closed and not conn.waiting and not conn.out and conn.queued:
            frame = conn.queued.popleft()
            slot = conn.slot
            slot.requests += 1
            wait = slot.bucket.take(self._now())
            if wait > 0:
                refusal = Refusal(429, f"more than {self._limits.rate_per_s:g} requests per "
                                  "second", retry_after(wait))
                self._refuse(slot, "frame", refusal.reason)
                self._answer(conn, ApiResponse.refusal(refusal), frame.id, True)
                continue
            if isinstance(frame, BadFrame):
                self._refuse(slot, "frame", frame.reason)
                self._answer(conn, ApiResponse(frame.status, {"error": frame.reason}),
                             frame.id, True)
                continue
            self._dispatch(conn, frame.request, frame.id, True)

    # ------------------------------------------------------------ dispatch and answers

    def _dispatch(self, conn: _Conn, request: ApiRequest, frame_id: Any,
                  keep_alive: bool) -> None:
        slot = conn.slot
        what = f"{request.method} {request.path[:80]}"
        routed = self._api.route(request)
        if isinstance(routed, Refusal):
            self._refuse(slot, what, routed.reason)
            self._answer(conn, ApiResponse.refusal(routed, mutating=request.method != "GET"),
                         frame_id, keep_alive)
            return
        endpoint, arg = routed
        if endpoint.inline:
            response = self._api.run(endpoint, arg, slot.caller, request)
            if response.refused:
                self._refuse(slot, what, response.reason)
            self._answer(conn, response, frame_id, keep_alive)
            return
        conn.waiting = True
        conn.job = (endpoint, arg, request, frame_id, keep_alive)
        if not conn.serial:
            self._set_deadline(conn, None)
        self._modify(conn, 0)  # nothing more is read from it until it is answered
        slot.waiting.append(conn)
        self._pump(slot)

    def _pump(self, slot: _Slot) -> None:
        if slot.busy or not slot.waiting:
            return
        conn = slot.waiting.popleft()
        job = conn.job
        if job is None or conn.closed:
            self._pump(slot)
            return
        slot.busy = True
        endpoint, arg, request, frame_id, keep_alive = job
        conn.job = None
        caller = slot.caller

        def work() -> None:
            try:
                response = self._api.run(endpoint, arg, caller, request)
            except Exception as err:  # a handler bug answers 500, never kills the pool
                self._log.exception("guest API handler %s failed", endpoint.name)
                response = ApiResponse(500, {"error": f"internal error: {type(err).__name__}"},
                                       mutating=endpoint.mutating)
            if response.mutating and not response.refused:
                self._write_audit(caller.vmid, response.operation_id or _request_id(caller),
                                  "accepted", f"{request.method} {request.path}: "
                                  f"operation {response.operation_id}")
            with self._lock:
                self._results.append(_Result(conn, response, frame_id, keep_alive))
            self._wake()

        try:
            self._pool.submit(work)
        except RuntimeError:  # the pool is shut down: we are stopping
            slot.busy = False

    def _take_results(self) -> None:
        while True:
            with self._lock:
                if not self._results:
                    return
                result = self._results.popleft()
            conn = result.conn
            slot = conn.slot
            slot.busy = False
            conn.waiting = False
            response = result.response
            if response.refused:
                self._refuse(slot, "handler", response.reason)
            if not conn.closed:
                self._answer(conn, response, result.frame_id, result.keep_alive)
            self._pump(slot)

    def _answer(self, conn: _Conn, response: ApiResponse, frame_id: Any,
                keep_alive: bool) -> None:
        slot = conn.slot
        if response.refused:
            slot.refused += 1
        self._publish(slot)
        if conn.serial:
            self._send(conn, render_frame(frame_id, response))
            return
        headers = [] if response.retry_after_s is None else [
            ("Retry-After", str(response.retry_after_s))]
        conn.close_after = not keep_alive
        self._send(conn, render_response(response.status, response.json_bytes(),
                                         keep_alive=keep_alive, headers=headers))

    def _send(self, conn: _Conn, data: bytes) -> None:
        conn.out += data
        self._flush(conn)

    def _flush(self, conn: _Conn) -> None:
        if conn.closed:
            return
        while conn.out:
            try:
                sent = conn.sock.send(conn.out)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self._close(conn)
                return
            del conn.out[:sent]
        if conn.out:  # the peer is slow to read: the answer's own clock
            self._set_deadline(conn, self._now() + self._limits.timeout_s)
            self._modify(conn, selectors.EVENT_WRITE)
            return
        if conn.close_after and not conn.serial:
            self._close(conn)
            return
        self._modify(conn, selectors.EVENT_READ)
        if conn.serial:
            if not conn.frames.pending:
                self._set_deadline(conn, None)
            self._next_frame(conn)
            return
        self._set_deadline(conn, self._now() + self._limits.timeout_s)  # idle clock
        self._next_http(conn)

    def _modify(self, conn: _Conn, events: int) -> None:
        if conn.closed:
            return
        with contextlib.suppress(KeyError, ValueError):
            if events == 0:
                self._sel.unregister(conn.sock)
                return
            try:
                self._sel.modify(conn.sock, events, conn)
            except KeyError:
                self._sel.register(conn.sock, events, conn)

    def _expire(self) -> None:
        now = self._now()
        while self._deadlines and self._deadlines[0][0] <= now:
            deadline, _seq, conn = heapq.heappop(self._deadlines)
            if conn.closed or conn.deadline != deadline:
                continue
            conn.deadline = None
            slot = conn.slot
            if conn.serial:
                if conn.out:
                    slot.last_error = "the VM did not read its answers; reconnecting"
                    self._close(conn)
                elif conn.frames.drop_partial():
                    conn.partial_since = None
                    self._refuse(slot, "frame", "a partial line was not completed in time")
                    slot.requests += 1
                    self._answer(conn, ApiResponse(408, {"error": "the line was not "
                                                         "completed in time"}), None, True)
                continue
            if conn.out:
                self._refuse(slot, "answer", "the answer was not read in time")
                self._close(conn)
            elif conn.http.pending:
                reason = (f"the request was not complete within "
                          f"{self._limits.timeout_s:g} s")
                slot.requests += 1
                self._refuse(slot, "request", reason)
                self._answer(conn, ApiResponse(408, {"error": reason}), None, False)
                if not conn.closed:  # the answer could not be written at once
                    self._close(conn)
            else:
                self._close(conn)  # an idle persistent connection

    def _housekeeping(self) -> None:
        now = self._now()
        if now < self._next_flush:
            return
        self._next_flush = now + 5.0
        for slot in self._slots.values():
            suppressed = slot.sampler.due(now)
            if suppressed:
                self._summary(slot, suppressed)

    # ------------------------------------------------------------ audit

    def _count_refusal(self, slot: _Slot) -> None:
        """A refusal that gets no answer (a dropped or surplus connection)."""
        slot.refused += 1
        self._publish(slot)

    def _refuse(self, slot: _Slot, what: str, reason: str) -> bool:
        """Audit a refusal through the guest's sampler; True if it got its own record."""
        own, suppressed = slot.sampler.admit(self._now())
        if suppressed:
            self._summary(slot, suppressed)
        if own:
            self._write_audit(slot.vmid, _request_id(slot.caller), "refused",
                              f"{what}: {reason}"[:500], background=True)
        return own

    def _summary(self, slot: _Slot, count: int) -> None:
        self._write_audit(slot.vmid, _request_id(slot.caller), "refused",
                          f"{count} further refusals in the last minute (recorded as a count "
                          "only; limit per minute reached)", background=True)

    def _write_audit(self, vmid: int, op_id: str, outcome: str, reason: str, *,
                     background: bool = False) -> None:
        audit = self._audit
        if audit is None:
            return

        def write() -> None:
            try:
                audit.append(op_id=op_id, source=f"guest:{vmid}", kind=_AUDIT_KIND, vmid=vmid,
                             upid=None, outcome=outcome, reason=reason)
            except DurabilityError as err:  # the audit log reports it to the fatal callback
                self._log.error("guest API audit record lost: %s", err)

        if not background:
            write()
            return
        with contextlib.suppress(RuntimeError):  # the pool is shut down: we are stopping
            self._pool.submit(write)


def _request_id(caller: Caller) -> str:
    return f"guest-{caller.vmid}-{uuid.uuid4().hex[:16]}"
