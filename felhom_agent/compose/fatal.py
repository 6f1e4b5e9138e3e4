"""The one fatal-error callback: a durability failure anywhere stops the daemon (exit 1).

A failed ``fsync`` is never retried: the agent logs it and exits non-zero, systemd restarts
it, and recovery runs from what is durable (``docs/architecture.md``, "Durable state"). The
journal, the audit log and the signed-op consumer raise
:class:`~felhom_agent.durable.DurabilityError` on the thread that wrote -- usually a queue
worker deep inside the engine, where the daemon cannot see it. The composition root hands each
of them :meth:`FatalSignal.raise_` as their ``on_fatal`` callback; the daemon subscribes to the
signal and treats it like SIGTERM with exit status 1.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

__all__ = ["FatalSignal"]


class FatalSignal:
    """The first fatal error of the process, and callbacks to run when it is raised.

    Thread-safe; later errors are ignored (the first one is the cause).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._error: BaseException | None = None
        self._listeners: list[Callable[[BaseException], None]] = []

    @property
    def error(self) -> BaseException | None:
        """The first fatal error, or None."""
        with self._lock:
            return self._error

    def subscribe(self, listener: Callable[[BaseException], None]) -> None:
        """Call ``listener(error)`` when the first fatal error is raised."""
        with self._lock:
            self._listeners.append(listener)

    def raise_(self, error: BaseException) -> None:
        """Record ``error`` (if it is the first) and notify the listeners."""
        with self._lock:
            if self._error is not None:
                return
            self._error = error
            listeners = list(self._listeners)
        for listener in listeners:
            listener(error)
