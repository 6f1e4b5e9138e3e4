"""Task ids in PVE's exact wire format (``UPID:node:PID:PSTART:STARTTIME:TYPE:ID:USER:``).

The simulator both mints UPIDs and parses the ones clients send back. Encoding follows
``PVE::UPID::encode``: pid, pstart and starttime are upper-case hex zero-padded to 8 digits
(pstart may grow to 9), the string always ends with ``:``. Parsing uses PVE's decode regex, so
a UPID this module rejects is one PVE answers ``unable to parse worker upid`` for.
"""

from __future__ import annotations

import re

import attrs

__all__ = ["Upid", "parse_upid"]

_UPID_RE = re.compile(
    r"^UPID:([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?):([0-9A-Fa-f]{8}):([0-9A-Fa-f]{8,9}):"
    r"([0-9A-Fa-f]{8}):([^:\s/]+):([^:\s/]*):([^:\s/]+):$"
)


@attrs.frozen
class Upid:
    """The decoded fields of a UPID; ``str()`` gives the canonical encoding."""

    node: str
    pid: int
    pstart: int
    starttime: int
    type: str
    id: str
    user: str

    def __str__(self) -> str:
        return (
            f"UPID:{self.node}:{self.pid:08X}:{self.pstart:08X}:{self.starttime:08X}:"
            f"{self.type}:{self.id}:{self.user}:"
        )


def parse_upid(text: str) -> Upid | None:
    """Decode ``text`` with PVE's regex; ``None`` when it is not a well-formed UPID."""
    m = _UPID_RE.match(text)
    if m is None:
        return None
    return Upid(
        node=m.group(1),
        pid=int(m.group(3), 16),
        pstart=int(m.group(4), 16),
        starttime=int(m.group(5), 16),
        type=m.group(6),
        id=m.group(7),
        user=m.group(8),
    )
