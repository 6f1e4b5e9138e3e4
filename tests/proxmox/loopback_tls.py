"""A tiny loopback HTTPS server for the transport tests (real TLS, real sockets).

It answers each request from a route table with exact PVE answer shapes (custom reason
phrase, empty 401 body, JSON error bodies), can drop a connection or stall an answer, and
counts the requests it parsed -- so a test can prove that a pin mismatch sent nothing.
A fresh ECDSA self-signed certificate is generated per server (CN pve.example, not 127.0.0.1,
so hostname checks would fail if pinning did not disable them); ``san_ip=True`` adds an
IP SAN for 127.0.0.1 and CA basic constraints, for the ``ca_file`` mode.
"""

from __future__ import annotations

import datetime
import hashlib
import http.server
import ipaddress
import ssl
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@attrs.frozen
class Answer:
    """One scripted answer: status, reason phrase, body, and an optional action."""

    status: int = 200
    reason: str | None = None
    body: bytes = b'{"data":null}'
    content_type: str | None = "application/json;charset=UTF-8"
    # "drop": close without answering; "stall": wait for release, then close unanswered;
    # "hold": wait for release, then answer normally (counted in active/max_active).
    action: str | None = None


@attrs.frozen
class Seen:
    """One request as the server parsed it."""

    method: str
    path: str
    authorization: str | None
    body: bytes


def _make_cert(directory: Path, san_ip: bool) -> tuple[Path, Path, str, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pve.example")])
    now = datetime.datetime.now(datetime.UTC)
    builder = x509.CertificateBuilder()
    if san_ip:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        ).add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    cert = (
        builder.subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    der = cert.public_bytes(serialization.Encoding.DER)
    fp = ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())
    cert_path = directory / "cert.pem"
    key_path = directory / "key.pem"
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    cert_path.write_bytes(cert_pem)
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path, fp, cert_pem


class LoopbackPve:
    """An HTTPS server on 127.0.0.1 answering from ``routes`` ("METHOD /api2/json/path")."""

    def __init__(self, *, san_ip: bool = False) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="felhom-test-tls-")
        cert_path, key_path, self.fingerprint, self.cert_pem = _make_cert(
            Path(self._tmp.name), san_ip
        )
        self.cert_path = cert_path
        self.routes: dict[str, Answer | Callable[[], Answer]] = {}
        self.seen: list[Seen] = []
        self.release = threading.Event()
        self.stalled = threading.Event()
        self._lock = threading.Lock()
        self.changed = threading.Condition(self._lock)
        self.active = 0
        self.max_active = 0
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(cert_path), str(key_path))
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                path = self.path.split("?", 1)[0]
                with owner._lock:
                    owner.seen.append(
                        Seen(self.command, self.path, self.headers.get("Authorization"), body)
                    )
                    route = owner.routes.get(f"{self.command} {path}")
                answer = route() if callable(route) else route
                if answer is None:
                    answer = Answer(501, f"Method '{self.command} {path}' not implemented", b"")
                if answer.action == "drop":
                    self.close_connection = True
                    self.connection.close()
                    return
                if answer.action == "hold":
                    with owner.changed:
                        owner.active += 1
                        owner.max_active = max(owner.max_active, owner.active)
                        owner.changed.notify_all()
                    owner.release.wait(10)
                    with owner.changed:
                        owner.active -= 1
                if answer.action == "stall":
                    owner.stalled.set()
                    owner.release.wait(10)
                    self.close_connection = True
                    return
                self.send_response(answer.status, answer.reason)
                if answer.content_type and answer.body:
                    self.send_header("Content-Type", answer.content_type)
                self.send_header("Content-Length", str(len(answer.body)))
                if answer.status >= 400:
                    self.send_header("Connection", "close")
                    self.close_connection = True
                self.end_headers()
                self.wfile.write(answer.body)

            do_GET = do_POST = do_PUT = do_DELETE = _handle

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._server.socket = ctx.wrap_socket(self._server.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def __enter__(self) -> LoopbackPve:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
        self._tmp.cleanup()
