"""The strict HTTP/1.1 request reader and the answer bytes of the per-guest API."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from felhom_agent.guestapi.errors import WireError
from felhom_agent.guestapi.httpwire import (
    CONTINUE,
    MAX_BODY_BYTES,
    MAX_HEAD_BYTES,
    HttpRequest,
    RequestReader,
    render_response,
)

GET = (b"GET /1.0/identity HTTP/1.1\r\nHost: felhom\r\nFelhom-Guest-API: 1\r\n"
       b"User-Agent: curl/8\r\n\r\n")


def _one(data: bytes) -> HttpRequest:
    reader = RequestReader()
    reader.feed(data)
    request = reader.next()
    assert request is not None
    return request


def _refused(data: bytes) -> WireError:
    reader = RequestReader()
    with pytest.raises(WireError) as info:
        reader.feed(data)
        reader.next()
    return info.value


def test_a_curl_request_is_read() -> None:
    """What ``curl --unix-socket`` sends parses into method, path, headers, no body."""
    request = _one(GET)
    assert (request.method, request.path, request.query) == ("GET", "/1.0/identity", None)
    assert request.header("felhom-guest-api") == "1"
    assert request.header("Host") == "felhom"
    assert request.body == b""
    assert request.keep_alive


def test_byte_by_byte_gives_the_same_request() -> None:
    """The reader is incremental: a request fed one byte at a time is the same request."""
    reader = RequestReader()
    seen: list[HttpRequest] = []
    for i in range(len(GET)):
        reader.feed(GET[i:i + 1])
        got = reader.next()
        if got is not None:
            seen.append(got)
    assert seen == [_one(GET)]
    assert not reader.pending


def test_pipelined_requests_come_out_in_order() -> None:
    """Two requests in one read are returned one after the other, bodies included."""
    post = (b"POST /1.0/backups HTTP/1.1\r\nFelhom-Guest-API: 1\r\nContent-Length: 2\r\n\r\n{}")
    reader = RequestReader()
    reader.feed(post + GET)
    first, second = reader.next(), reader.next()
    assert first is not None and first.method == "POST" and first.body == b"{}"
    assert second is not None and second.path == "/1.0/identity"
    assert reader.next() is None


def test_query_is_split_off() -> None:
    """The query string is kept apart (the API refuses every query)."""
    request = _one(b"GET /1.0/backups?vmid=102 HTTP/1.1\r\n\r\n")
    assert (request.path, request.query) == ("/1.0/backups", "vmid=102")
    assert _one(b"GET /1.0? HTTP/1.1\r\n\r\n").query == ""


@pytest.mark.parametrize(("connection", "version", "keep"), [
    (None, "1.1", True), ("close", "1.1", False), ("Keep-Alive, Close", "1.1", False),
    (None, "1.0", False), ("keep-alive", "1.0", True),
])
def test_persistence_follows_the_version_and_connection(connection: str | None, version: str,
                                                        keep: bool) -> None:
    """HTTP/1.1 is persistent unless ``close``; HTTP/1.0 only with ``keep-alive``."""
    head = f"GET /1.0 HTTP/{version}\r\n" + (f"Connection: {connection}\r\n" if connection
                                              else "")
    assert _one((head + "\r\n").encode()).keep_alive is keep


@pytest.mark.parametrize(("data", "status"), [
    (b"GET /1.0\r\n\r\n", 400),
    (b"get /1.0 HTTP/1.1\r\n\r\n", 400),
    (b"GET /1.0 HTTP/2.0\r\n\r\n", 505),
    (b"GET http://felhom/1.0 HTTP/1.1\r\n\r\n", 400),
    (b"GET /1.0#frag HTTP/1.1\r\n\r\n", 400),
    (b"GET /1.0 HTTP/1.1\r\nX: a\r\n folded\r\n\r\n", 400),
    (b"GET /1.0 HTTP/1.1\r\nBad Name: a\r\n\r\n", 400),
    (b"GET /1.0 HTTP/1.1\r\nX: \x01\r\n\r\n", 400),
    (b"GET /1.0 HTTP/1.1\r\nX: caf\xc3\xa9\r\n\r\n", 400),
    (b"POST /1.0/backups HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 501),
    (b"POST /1.0/backups HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n{}", 400),
    (b"POST /1.0/backups HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
    (b"POST /1.0/backups HTTP/1.1\r\nContent-Length: 4097\r\n\r\n", 413),
    (b"POST /1.0/backups HTTP/1.1\r\nExpect: 200-ok\r\nContent-Length: 2\r\n\r\n{}", 417),
])
def test_malformed_or_oversized_requests_are_refused(data: bytes, status: int) -> None:
    """Each shape outside the strict subset is refused with its status."""
    assert _refused(data).status == status


def test_an_endless_head_is_refused_before_it_is_buffered_whole() -> None:
    """A head that never ends is refused once it passes the limit (431), not buffered on."""
    reader = RequestReader()
    reader.feed(b"GET /1.0 HTTP/1.1\r\n")
    with pytest.raises(WireError) as info:
        for _ in range(MAX_HEAD_BYTES // 10 + 2):
            reader.feed(b"X-Pad: abc\r\n")
            reader.next()
    assert info.value.status == 431


def test_too_many_header_fields_are_refused() -> None:
    """More than 32 fields: 431, whatever their size."""
    head = b"GET /1.0 HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(40))
    assert _refused(head + b"\r\n").status == 431


def test_body_limit_is_exact() -> None:
    """A body of exactly the limit is read; one byte more is refused before reading it."""
    body = b"x" * MAX_BODY_BYTES
    request = _one(b"POST /1.0/backups HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    assert request.body == body


def test_expect_continue_is_signalled_once_until_the_body_arrives() -> None:
    """curl's ``Expect: 100-continue`` gets one interim answer, only while the body is due."""
    reader = RequestReader()
    reader.feed(b"POST /1.0/backups HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n")
    assert reader.next() is None
    assert reader.wants_continue()
    assert not reader.wants_continue()
    reader.feed(b"{}")
    request = reader.next()
    assert request is not None and request.body == b"{}"
    assert CONTINUE.startswith(b"HTTP/1.1 100 ")


def test_bytes_far_ahead_of_the_answers_are_refused() -> None:
    """A client that keeps sending while not reading answers is cut off (bounded buffer)."""
    reader = RequestReader()
    with pytest.raises(WireError):
        for _ in range(100):
            reader.feed(GET * 4)


def test_answer_bytes() -> None:
    """Status line, fixed headers, extra headers (Retry-After), the body."""
    raw = render_response(429, b'{"error":"slow down"}', keep_alive=False,
                          headers=[("Retry-After", "3")])
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"HTTP/1.1 429 Too Many Requests"
    assert b"Content-Length: 21" in lines
    assert b"Connection: close" in lines
    assert b"Retry-After: 3" in lines
    assert body == b'{"error":"slow down"}'


@given(st.binary(max_size=600))
def test_arbitrary_bytes_never_escape_as_anything_but_wire_errors(data: bytes) -> None:
    """Whatever a guest sends, the reader returns requests, waits, or raises WireError."""
    reader = RequestReader()
    try:
        reader.feed(data)
        while reader.next() is not None:
            pass
    except WireError as err:
        assert 400 <= err.status < 600
