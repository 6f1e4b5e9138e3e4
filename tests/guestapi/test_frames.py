"""The serial framing of a VM's requests: JSON lines, resynchronised at every newline."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from felhom_agent.guestapi.api import ApiRequest, ApiResponse
from felhom_agent.guestapi.frames import (
    MAX_FRAME_BYTES,
    BadFrame,
    Frame,
    FrameReader,
    render_frame,
)


def test_a_request_line_is_a_frame() -> None:
    """``{"id","method","path","body"}`` becomes an ApiRequest with the id kept."""
    frames = FrameReader().feed(b'{"id": 7, "method": "GET", "path": "/1.0/identity"}\n')
    assert frames == [Frame(7, ApiRequest("GET", "/1.0/identity", None, None))]
    frames = FrameReader().feed(b'{"id":"a","method":"POST","path":"/1.0/backups?x=1",'
                                b'"body":{}}\r\n')
    assert frames == [Frame("a", ApiRequest("POST", "/1.0/backups", "x=1", {}))]


def test_partial_lines_wait_for_their_newline() -> None:
    """A line split across reads is one frame when its newline arrives."""
    reader = FrameReader()
    line = b'{"id": 1, "method": "GET", "path": "/1.0"}\n'
    assert reader.feed(line[:10]) == []
    assert reader.pending
    assert len(reader.feed(line[10:])) == 1
    assert not reader.pending


def test_garbage_and_boot_noise_are_answered_and_skipped() -> None:
    """Noise lines are 400s (id null), empty lines are ignored, the next good line works."""
    reader = FrameReader()
    frames = reader.feed(b"login: \n\n[  OK  ] Started\n{\"id\": 2, \"method\": \"GET\", "
                         b"\"path\": \"/1.0\"}\n")
    assert [type(f) for f in frames] == [BadFrame, BadFrame, Frame]
    assert all(f.status == 400 and f.id is None for f in frames if isinstance(f, BadFrame))


def test_bad_members_keep_the_id_when_usable() -> None:
    """An unknown member (a vmid!) is refused with the frame's own id."""
    frames = FrameReader().feed(b'{"id": 3, "method": "GET", "path": "/1.0", "vmid": 102}\n')
    assert frames == [BadFrame(3, 400, "unknown member(s): vmid")]
    frames = FrameReader().feed(b'{"id": true, "method": "GET", "path": "/1.0"}\n')
    assert isinstance(frames[0], BadFrame) and frames[0].id is None


def test_an_oversized_line_is_refused_once_and_skipped_to_its_newline() -> None:
    """413 once, then everything up to the newline is dropped; the following line works."""
    reader = FrameReader()
    frames = reader.feed(b"x" * (MAX_FRAME_BYTES + 10))
    assert [f.status for f in frames if isinstance(f, BadFrame)] == [413]
    assert reader.feed(b"y" * 5000) == []
    frames = reader.feed(b'zzz\n{"id": 4, "method": "GET", "path": "/1.0"}\n')
    assert [type(f) for f in frames] == [Frame]


def test_answer_lines() -> None:
    """One line per answer; Retry-After joins the body as retry_after_s."""
    line = render_frame(5, ApiResponse(429, {"error": "slow down"}, 2))
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert json.loads(line) == {"id": 5, "status": 429,
                                "body": {"error": "slow down", "retry_after_s": 2}}


@given(st.lists(st.binary(max_size=300), max_size=8))
def test_any_byte_stream_resynchronises(chunks: list[bytes]) -> None:
    """Property: after any garbage, a newline and a good line give exactly that good frame."""
    reader = FrameReader()
    for chunk in chunks:
        reader.feed(chunk)
    frames = reader.feed(b'\n{"id": 9, "method": "GET", "path": "/1.0"}\n')
    assert frames[-1] == Frame(9, ApiRequest("GET", "/1.0", None, None))
