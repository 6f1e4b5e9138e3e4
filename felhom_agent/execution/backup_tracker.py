"""The engine's backup bookkeeping: the facts of each pass and the view the report shows.

Each reconcile pass reads the backup facts (:func:`~felhom_agent.planning.backup_read.
read_backup_facts`), hands them to the planner, and then keeps what the hub report's ``backup``
and ``pbs`` entries show (:class:`BackupView`), so a report never reads PVE for them and costs
nothing per guest. It also remembers since when a guest has looked stale-locked (locked
``backup`` while no vzdump runs), which is reported only after ``backup.stale_lock_s``
(``docs/architecture.md``, "Backup policy").

The facts are read on every pass while any desired guest has a backup policy; without one,
at most every :data:`UNMANAGED_EVERY_S` (so backups made by PVE's own jobs still show in the
report without costing every pass five reads).
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterable, Mapping

import attrs

from felhom_agent.core.desired import DesiredState
from felhom_agent.planning.backup_read import BackupReader, read_backup_facts
from felhom_agent.planning.backup_status import (
    GuestBackupReport,
    backup_entries,
    pbs_entries,
    stale_locks,
)
from felhom_agent.planning.backups import BackupFacts
from felhom_agent.planning.plan import GuestActual, Plan
from felhom_agent.proxmox.errors import PveError

__all__ = ["UNMANAGED_EVERY_S", "BackupSettings", "BackupTracker", "BackupView"]

#: How often backup facts are read when no desired guest has a policy.
UNMANAGED_EVERY_S = 300.0


@attrs.frozen
class BackupSettings:
    """The ``backup.*`` values the engine applies, and the node's time zone."""

    tz: dt.tzinfo = dt.UTC
    min_keep: int = 3
    margin_pct: int = 20
    stale_lock_s: float = 60.0


@attrs.frozen
class BackupView:
    """What the last pass knew about backups (the report's ``backup`` and ``pbs``)."""

    entries: tuple[GuestBackupReport, ...] = ()
    pbs: tuple[Mapping[str, object], ...] = ()
    errors: tuple[str, ...] = ()


class BackupTracker:
    """Per-pass backup facts in, the report's view out; thread-safe."""

    def __init__(self, settings: BackupSettings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._view = BackupView()
        self._stale_since: dict[int, float] = {}
        self._last_read: float | None = None

    def read(self, client: BackupReader, now: float, desired: DesiredState | None
             ) -> tuple[BackupFacts | None, str | None]:
        """This pass's facts; ``None`` and why when the storage listing failed, or ``None``
        and no reason when they are not due this pass (see the module docstring)."""
        s = self.settings
        managed = desired is not None and any(
            g.backup is not None for g in desired.guests.values())
        with self._lock:
            last = self._last_read
            if not managed:
                if last is None:
                    # Unmanaged: the first read waits a full period (a pass stays 1 read).
                    self._last_read = now
                    return None, None
                if now - last < UNMANAGED_EVERY_S:
                    return None, None
            self._last_read = now
        try:
            return read_backup_facts(client, now=now, tz=s.tz, min_keep=s.min_keep,
                                     margin_pct=s.margin_pct), None
        except PveError as err:
            return None, f"backup facts not read: {err}"

    def update(self, result: Plan, guests: Iterable[GuestActual], desired: DesiredState | None,
               facts: BackupFacts | None, error: str | None) -> None:
        """Keep the view of this pass (the previous entries stay when the facts failed)."""
        guests = tuple(guests)
        if facts is None:
            if error is not None:
                with self._lock:
                    self._view = attrs.evolve(self._view, errors=(error,))
            return
        stale = stale_locks(guests, facts.tasks)
        with self._lock:
            for vmid in list(self._stale_since):
                if vmid not in stale:
                    del self._stale_since[vmid]
            for vmid in stale:
                self._stale_since.setdefault(vmid, facts.now)
            stale_for = {v: facts.now - t for v, t in self._stale_since.items()}
        entries = backup_entries(result.backups, guests, desired, facts, stale_for=stale_for,
                                 stale_lock_s=self.settings.stale_lock_s)
        errors = tuple(f"backup: {where}: {why}" for where, why in sorted(facts.errors.items()))
        errors += tuple(f"backup: {e.reason}" for e in entries if e.status == "stale_lock")
        with self._lock:
            self._view = BackupView(entries=entries, pbs=pbs_entries(facts), errors=errors)

    def view(self) -> BackupView:
        """The last pass's view."""
        with self._lock:
            return self._view
