"""The per-guest API as the daemon runs it: the loop and the supervisor, started and stopped
together, and the report's ``guestapi`` entries.

``docs/architecture.md`` ("The per-guest local API"). Built by the composition root
(``compose/root.py`` ``guest_api``) only when ``guestapi.enabled``; the daemon starts it after
the engine and stops it before the queue drains, so no guest request is submitted to a queue
that is shutting down.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from felhom_agent.guestapi.server import GuestApiServer
from felhom_agent.guestapi.supervisor import GuestApiSupervisor

__all__ = ["GuestApiService"]


class GuestApiService:
    """The running per-guest API.

    Args:
        server: the event loop.
        supervisor: keeps the listeners.
        unsubscribe: ends the supervisor's desired-state subscription at stop.
    """

    def __init__(self, server: GuestApiServer, supervisor: GuestApiSupervisor,
                 unsubscribe: Callable[[], None] | None = None) -> None:
        self.server = server
        self.supervisor = supervisor
        self._unsubscribe = unsubscribe

    def start(self) -> None:
        """Start the loop, then the supervisor (which places the first sockets)."""
        self.server.start()
        self.supervisor.start()

    def stop(self) -> None:
        """Stop the supervisor, then the loop (every listener and connection is closed)."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        self.supervisor.stop()
        self.server.stop()

    def report(self) -> tuple[dict[str, Any], ...]:
        """The report's ``guestapi`` entries, one per enabled guest."""
        return tuple(e.to_json() for e in self.server.entries())
