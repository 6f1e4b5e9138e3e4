"""HTTP/1.1 on a guest's socket: an incremental, strict request reader and the answer bytes.

``docs/architecture.md`` ("The per-guest local API"). The reader is pure (bytes in, requests
out, no I/O), so the event loop feeds it whatever ``recv`` returned and the tests feed it
byte by byte. It accepts only what the API needs and refuses the rest with a
:class:`~felhom_agent.guestapi.errors.WireError` carrying the answer's status:

* the head (request line plus header fields) is at most :data:`MAX_HEAD_BYTES` (431 beyond),
  at most :data:`MAX_HEADERS` fields, ASCII only, no obsolete line folding, CRLF line ends;
* a body only with ``Content-Length`` (one, decimal) of at most :data:`MAX_BODY_BYTES` (413
  beyond, answered before the body is read); ``Transfer-Encoding`` is refused (501), so
  request smuggling through conflicting length rules cannot happen;
* the target is an absolute path (origin form), printable ASCII, no fragment;
* ``HTTP/1.1`` (persistent unless ``Connection: close``) or ``HTTP/1.0`` (closed unless
  ``Connection: keep-alive``).

Which headers a request must carry or must not carry (``Felhom-Guest-API``, ``Forwarded``)
is the API's rule, not the wire's: :mod:`felhom_agent.guestapi.policy`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from http import HTTPStatus
from typing import Final

import attrs

from felhom_agent.guestapi.errors import WireError

__all__ = [
    "CONTINUE",
    "MAX_BODY_BYTES",
    "MAX_HEADERS",
    "MAX_HEAD_BYTES",
    "HttpRequest",
    "RequestReader",
    "render_response",
]

#: Request line plus header fields, CRLFs included.
MAX_HEAD_BYTES: Final = 8192
#: A request body (the API's bodies are a few bytes of JSON).
MAX_BODY_BYTES: Final = 4096
MAX_HEADERS: Final = 32
_MAX_TARGET: Final = 512
#: Bytes buffered ahead (pipelined requests): the loop stops reading while one is answered.
_MAX_BUFFERED: Final = 2 * (MAX_HEAD_BYTES + MAX_BODY_BYTES)
#: The interim answer to ``Expect: 100-continue`` (curl sends it for larger bodies).
CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"

_METHOD = re.compile(rb"[A-Z]{1,16}")
_TARGET = re.compile(rb"/[\x21-\x7e]*")
_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}")
_VALUE = re.compile(rb"[\x20-\x7e\t]*")
_DIGITS = re.compile(rb"[0-9]{1,10}")


@attrs.frozen
class HttpRequest:
    """One complete request.

    Attributes:
        method: upper-case method (``GET``).
        path: the target's path (before ``?``), as sent.
        query: the query string after ``?`` (``None`` without ``?``; ``""`` for a bare ``?``).
        version: ``HTTP/1.1`` or ``HTTP/1.0``.
        headers: ``(lower-case name, value)`` pairs in order.
        body: the body bytes (empty without ``Content-Length``).
        keep_alive: the connection stays open after the answer.
    """

    method: str
    path: str
    query: str | None
    version: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    keep_alive: bool

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (any case), or ``None``."""
        wanted = name.lower()
        return next((v for n, v in self.headers if n == wanted), None)

    def has(self, name: str) -> bool:
        """Whether header ``name`` is present at all."""
        wanted = name.lower()
        return any(n == wanted for n, _ in self.headers)


@attrs.define
class _Head:
    method: str
    path: str
    query: str | None
    version: str
    headers: tuple[tuple[str, str], ...]
    length: int
    keep_alive: bool
    expects_continue: bool


def _parse_head(raw: bytes) -> _Head:
    lines = raw.split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3:
        raise WireError(400, "malformed request line")
    method, target, version = parts
    if not _METHOD.fullmatch(method):
        raise WireError(400, "malformed method")
    if version not in (b"HTTP/1.1", b"HTTP/1.0"):
        raise WireError(505, "only HTTP/1.1 and HTTP/1.0 are spoken here")
    if len(target) > _MAX_TARGET or not _TARGET.fullmatch(target) or b"#" in target:
        raise WireError(400, "the target must be an absolute path of printable ASCII")
    if len(lines) - 1 > MAX_HEADERS:
        raise WireError(431, f"more than {MAX_HEADERS} header fields")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if line[:1] in (b" ", b"\t"):
            raise WireError(400, "obsolete line folding is not accepted")
        name, sep, value = line.partition(b":")
        if not sep or not _TOKEN.fullmatch(name):
            raise WireError(400, "malformed header field")
        value = value.strip(b" \t")
        if not _VALUE.fullmatch(value):
            raise WireError(400, "header values must be printable ASCII")
        headers.append((name.decode("ascii").lower(), value.decode("ascii")))
    lengths = [v for n, v in headers if n == "content-length"]
    if any(n == "transfer-encoding" for n, _ in headers):
        raise WireError(501, "Transfer-Encoding is not supported; send Content-Length")
    if len(lengths) > 1:
        raise WireError(400, "more than one Content-Length")
    length = 0
    if lengths:
        if not _DIGITS.fullmatch(lengths[0].encode("ascii")):
            raise WireError(400, "Content-Length must be a decimal number")
        length = int(lengths[0])
        if length > MAX_BODY_BYTES:
            raise WireError(413, f"the body may be at most {MAX_BODY_BYTES} bytes")
    connection = {t.strip().lower() for n, v in headers if n == "connection"
                  for t in v.split(",")}
    ver = version.decode("ascii")
    keep_alive = ("close" not in connection if ver == "HTTP/1.1"
                  else "keep-alive" in connection)
    expect = next((v.lower() for n, v in headers if n == "expect"), None)
    if expect is not None and expect != "100-continue":
        raise WireError(417, "only Expect: 100-continue is understood")
    text = target.decode("ascii")
    path, qmark, query = text.partition("?")
    return _Head(method.decode("ascii"), path, query if qmark else None, ver,
                 tuple(headers), length, keep_alive, expect is not None and length > 0)


class RequestReader:
    """Turns the bytes of one connection into requests, one at a time.

    :meth:`feed` appends received bytes; :meth:`next` returns the next complete request (or
    ``None`` while one is incomplete). A :class:`WireError` from either means the connection
    is answered with its status and closed.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._head: _Head | None = None
        self._continued = False

    @property
    def pending(self) -> bool:
        """Whether bytes of an unfinished request are buffered."""
        return bool(self._buf) or self._head is not None

    def feed(self, data: bytes) -> None:
        """Append bytes read from the connection.

        Raises:
            WireError: the head grew past :data:`MAX_HEAD_BYTES` without ending.
        """
        self._buf += data
        if len(self._buf) > _MAX_BUFFERED:
            raise WireError(400, "too many bytes sent ahead of the answers")
        if self._head is None and len(self._buf) > MAX_HEAD_BYTES + 4 and (
                self._buf.find(b"\r\n\r\n", 0, MAX_HEAD_BYTES + 4) < 0):
            raise WireError(431, f"the request head exceeds {MAX_HEAD_BYTES} bytes")

    def wants_continue(self) -> bool:
        """True once per request whose head asked for ``100 Continue`` and whose body has not
        arrived yet (the caller sends :data:`CONTINUE`)."""
        head = self._head
        if head is None or not head.expects_continue or self._continued:
            return False
        if len(self._buf) >= head.length:
            return False
        self._continued = True
        return True

    def next(self) -> HttpRequest | None:
        """The next complete request, or ``None`` if more bytes are needed.

        Raises:
            WireError: the request is malformed or over a limit.
        """
        if self._head is None:
            while self._buf.startswith(b"\r\n"):  # tolerated before a request line
                del self._buf[:2]
            end = self._buf.find(b"\r\n\r\n", 0, MAX_HEAD_BYTES + 4)
            if end < 0:
                if len(self._buf) > MAX_HEAD_BYTES:
                    raise WireError(431, f"the request head exceeds {MAX_HEAD_BYTES} bytes")
                return None
            self._head = _parse_head(bytes(self._buf[:end]))
            del self._buf[:end + 4]
            self._continued = False
        head = self._head
        if len(self._buf) < head.length:
            return None
        body = bytes(self._buf[:head.length])
        del self._buf[:head.length]
        self._head = None
        return HttpRequest(head.method, head.path, head.query, head.version, head.headers,
                           body, head.keep_alive)


def render_response(status: int, body: bytes, *, keep_alive: bool,
                    headers: Sequence[tuple[str, str]] = (),
                    content_type: str = "application/json") -> bytes:
    """The bytes of one answer: status line, fixed headers, ``headers``, the body."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Unknown"
    lines = [f"HTTP/1.1 {status} {phrase}",
             f"Content-Type: {content_type}",
             f"Content-Length: {len(body)}",
             "Cache-Control: no-store",
             f"Connection: {'keep-alive' if keep_alive else 'close'}"]
    lines += [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii") + body
