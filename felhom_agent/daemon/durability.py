"""Noticing a durability failure wherever it happens, so the daemon can exit non-zero.

Reference design §7: "a failed fsync is not retried: the agent logs it and exits non-zero
(systemd restarts it, and recovery runs from what is durable)". The journal and the audit log
raise :class:`~felhom_agent.durable.DurabilityError` on the thread that appended -- usually a
queue worker deep inside the engine, where the daemon cannot see it. These subclasses report
the first such error to a :class:`FatalSignal` before re-raising, and the daemon's main loop
treats a raised signal like SIGTERM with exit status 1.

They are real :class:`Journal`/:class:`AuditLog` instances (built through the parents'
``open`` classmethods), so the engine needs no knowledge of this.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from felhom_agent.durable import DurabilityError
from felhom_agent.state.audit import AuditLog, AuditRecord
from felhom_agent.state.journal import CompactionResult, Journal, JournalEntry, OpState, Outcome

__all__ = ["FatalSignal", "WatchedAuditLog", "WatchedJournal"]

T = TypeVar("T")


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


def _watched(fatal: FatalSignal | None, call: Callable[[], T]) -> T:
    try:
        return call()
    except DurabilityError as err:
        if fatal is not None:
            fatal.raise_(err)
        raise


class WatchedJournal(Journal):
    """A :class:`Journal` that reports a :class:`DurabilityError` to ``fatal`` (set after open)."""

    fatal: FatalSignal | None = None

    def begin(
        self, op_id: str, vmid: int, kind: str, params: Mapping[str, Any], source: str
    ) -> JournalEntry:
        """As :meth:`Journal.begin`."""
        return _watched(self.fatal, lambda: super(WatchedJournal, self).begin(
            op_id, vmid, kind, params, source))

    def record_upid(self, op_id: str, upid: str) -> JournalEntry:
        """As :meth:`Journal.record_upid`."""
        return _watched(self.fatal, lambda: super(WatchedJournal, self).record_upid(op_id, upid))

    def record_outcome(
        self, op_id: str, state: OpState | str, reason: str, exitstatus: str | None = None
    ) -> Outcome:
        """As :meth:`Journal.record_outcome`."""
        return _watched(self.fatal, lambda: super(WatchedJournal, self).record_outcome(
            op_id, state, reason, exitstatus))

    def record_refused(
        self, op_id: str, *, vmid: int, kind: str, source: str, reason: str
    ) -> Outcome:
        """As :meth:`Journal.record_refused`."""
        return _watched(self.fatal, lambda: super(WatchedJournal, self).record_refused(
            op_id, vmid=vmid, kind=kind, source=source, reason=reason))

    def compact(self, max_age_s: float) -> CompactionResult:
        """As :meth:`Journal.compact`."""
        return _watched(self.fatal, lambda: super(WatchedJournal, self).compact(max_age_s))


class WatchedAuditLog(AuditLog):
    """An :class:`AuditLog` that reports a :class:`DurabilityError` to ``fatal``."""

    fatal: FatalSignal | None = None

    def append(
        self,
        *,
        op_id: str,
        source: str,
        kind: str,
        vmid: int,
        upid: str | None,
        outcome: str,
        reason: str = "",
    ) -> AuditRecord:
        """As :meth:`AuditLog.append`."""
        return _watched(self.fatal, lambda: super(WatchedAuditLog, self).append(
            op_id=op_id, source=source, kind=kind, vmid=vmid, upid=upid, outcome=outcome,
            reason=reason))
