"""The HTTPS front end: TLS, request parsing, auth, faults, routing and PVE's envelopes.

One thread per connection (so idle keep-alive connections never block anyone), but every
request must hold one of ``workers`` slots while it is processed, like pveproxy's small
worker pool: when more requests arrive at once they queue. With the scenario's
``request_latency_s`` a request holds its slot at least that long, like pveproxy's
per-request processing. The TLS handshake runs in the connection thread with a timeout, so a
client that rejects the certificate (a pin mismatch) never reaches request parsing and is
never counted in ``requests_seen``.

Response shapes (``docs/pve-facts.md``, "Responses and errors"): success ``{"data": ...}`` (+
``total``); errors carry the first line of the message as the reason phrase and ``{"data": null,
"message": ...}`` (+ ``errors`` for 400) as body; 401 has an empty body and no Content-Type; 501 and
other ``error()``-path answers have a plain-text body and no Content-Type; every response >= 400
closes the connection.
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import threading
import time
import traceback
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from felhom_agent.sim.pve.apierror import ApiError, param_error
from felhom_agent.sim.pve.auth import authenticate
from felhom_agent.sim.pve.context import Ctx, Result, check_permission
from felhom_agent.sim.pve.params import Value, validate
from felhom_agent.sim.pve.routes import match_route
from felhom_agent.sim.pve.runtime import NodeRuntime

__all__ = ["PveHttpServer"]

API_PREFIX = "/api2/json"
HANDSHAKE_TIMEOUT_S = 10.0
IDLE_TIMEOUT_S = 30.0
MAX_BODY = 1 << 20


class _Drop(Exception):
    """Close the connection without answering (the ``drop`` fault)."""


class PveHttpServer(ThreadingHTTPServer):
    """A threaded HTTPS server bound to one :class:`NodeRuntime`."""

    daemon_threads = False
    block_on_close = True
    allow_reuse_address = True
    # pveproxy listens with a deep backlog; the socketserver default of 5 makes a burst of
    # connections (a warmed 16-connection pool) wait ~1 s on TCP SYN retransmits.
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], rt: NodeRuntime,
                 context: ssl.SSLContext) -> None:
        self.rt = rt
        self.ssl_context = context
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        super().__init__(address, _Handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        """Do the TLS handshake in the connection thread, then serve the connection."""
        sock: socket.socket = request
        with self._conns_lock:
            self._conns.add(sock)
        try:
            if self.rt.stop_event.is_set():
                return  # accepted just before stop: close_connections may have run already
            sock.settimeout(HANDSHAKE_TIMEOUT_S)
            # Headers and body are separate writes; without NODELAY, Nagle plus delayed ACKs
            # would add ~40 ms to every keep-alive request.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                tls = self.ssl_context.wrap_socket(sock, server_side=True)
            except (ssl.SSLError, OSError):
                return
            with self._conns_lock:
                self._conns.discard(sock)
                self._conns.add(tls)
            try:
                tls.settimeout(IDLE_TIMEOUT_S)
                _Handler(tls, client_address, self)
            except OSError:
                pass
            finally:
                with self._conns_lock:
                    self._conns.discard(tls)
                with contextlib.suppress(OSError):
                    tls.close()
        finally:
            with self._conns_lock:
                self._conns.discard(sock)

    def close_connections(self) -> None:
        """Shut every open connection so its thread ends promptly (used at stop)."""
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Connection-level errors (resets, timeouts) are normal for a test server."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "pve-api-daemon/3.0"
    sys_version = ""
    server: PveHttpServer

    def log_message(self, format: str, *args: Any) -> None:
        """Silence per-request logging (tests and the CLI keep stdout for the ready line)."""

    def send_error(self, code: int, message: str | None = None,
                   explain: str | None = None) -> None:
        """Answer protocol-level errors (bad request line, oversized headers) in PVE's plain
        ``error()`` shape instead of http.server's HTML page."""
        self.request_version = "HTTP/1.1"  # always send a status line, even for junk input
        text = message or self.responses.get(code, ("error",))[0]
        self.close_connection = True
        self._send(code, text, text.encode("utf-8", "replace"), None)

    def parse_request(self) -> bool:
        ok = super().parse_request()
        if ok:
            self.server.rt.count_request()
        return ok

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def do_HEAD(self) -> None:
        self._serve("HEAD")

    def do_PATCH(self) -> None:
        self._serve("PATCH")

    # -- plumbing ------------------------------------------------------------------------
    def _send(self, status: int, reason: str, body: bytes, content_type: str | None) -> None:
        reason = reason.split("\n", 1)[0].encode("latin-1", "replace").decode("latin-1")
        self.send_response(status, reason)
        if content_type is not None:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "max-age=0")
        if status >= 400:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_json(self, status: int, reason: str, payload: dict[str, Any]) -> None:
        body = json.dumps(payload, separators=(",", ":")).encode("utf-8")
        self._send(status, reason, body, "application/json;charset=UTF-8")

    def _send_error(self, err: ApiError) -> None:
        if err.plain:
            self._send(err.status, err.message, err.message.encode("utf-8"), None)
            return
        payload: dict[str, Any] = {"data": None, "message": err.message}
        if err.errors:
            payload["errors"] = err.errors
        self._send_json(err.status, err.message, payload)

    def _read_body(self) -> bytes:
        length_text = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            raise ApiError(501, "chunked transfer encoding not supported", plain=True)
        if not length_text:
            return b""
        try:
            length = int(length_text)
        except ValueError:
            raise ApiError(400, "invalid content length", plain=True) from None
        if length < 0 or length > MAX_BODY:
            raise ApiError(413, "Request Entity Too Large", plain=True)
        return self.rfile.read(length)

    def _body_params(self, method: str, body: bytes) -> dict[str, Value]:
        if not body:
            return {}
        if method not in ("POST", "PUT"):
            raise ApiError(501, f"Unexpected content for method '{method}'", plain=True)
        ctype = self.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
        if ctype == "application/json":
            try:
                data = json.loads(body.decode("utf-8"))
            except (UnicodeDecodeError, ValueError) as err:
                raise param_error({"body": f"unable to parse JSON body - {err}"}) from None
            if not isinstance(data, dict):
                raise param_error({"body": "JSON body must be an object"})
            out: dict[str, Value] = {}
            for key, value in data.items():
                if value is None:
                    continue
                if not isinstance(value, (str, int, float, bool)):
                    raise param_error({key: f"type check failed - got {type(value).__name__}"})
                out[key] = value
            return out
        return _parse_form(body)

    def _serve(self, method: str) -> None:
        rt = self.server.rt
        parsed = urllib.parse.urlsplit(self.path)
        raw_path = urllib.parse.unquote(parsed.path)
        try:
            body = self._read_body()
            if not raw_path.startswith(API_PREFIX + "/"):
                raise ApiError(501, "no such uri", plain=True)
            rel = raw_path[len(API_PREFIX):].rstrip("/") or "/"
            principal = authenticate(self.headers.get("Authorization"), rt.tokens)
            if isinstance(principal, str):
                rt.stop_event.wait(timeout=rt.scenario.auth_failure_delay_s)
                self._send(401, principal, b"", None)
                return
            if not rt.acquire_worker():
                raise _Drop
            started = time.monotonic()
            try:
                if not rt.process_delay(started):
                    raise _Drop
                self._dispatch(method, rel, parsed.query, body, principal)
            finally:
                # A request cut short by stop is not a measurement of the processing time.
                rt.release_worker(None if rt.stop_event.is_set()
                                  else time.monotonic() - started)
        except ApiError as err:
            self._send_error(err)
        except _Drop:
            self.close_connection = True
        except OSError:  # the peer went away (reset, timeout, TLS alert, shutdown at stop)
            self.close_connection = True
        except Exception as err:  # a handler bug must not kill the worker; answer like a die
            with rt.counters:
                rt.internal_errors.append(traceback.format_exc())
            self._send_error(ApiError(500, f"internal error: {err.__class__.__name__}: {err}\n"))

    def _dispatch(self, method: str, rel: str, query: str, body: bytes, principal: Any) -> None:
        rt = self.server.rt
        drop_after = False
        for fault in rt.faults.take_request_faults(method, rel):
            if fault.kind == "latency":
                rt.faults.hold(fault.delay_s)
            elif fault.kind == "drop":
                raise _Drop
            elif fault.kind == "drop_after":
                drop_after = True
            elif fault.kind == "no_such_task":
                raise param_error({"upid": "no such task"})
            else:
                raise ApiError(fault.status, fault.message + "\n")
        try:
            payload = self._handle(method, rel, query, body, principal)
        except ApiError:
            if drop_after:
                raise _Drop from None
            raise
        if drop_after:
            raise _Drop
        self._send_json(200, "OK", payload)

    def _handle(self, method: str, rel: str, query: str, body: bytes,
                principal: Any) -> dict[str, Any]:
        """Route, check, validate and run the handler; return the success envelope."""
        rt = self.server.rt
        route, args, _known = match_route(method, rel)
        if route is None:
            raise ApiError(501, f"Method '{method} {rel}' not implemented", plain=True)
        rt.count_route(route.method, route.path)
        params = self._body_params(method, body)
        query_params = _parse_form(query.encode("latin-1")) if query else {}
        params.update(query_params)  # query parameters override body parameters
        check_permission(principal, route.permissions, args, params)
        for key, value in args.items():
            if key in params and str(params[key]) != value:
                raise param_error({key: f"value '{params[key]}' does not match the URI "
                                        f"parameter '{value}'"})
            params[key] = value
        validated = validate(route.params, params)
        node = args.get("node")
        if node is not None and node != rt.node:
            # PVE would proxy to that node; a single-node simulator has no such host.
            raise ApiError(500, f"hostname lookup '{node}' failed - failed to get address "
                                f"info for: {node}: Name or service not known\n")
        ctx = Ctx(rt=rt, principal=principal, params=validated, args=args)
        result = route.handler(ctx)
        payload: dict[str, Any]
        if isinstance(result, Result):
            payload = {"data": result.data}
            if result.total:
                payload["total"] = result.total
        else:
            payload = {"data": result}
        return payload


def _parse_form(body: bytes) -> dict[str, Value]:
    """Decode ``application/x-www-form-urlencoded``; a malformed body is a 400."""
    try:
        text = body.decode("utf-8")
        pairs = urllib.parse.parse_qsl(text, keep_blank_values=True, strict_parsing=True,
                                       errors="strict")
    except (UnicodeDecodeError, ValueError) as err:
        raise param_error({"body": f"unable to parse form body - {err}"}) from None
    return dict(pairs)
