"""What the daemon needs from the reconcile engine, as a protocol, and how it builds one.

The engine (:mod:`felhom_agent.execution.engine`) owns the reconciler thread and submits plan
actions to the queue; the daemon only wires it: ``recover()`` once at start (re-attach journal
entries, ``docs/architecture.md`` ("Durable state")), ``start()``, ``wake()`` when new desired state
arrives, ``status()``, ``op_results()`` and ``restore_results()`` for the report, ``join()``
at shutdown. Keeping the daemon typed against this protocol lets tests drive the wiring with
a small fake; :func:`default_engine_factory` builds the real one (and mypy checks that it
satisfies the protocol).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Protocol

from felhom_agent.core.provision import ProvisionLimits
from felhom_agent.execution.backup_tracker import BackupSettings, BackupView
from felhom_agent.execution.engine import Engine
from felhom_agent.execution.executor import ExecResult, Executor, HostJob, JobSpec
from felhom_agent.execution.job import JobHandle
from felhom_agent.execution.queue import SerializerQueue
from felhom_agent.execution.status import OpResult, ReconcileStatus, RestoreEntry
from felhom_agent.planning.providers import DesiredStateProvider
from felhom_agent.proxmox import ProxmoxClient
from felhom_agent.proxmox.taskwatch import TaskWatcher
from felhom_agent.state.audit import AuditLog
from felhom_agent.state.journal import Journal

__all__ = ["EngineFactory", "EngineLike", "default_engine_factory"]


class EngineLike(Protocol):
    """The engine's interface as the daemon uses it."""

    @property
    def fatal(self) -> BaseException | None:
        """The durability failure that stopped the engine, if any."""
        ...

    def recover(self) -> object:
        """Re-attach or resolve every pending journal entry (reads PVE; may raise)."""
        ...

    def start(self) -> None:
        """Start the reconciler thread."""
        ...

    def wake(self) -> None:
        """Run a pass soon (new desired state)."""
        ...

    def status(self) -> ReconcileStatus:
        """The last pass, for the report."""
        ...

    def op_results(self, limit: int = 100) -> list[OpResult]:
        """Recent op outcomes, for the report."""
        ...

    def join(self, timeout: float) -> bool:
        """Wait for the reconciler thread to end (after ``stop_event``); True if it did."""
        ...

    def backup_view(self) -> BackupView:
        """The backup state the last pass saw, for the report."""
        ...

    def restore_results(self, limit: int = 50) -> list[RestoreEntry]:
        """Signed restores (from the journal), for the report."""
        ...

    def submit_op(self, job: JobSpec) -> JobHandle[ExecResult]:
        """Queue one job (a signed op's step) through the journal and the executor."""
        ...

    def submit_host(self, job: HostJob) -> JobHandle[ExecResult]:
        """Queue one host job (a ``host.*`` signed op) on the host lane."""
        ...


class EngineFactory(Protocol):
    """Builds the engine from the daemon's parts (keyword arguments as the engine takes them)."""

    def __call__(
        self,
        *,
        client: ProxmoxClient,
        node: str,
        provider: DesiredStateProvider,
        queue: SerializerQueue,
        journal: Journal,
        audit: AuditLog,
        executor: Executor,
        watcher: TaskWatcher,
        interval_s: float,
        backups: BackupSettings,
        provision: ProvisionLimits,
        stop_event: threading.Event,
        clock: Callable[[], float],
        logger: logging.Logger | None,
    ) -> EngineLike:
        """Return a ready-to-recover engine."""
        ...


#: The real :class:`~felhom_agent.execution.engine.Engine` class is itself the factory: it takes
#: exactly the daemon's parts as keyword arguments.
default_engine_factory: EngineFactory = Engine
