"""Errors of the per-guest local API.

``docs/architecture.md`` ("The per-guest local API"). :class:`GuestApiError` is the mid level
under :class:`~felhom_agent.errors.AgentError`; :class:`WireError` is a request refused by
the HTTP or frame layer before any handler ran, carrying the status the guest is answered
with and whether the connection must be closed afterwards.
"""

from __future__ import annotations

from felhom_agent.errors import AgentError

__all__ = ["GuestApiError", "PlacementError", "WireError"]


class GuestApiError(AgentError):
    """Root of the per-guest API's errors."""


class WireError(GuestApiError, ValueError):
    """A request the wire layer refuses (malformed, too large, a forbidden header...).

    Args:
        status: the HTTP status to answer with (400, 403, 408, 413, 431, 501...).
        reason: the operator- and guest-readable reason (never echoes guest bytes raw).
        close: the connection is closed after the answer (the stream cannot be trusted to
            be in sync any more).
    """

    def __init__(self, status: int, reason: str, *, close: bool = True) -> None:
        super().__init__(f"{status}: {reason}")
        self.status = status
        self.reason = reason
        self.close = close


class PlacementError(GuestApiError):
    """A container's socket could not be placed (the container, its cgroup, the helper)."""
