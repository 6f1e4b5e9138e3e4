"""The nonce store's file format: checksummed frames, parsing, and the safe reset.

``state_dir/nonces.log`` is a header line then one frame per accepted op::

    felhom-nonces v1
    <crc32 of the JSON, 8 hex> <one-line JSON record>

:func:`parse_store` tells a torn tail (only the last frame damaged: its fdatasync never
returned, so that op was never accepted) from corruption anywhere else (fail closed).
:func:`reset_store` is the operator's way out of a failed store, allowed only once nothing
the file could hold is still within its lifetime. The store's behaviour is in
:mod:`felhom_agent.authz.nonces`.
"""

from __future__ import annotations

import contextlib
import json
import os
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

import attrs

from felhom_agent.authz.errors import NonceStoreError
from felhom_agent.durable import fsync_dir
from felhom_agent.utc import format_utc, parse_utc

__all__ = [
    "HEADER",
    "NonceRecord",
    "StoreDamaged",
    "parse_store",
    "reset_store",
]

HEADER: Final = b"felhom-nonces v1\n"


@attrs.frozen
class NonceRecord:
    """One accepted op, as recorded."""

    nonce: str
    op_id: str
    signer: str
    payload_sha256: str
    issued_at: datetime
    expires_at: datetime
    accepted_at: datetime

    def to_frame(self) -> bytes:
        """Encode as one checksummed line."""
        body = json.dumps(
            {
                "nonce": self.nonce,
                "op_id": self.op_id,
                "signer": self.signer,
                "payload_sha256": self.payload_sha256,
                "issued_at": format_utc(self.issued_at),
                "expires_at": format_utc(self.expires_at),
                "accepted_at": format_utc(self.accepted_at),
            },
            separators=(",", ":"),
            sort_keys=True,
        ).encode("ascii")
        return b"%08x %s\n" % (zlib.crc32(body), body)

    @classmethod
    def from_frame(cls, line: bytes) -> NonceRecord:
        """Decode one line (without its newline); ``ValueError`` if damaged."""
        crc, sep, body = line.partition(b" ")
        if not sep or len(crc) != 8 or int(crc, 16) != zlib.crc32(body):
            raise ValueError("checksum mismatch")
        doc = json.loads(body)
        if not isinstance(doc, dict):
            raise ValueError("record is not an object")
        try:
            return cls(
                nonce=str(doc["nonce"]),
                op_id=str(doc["op_id"]),
                signer=str(doc["signer"]),
                payload_sha256=str(doc["payload_sha256"]),
                issued_at=_parse(doc["issued_at"]),
                expires_at=_parse(doc["expires_at"]),
                accepted_at=_parse(doc["accepted_at"]),
            )
        except (KeyError, TypeError) as err:
            raise ValueError(f"bad record: {err}") from err


def _parse(text: object) -> datetime:
    if not isinstance(text, str):
        raise TypeError("time is not a string")
    return parse_utc(text)


class StoreDamaged(Exception):
    """The store file is damaged beyond a torn tail; the store must fail closed."""


def parse_store(data: bytes) -> tuple[list[NonceRecord], int, bool]:
    """Return (records, end offset of the last good frame, whether the tail was torn)."""
    if not data.startswith(HEADER):
        raise StoreDamaged("unknown or damaged header")
    records: list[NonceRecord] = []
    pos = len(HEADER)
    while pos < len(data):
        end = data.find(b"\n", pos)
        last = end == -1 or end == len(data) - 1
        line = data[pos:] if end == -1 else data[pos:end]
        try:
            if end == -1:
                raise ValueError("incomplete frame")
            records.append(NonceRecord.from_frame(line))
        except (ValueError, UnicodeDecodeError) as err:
            if last:
                return records, pos, True
            raise StoreDamaged(f"damaged record at byte {pos}: {err}") from err
        pos = end + 1
    return records, pos, False


def reset_store(
    path: Path, *, now: datetime, max_clock_skew_s: int, max_op_lifetime_s: int
) -> Path:
    """Move a (broken) store aside so the agent can start with an empty one, if safe.

    Safe once no op it could hold can pass the expiry check: ``now`` is after the newest of
    the file's mtime and its last readable ``accepted_at``, plus ``max_op_lifetime_s`` and two
    clock skews (an op accepted at A has ``issued_at <= A + skew`` and ``expires_at <=
    issued_at + lifetime``; the second skew is margin). Run it with the agent stopped.

    Returns:
        Where the old file now is.

    Raises:
        NonceStoreError: too early (the message says when it becomes safe), or I/O failed.
    """
    try:
        data = path.read_bytes()
        mtime = datetime.fromtimestamp(path.stat().st_mtime, UTC)
    except OSError as err:
        raise NonceStoreError(f"{path}: cannot read ({err.strerror})") from err
    newest = mtime
    for line in data.split(b"\n"):
        with contextlib.suppress(ValueError, UnicodeDecodeError):
            newest = max(newest, NonceRecord.from_frame(line).accepted_at)
    safe_after = newest + timedelta(seconds=max_op_lifetime_s + 2 * max_clock_skew_s)
    if now <= safe_after:
        raise NonceStoreError(
            f"{path}: refusing to reset before {format_utc(safe_after)}: ops it may hold could "
            "still be replayed until then"
        )
    aside = path.with_name(f"{path.name}.reset-{format_utc(now, compact=True)}")
    try:
        os.replace(path, aside)
    except OSError as err:
        raise NonceStoreError(f"{path}: cannot move aside ({err.strerror})") from err
    fsync_dir(path.parent)
    return aside
