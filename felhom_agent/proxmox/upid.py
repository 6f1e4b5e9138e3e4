"""Strict parsing of PVE task ids (UPIDs).

A UPID is what every forked PVE worker returns (``docs/pve-facts.md``, "UPID format")::

    UPID:<node>:<pid %08X>:<pstart %08X, may grow to 9>:<starttime %08X>:<type>:<id>:<user>:

It always ends with a colon (nine ``:``-separated fields, the last empty). ``id`` may be empty
(a multi-guest vzdump); ``user`` is the full authenticated id, for API tokens
``user@realm!tokenname``. The task's status must be read on the node *named in the UPID*,
which is why parsing is strict: an unparseable UPID is an error, never a string to poll blindly.
"""

from __future__ import annotations

import re

import attrs

from felhom_agent.proxmox.errors import UpidError

__all__ = ["Upid", "parse_upid"]

_UPID_RE = re.compile(
    r"UPID:(?P<node>[a-zA-Z0-9](?:[a-zA-Z0-9\-]*[a-zA-Z0-9])?)"
    r":(?P<pid>[0-9A-Fa-f]{8}):(?P<pstart>[0-9A-Fa-f]{8,9}):(?P<starttime>[0-9A-Fa-f]{8})"
    r":(?P<type>[^:\s/]+):(?P<id>[^:\s/]*):(?P<user>[^:\s/]+):"
)


@attrs.frozen
class Upid:
    """One parsed UPID; ``str(upid)`` is the exact original string (used in URLs).

    Attributes:
        raw: the UPID as PVE returned it.
        node: the node running the worker (poll its status there).
        pid: the worker's process id.
        pstart: the worker's start in clock ticks since boot (not an epoch).
        starttime: the task's start, epoch seconds.
        type: the worker type (``qmstart``, ``vzsnapshot``, ...).
        id: usually the vmid; may be empty.
        user: the authenticated id, including ``!tokenname`` for API tokens.
    """

    raw: str
    node: str
    pid: int
    pstart: int
    starttime: int
    type: str
    id: str
    user: str

    @property
    def vmid(self) -> int | None:
        """The guest id when ``id`` is a decimal vmid, else ``None``."""
        return int(self.id) if self.id.isdigit() else None

    @property
    def userid(self) -> str:
        """The user part of ``user`` (``agent@pve`` of ``agent@pve!host``)."""
        return self.user.split("!", 1)[0]

    @property
    def tokenid(self) -> str | None:
        """The token name of ``user`` (``host`` of ``agent@pve!host``), ``None`` for a user."""
        _, sep, token = self.user.partition("!")
        return token if sep else None

    def __str__(self) -> str:
        return self.raw


def parse_upid(value: object) -> Upid:
    """Parse ``value`` as a UPID, strictly.

    Raises:
        UpidError: ``value`` is not a string in exact UPID form (wrong field count or hex
            widths, missing trailing colon, whitespace or ``/`` in a field).
    """
    if not isinstance(value, str):
        raise UpidError(f"expected a UPID string, got {type(value).__name__}")
    match = _UPID_RE.fullmatch(value)
    if match is None:
        shown = value if len(value) <= 200 else value[:200] + "..."
        raise UpidError(f"malformed UPID: {shown!r}")
    return Upid(
        raw=value,
        node=match["node"],
        pid=int(match["pid"], 16),
        pstart=int(match["pstart"], 16),
        starttime=int(match["starttime"], 16),
        type=match["type"],
        id=match["id"],
        user=match["user"],
    )
