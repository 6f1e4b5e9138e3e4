"""A minimal blocking HTTP/1.1 client over a unix socket, for the tests and the benchmark.

It reads exactly one answer per request (status line, headers, ``Content-Length`` body), so
a test sees what the server sent byte for byte -- no library between them.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import attrs

API_HEADER = "Felhom-Guest-API: 1\r\n"


@attrs.frozen
class Answer:
    """One parsed answer."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def request_bytes(method: str, path: str, *, body: bytes = b"", headers: str = API_HEADER,
                  close: bool = False) -> bytes:
    """The bytes of one request (``headers`` are whole ``Name: value\\r\\n`` lines)."""
    head = f"{method} {path} HTTP/1.1\r\nHost: felhom\r\n{headers}"
    if body:
        head += f"Content-Length: {len(body)}\r\n"
    if close:
        head += "Connection: close\r\n"
    return head.encode() + b"\r\n" + body


def read_answer(sock: socket.socket) -> Answer | None:
    """Read one answer; ``None`` if the server closed the connection before any byte."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            if not buf:
                return None
            raise ConnectionError(f"closed mid-head: {buf!r}")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("ascii").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed mid-body")
        rest += chunk
    return Answer(status, headers, rest[:length])


class Client:
    """One persistent connection to a guest socket."""

    def __init__(self, path: Path | str, *, timeout: float = 30.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(str(path))

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def ask(self, method: str, path: str, **kw: Any) -> Answer:
        self.send(request_bytes(method, path, **kw))
        answer = read_answer(self.sock)
        assert answer is not None, "the server closed the connection"
        return answer

    def closed_by_server(self) -> bool:
        """True once the server has closed its end (reads EOF)."""
        try:
            return self.sock.recv(1) == b""
        except (ConnectionResetError, BrokenPipeError):
            return True

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
