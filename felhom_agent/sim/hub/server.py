"""The simulated hub: HTTP(S) on loopback, Bearer auth, recorded reports, scripted answers.

``POST /v1/hosts/{host_id}/report`` with ``Authorization: Bearer <token>`` records the report and
answers the envelope of ``docs/architecture.md`` ("Hub protocol"): the current desired state, the
pending signed ops and the scenario's ``poll_interval_s``. A signed op is re-delivered on every poll
until a report lists its ``op_id`` in ``ops`` with a state other than ``running`` (payloads that are
not JSON or have no ``op_id`` are delivered until :meth:`HubSimulator.clear_signed_ops`).

Tests drive it from Python without sleeping: :meth:`HubSimulator.wait_for_reports` blocks on a
``threading.Condition``; :meth:`go_down`/:meth:`come_up` close and re-open the listening socket
on the same port (clients get "connection refused" in between); :meth:`inject` arms faults
(:mod:`felhom_agent.sim.hub.faults`). Connections are HTTP/1.0 (one request each) so "down"
really means no hub: no kept-alive connection survives it.
"""

from __future__ import annotations

import hmac
import http.server
import json
import re
import secrets
import socket
import ssl
import threading
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from felhom_agent.sim.hub.faults import FaultBook, HubFault
from felhom_agent.sim.hub.scenario import HubScenario, ScenarioOp
from felhom_agent.sim.tls import SimCertificate, generate_certificate

__all__ = ["HubSimulator", "RecordedReport"]

_PATH_RE = re.compile(r"/v1/hosts/([^/]+)/report")
_MAX_BODY = 64 * 1024 * 1024
_WRONG_TYPES = {"schema": 1, "poll_interval_s": "soon", "desired": [1, 2],
                "signed_ops": {"payload": 1}}


@attrs.frozen
class RecordedReport:
    """One report the hub received: the host id from the path and the decoded body."""

    host_id: str
    body: Mapping[str, Any]
    #: ``envelope`` when answered normally, else the fault kind that shaped the answer.
    answered_with: str


def _op_id(payload: str) -> str | None:
    try:
        parsed = json.loads(payload)
    except ValueError:
        return None
    op_id = parsed.get("op_id") if isinstance(parsed, dict) else None
    return op_id if isinstance(op_id, str) else None


class _Server(http.server.ThreadingHTTPServer):
    """A threading HTTP server whose TLS handshake runs in the handler thread."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], sim: HubSimulator) -> None:
        self.sim = sim
        super().__init__(address, _Handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        ctx = self.sim.tls_context
        if ctx is not None:
            try:
                request.settimeout(10.0)
                request = ctx.wrap_socket(request, server_side=True)
            except (OSError, ssl.SSLError):
                # A client that rejects our certificate (a pin mismatch) ends up here.
                return
        super().finish_request(request, client_address)


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.0"
    timeout = 10.0

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests and the demo read the simulator's state, not its access log."""

    def do_GET(self) -> None:
        """Only POST is spoken here."""
        self._send_json(405, {"error": "method not allowed"})

    def do_POST(self) -> None:
        """Handle a report: fault, auth, record, envelope."""
        sim = self.server.sim
        match = _PATH_RE.fullmatch(self.path)
        body = self._read_body()
        if body is None:
            return
        fault = sim.faults.take()
        if fault is not None and fault.kind == "slow":
            sim.closed_event().wait(fault.delay_s)
        if fault is not None and fault.kind == "drop":
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if fault is not None and fault.kind == "http_error":
            self._send_json(fault.status, {"error": "simulated failure"})
            return
        if not sim.authorized(self.headers.get("Authorization")):
            sim.count_unauthorized()
            self._send_json(401, {"error": "unauthorized"}, bearer=True)
            return
        if match is None:
            self._send_json(404, {"error": "no such endpoint"})
            return
        host_id = match[1]
        if not sim.knows_host(host_id):
            self._send_json(404, {"error": f"unknown host {host_id}"})
            return
        try:
            report = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            report = None
        if not isinstance(report, dict):
            self._send_json(400, {"error": "report is not a JSON object"})
            return
        answered = "envelope" if fault is None or fault.kind == "slow" else fault.kind
        envelope = sim.record(host_id, report, answered)
        if fault is not None and fault.kind == "garbage":
            self._send_raw(200, fault.body.encode("utf-8"))
        elif fault is not None and fault.kind == "wrong_types":
            self._send_json(200, _WRONG_TYPES)
        else:
            self._send_json(200, envelope)

    def _read_body(self) -> bytes | None:
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            length = -1
        if not 0 <= length <= _MAX_BODY:
            self._send_json(400, {"error": "bad Content-Length"})
            return None
        return self.rfile.read(length)

    def _send_json(self, status: int, obj: object, *, bearer: bool = False) -> None:
        self._send_raw(status, json.dumps(obj).encode("utf-8"), bearer=bearer)

    def _send_raw(self, status: int, data: bytes, *, bearer: bool = False) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if bearer:
                self.send_header("WWW-Authenticate", 'Bearer realm="felhom-hub"')
            self.end_headers()
            self.wfile.write(data)
        except OSError:
            self.close_connection = True  # the client gave up (its timeout); nothing to do


class HubSimulator:
    """A simulated hub on ``127.0.0.1``; use as a context manager.

    Args:
        scenario: what to serve.
        listen: ``(host, port)``; port 0 picks a free port (kept across go_down/come_up).
        token_factory: makes the token when the scenario has none (injectable for tests).
    """

    def __init__(
        self,
        scenario: HubScenario,
        *,
        listen: tuple[str, int] = ("127.0.0.1", 0),
        token_factory: Callable[[], str] = lambda: secrets.token_urlsafe(24),
    ) -> None:
        self.scenario = scenario
        self.token_generated = scenario.token is None
        self.token: str = scenario.token if scenario.token is not None else token_factory()
        self.faults = FaultBook()
        for fault in scenario.faults:
            self.faults.add(fault)
        self.certificate: SimCertificate | None = (
            generate_certificate("felhom hub simulator") if scenario.tls else None
        )
        self.tls_context = (
            self.certificate.server_context() if self.certificate is not None else None
        )
        self._host, self._port = listen
        self._cond = threading.Condition()
        self._reports: list[RecordedReport] = []
        self._unauthorized = 0
        self._desired: Mapping[str, Any] | None = scenario.desired
        self._ops: list[ScenarioOp] = list(scenario.signed_ops)
        self._closed = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> HubSimulator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        """Bind and start serving (the port is fixed from here on)."""
        self.come_up()

    def close(self) -> None:
        """Stop serving for good and wake any held (slow) request."""
        self._closed.set()
        self.go_down()

    def come_up(self) -> None:
        """(Re-)open the listening socket on the same port and serve."""
        with self._cond:
            if self._server is not None:
                return
            server = _Server((self._host, self._port), self)
            self._port = server.server_address[1]
            thread = threading.Thread(
                target=server.serve_forever, kwargs={"poll_interval": 0.05},
                name="hub-sim", daemon=True,
            )
            self._server, self._thread = server, thread
        thread.start()

    def go_down(self) -> None:
        """Close the listening socket: clients get "connection refused" until :meth:`come_up`."""
        with self._cond:
            server, thread = self._server, self._thread
            self._server = self._thread = None
        if server is not None and thread is not None:
            server.shutdown()
            server.server_close()
            thread.join(timeout=5.0)

    def closed_event(self) -> threading.Event:
        """Set when the simulator closes (held requests wait on it)."""
        return self._closed

    def is_up(self) -> bool:
        """Whether the listening socket is open."""
        with self._cond:
            return self._server is not None

    @property
    def port(self) -> int:
        """The bound port."""
        return self._port

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` or ``https://...`` with TLS."""
        scheme = "https" if self.certificate is not None else "http"
        return f"{scheme}://{self._host}:{self._port}"

    @property
    def fingerprint(self) -> str | None:
        """The SHA-256 pin of the served certificate (None without TLS)."""
        return self.certificate.fingerprint if self.certificate is not None else None

    # -- scripting ---------------------------------------------------------------------------

    def set_desired(self, desired: Mapping[str, Any] | None) -> None:
        """Serve ``desired`` from the next poll on."""
        with self._cond:
            self._desired = desired

    def add_signed_op(self, payload: str, signature: str) -> None:
        """Deliver this op on every poll until a report shows its outcome."""
        with self._cond:
            self._ops.append(ScenarioOp(payload=payload, signature=signature))

    def clear_signed_ops(self) -> None:
        """Stop delivering every pending op."""
        with self._cond:
            self._ops.clear()

    def pending_ops(self) -> tuple[ScenarioOp, ...]:
        """Ops still being delivered."""
        with self._cond:
            return tuple(self._ops)

    def inject(self, fault: HubFault) -> None:
        """Arm a fault for the next report requests."""
        self.faults.add(fault)

    # -- observation -------------------------------------------------------------------------

    def reports(self) -> tuple[RecordedReport, ...]:
        """Every report recorded so far, in arrival order."""
        with self._cond:
            return tuple(self._reports)

    def unauthorized_count(self) -> int:
        """Requests refused with 401 for a missing or wrong token."""
        with self._cond:
            return self._unauthorized

    def wait_for_reports(self, n: int, timeout: float) -> tuple[RecordedReport, ...]:
        """Block until at least ``n`` reports are recorded; return them.

        Raises:
            TimeoutError: fewer than ``n`` arrived within ``timeout`` seconds.
        """
        with self._cond:
            if not self._cond.wait_for(lambda: len(self._reports) >= n, timeout=timeout):
                raise TimeoutError(
                    f"hub simulator got {len(self._reports)} of {n} reports in {timeout:g} s"
                )
            return tuple(self._reports)

    # -- called by the handler ---------------------------------------------------------------

    def authorized(self, header: str | None) -> bool:
        """Whether ``header`` is exactly ``Bearer <our token>`` (constant-time compare)."""
        if header is None or not header.startswith("Bearer "):
            return False
        return hmac.compare_digest(header[len("Bearer ") :].encode(), self.token.encode())

    def knows_host(self, host_id: str) -> bool:
        """Whether the scenario accepts reports for ``host_id``."""
        return self.scenario.host_ids is None or host_id in self.scenario.host_ids

    def count_unauthorized(self) -> None:
        """Count one refused request."""
        with self._cond:
            self._unauthorized += 1

    def record(self, host_id: str, body: Mapping[str, Any], answered_with: str) -> dict[str, Any]:
        """Record a report, retire ops it reports outcomes for, return the envelope."""
        done = set()
        ops = body.get("ops")
        if isinstance(ops, list):
            for entry in ops:
                if isinstance(entry, dict) and entry.get("state") not in (None, "running"):
                    op_id = entry.get("op_id")
                    if isinstance(op_id, str):
                        done.add(op_id)
        with self._cond:
            self._ops = [op for op in self._ops if _op_id(op.payload) not in done]
            envelope: dict[str, Any] = {
                "schema": 1,
                "desired": None if self._desired is None else dict(self._desired),
                "signed_ops": [{"payload": o.payload, "signature": o.signature} for o in self._ops],
            }
            if self.scenario.poll_interval_s is not None:
                envelope["poll_interval_s"] = self.scenario.poll_interval_s
            self._reports.append(RecordedReport(host_id, body, answered_with))
            self._cond.notify_all()
        return envelope
