"""The serial framing of a VM's requests: one JSON object per line, each way.

``docs/architecture.md`` ("The per-guest local API"). A VM has no socket of ours inside it;
its API is the serial port PVE connects to ``<serial_dir>/<vmid>.serial1``, and a serial line
is a byte stream that may carry boot noise, a login prompt or half a line after a reboot. So:

* a request is one line: ``{"id": ..., "method": "GET", "path": "/1.0/identity",
  "body": {...}}`` (``id`` a string of at most 64 characters or an integer; ``body``
  optional);
* an answer is one line: ``{"id": ..., "status": 200, "body": {...}}``;
* a line longer than :data:`MAX_FRAME_BYTES` is answered ``413`` and skipped up to its
  newline; a line that is not such an object is answered ``400`` with ``id`` ``null`` (or
  its id when it had a usable one); empty lines and a carriage return before the newline are
  ignored. The stream resynchronises at every newline, so one bad line costs that line only.
"""

from __future__ import annotations

import json
from typing import Any, Final

import attrs

from felhom_agent.guestapi.api import ApiRequest, ApiResponse

__all__ = ["MAX_FRAME_BYTES", "BadFrame", "Frame", "FrameReader", "render_frame"]

MAX_FRAME_BYTES: Final = 8192
_FIELDS: Final = frozenset({"id", "method", "path", "body"})
FrameId = str | int | None


@attrs.frozen
class Frame:
    """One well-formed request line."""

    id: FrameId
    request: ApiRequest


@attrs.frozen
class BadFrame:
    """A line that is not a request: answered with ``status`` and skipped."""

    id: FrameId
    status: int
    reason: str


def _frame_id(value: object) -> FrameId:
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and -(2**53) <= value <= 2**53:
        return value
    if isinstance(value, str) and len(value) <= 64 and value.isprintable():
        return value
    return None


def _parse(line: bytes) -> Frame | BadFrame:
    try:
        obj: Any = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return BadFrame(None, 400, "not a JSON line")
    if not isinstance(obj, dict):
        return BadFrame(None, 400, "a request is a JSON object")
    fid = _frame_id(obj.get("id"))
    if "id" not in obj or (fid is None and obj.get("id") is not None):
        return BadFrame(None, 400, "id must be a string (at most 64 characters) or an integer")
    unknown = sorted(str(k)[:40] for k in obj if k not in _FIELDS)
    if unknown:
        return BadFrame(fid, 400, f"unknown member(s): {', '.join(unknown[:5])}")
    method, target = obj.get("method"), obj.get("path")
    if not isinstance(method, str) or not method.isascii() or not method.isupper():
        return BadFrame(fid, 400, "method must be GET or POST")
    if not isinstance(target, str) or not target.startswith("/") or len(target) > 512:
        return BadFrame(fid, 400, "path must be an absolute path")
    path, qmark, query = target.partition("?")
    return Frame(fid, ApiRequest(method, path, query if qmark else None, obj.get("body")))


class FrameReader:
    """Turns the bytes of a serial connection into frames, resynchronising at newlines."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._skipping = False

    @property
    def pending(self) -> bool:
        """Whether part of a line is buffered."""
        return bool(self._buf)

    def feed(self, data: bytes) -> list[Frame | BadFrame]:
        """Append bytes; return every complete line's frame (bad lines included)."""
        out: list[Frame | BadFrame] = []
        self._buf += data
        while True:
            end = self._buf.find(b"\n")
            if end < 0:
                if len(self._buf) > MAX_FRAME_BYTES:
                    self._buf.clear()
                    if not self._skipping:
                        out.append(BadFrame(None, 413, f"a line may be at most "
                                            f"{MAX_FRAME_BYTES} bytes"))
                    self._skipping = True
                return out
            line = bytes(self._buf[:end]).rstrip(b"\r")
            del self._buf[:end + 1]
            if self._skipping:
                self._skipping = False
                continue
            if len(line) > MAX_FRAME_BYTES:
                out.append(BadFrame(None, 413, f"a line may be at most {MAX_FRAME_BYTES} bytes"))
            elif line.strip():
                out.append(_parse(line))

    def drop_partial(self) -> bool:
        """Forget an unfinished line (its time ran out); True if there was one."""
        had = bool(self._buf)
        self._buf.clear()
        self._skipping = False
        return had


def render_frame(frame_id: FrameId, response: ApiResponse) -> bytes:
    """One answer line (``retry_after_s`` joins the body of a 429 or 503)."""
    body: Any = response.body
    if response.retry_after_s is not None and isinstance(body, dict):
        body = {**body, "retry_after_s": response.retry_after_s}
    return json.dumps({"id": frame_id, "status": response.status, "body": body},
                      separators=(",", ":"), ensure_ascii=True, allow_nan=False
                      ).encode("ascii") + b"\n"
