"""The HostReport collector: what the agent observed this poll, and what it could not observe.

``docs/architecture.md`` ("Hub protocol") and issue 7: a report is built from several independent
reads -- node facts (``GET /version`` and ``/nodes/{node}/status``), the guests on our node
(``/cluster/resources``), the reconciler's status and op results (the engine), storage
(``/nodes/{node}/storage``), the recent audit log (memory) and the host health monitor's cached
disks, SMART and sensors (memory: a report never waits on smartctl). Each part is read on its
own: a part that fails becomes one entry in ``errors`` (``source`` names the part) and its field
stays ``null``/empty, so one broken endpoint never costs the hub the whole heartbeat.
``backup`` and ``pbs`` are the engine's view of its last pass (:meth:`Engine.backup_view`:
built once per pass, so a report reads nothing for them and costs nothing per guest);
``restore`` is the engine's signed restores, built from the journal
(:meth:`Engine.restore_results`). A report never invents facts.

Storage entries are the ``StorageInfo`` fields plus ``"kind": "storage"``, ``usage_pct`` (used
over total, ``null`` when PVE has no sizes) and ``alert`` (``null``, ``"warn"`` at
``storage.warn_pct``, ``"crit"`` at ``storage.crit_pct``; ``docs/architecture.md``, "Host
storage"). ``disks`` and ``sensors`` are their own members; the monitor's problems (a failing
or missing tool) are ``errors`` entries.

Error messages come from our own typed errors (``PveError`` texts carry no token); anything
else is shortened to its type and first 300 characters.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

from felhom_agent import __version__
from felhom_agent.errors import AgentError
from felhom_agent.execution.backup_tracker import BackupView
from felhom_agent.execution.status import RestoreEntry
from felhom_agent.host.monitor import HealthSnapshot
from felhom_agent.host.thresholds import alert, usage_pct
from felhom_agent.hub.report import (
    GuestEntry,
    HostReport,
    NodeFacts,
    OpResult,
    ReconcileStatus,
    ReportError,
)
from felhom_agent.proxmox.models import Guest, NodeStatus, PveVersion, StorageInfo
from felhom_agent.state.audit import AuditRecord
from felhom_agent.utc import format_utc

__all__ = ["AuditSource", "Collector", "EngineView", "HealthSource", "PveReader"]

T = TypeVar("T")
_MAX_MESSAGE = 300


class PveReader(Protocol):
    """The read side of :class:`~felhom_agent.proxmox.ProxmoxClient` the collector uses."""

    def version(self) -> PveVersion:
        """``GET /version``."""
        ...

    def node_status(self) -> NodeStatus:
        """``GET /nodes/{node}/status``."""
        ...

    def guests(self) -> tuple[Guest, ...]:
        """Guests on our node."""
        ...

    def storages(self, *, content: str | None = None) -> tuple[StorageInfo, ...]:
        """``GET /nodes/{node}/storage``."""
        ...


class EngineView(Protocol):
    """What the collector reads from the reconcile engine."""

    def status(self) -> ReconcileStatus:
        """The last pass's status."""
        ...

    def op_results(self, limit: int = 100) -> list[OpResult]:
        """Recent op outcomes (and running ops), newest last."""
        ...

    def backup_view(self) -> BackupView:
        """The backup state the last pass saw (the report's ``backup`` and ``pbs``)."""
        ...

    def restore_results(self, limit: int = 50) -> list[RestoreEntry]:
        """Signed restores, running first (the report's ``restore``)."""
        ...


class HealthSource(Protocol):
    """The host health monitor's cache (disks, SMART, sensors)."""

    def snapshot(self) -> HealthSnapshot:
        """What it knows now; never waits for a reading."""
        ...


class AuditSource(Protocol):
    """What the collector reads from the audit log (served from memory)."""

    def recent(self, n: int) -> list[AuditRecord]:
        """The newest ``n`` records, oldest first."""
        ...


def _message(err: BaseException) -> str:
    text = str(err) if isinstance(err, AgentError) else f"{type(err).__name__}: {err}"
    return text if len(text) <= _MAX_MESSAGE else text[:_MAX_MESSAGE] + "..."


class Collector:
    """Builds one :class:`HostReport` per call; safe to call from the hub loop's thread.

    Args:
        client: the Proxmox reader (already scoped to our node).
        node: our node's name (``node.name`` in the report, even when the node read fails).
        host_id: the id the hub knows this host by.
        engine: the reconcile engine (status, op results); None before it exists.
        audit: the audit log; None when there is none.
        clock: POSIX seconds for ``collected_at``.
        health: the host health monitor; None means no disks and sensors.
        warn_pct / crit_pct: the storage usage alert thresholds (``storage.*``).
        extra_ops: more op results to report (e.g. signed ops refused before the engine).
        extra_errors: more ``errors`` entries (e.g. a rejected desired state from the hub).
        guestapi: the per-guest API's entries; ``None`` (the API off) reports none.
        ops_limit: most op results to report.
        audit_limit: most audit records to report.
        agent_version: reported as ``agent_version``.
        logger: failures are logged here at debug (the report carries them anyway).
    """

    def __init__(
        self,
        *,
        client: PveReader,
        node: str,
        host_id: str,
        engine: EngineView | None,
        audit: AuditSource | None,
        clock: Callable[[], float] = time.time,
        health: HealthSource | None = None,
        warn_pct: int = 85,
        crit_pct: int = 95,
        extra_ops: Callable[[], Sequence[OpResult]] | None = None,
        extra_errors: Callable[[], Sequence[ReportError]] | None = None,
        guestapi: Callable[[], Sequence[Mapping[str, Any]]] | None = None,
        ops_limit: int = 100,
        audit_limit: int = 50,
        agent_version: str = __version__,
        logger: logging.Logger | None = None,
    ) -> None:
        self._client = client
        self._node = node
        self._host_id = host_id
        self._engine = engine
        self._audit = audit
        self._clock = clock
        self._health = health
        self._warn_pct = warn_pct
        self._crit_pct = crit_pct
        self._extra_ops = extra_ops
        self._extra_errors = extra_errors
        self._guestapi = guestapi
        self._ops_limit = ops_limit
        self._audit_limit = audit_limit
        self._agent_version = agent_version
        self._log = logger if logger is not None else logging.getLogger(__name__)

    def __call__(self) -> HostReport:
        """Same as :meth:`collect` (the hub loop takes a ``collect()`` callable)."""
        return self.collect()

    def collect(self) -> HostReport:
        """Read every part; failures go into ``errors``; never raises for a failed read."""
        errors: list[ReportError] = []
        collected_at = format_utc(self._clock())

        def attempt(source: str, read: Callable[[], T]) -> T | None:
            try:
                return read()
            except Exception as err:  # a failed part is reported, never a missing report
                self._log.debug("collecting %s failed: %s", source, _message(err))
                errors.append(ReportError(source=source, message=_message(err)))
                return None

        node = self._node_facts(attempt)
        guests = attempt("guests", self._guests)
        reconcile = attempt("reconcile", self._reconcile)
        # Read separately: a failing engine must not hide the sink's refusals (or vice versa).
        ops = (attempt("ops.signed", self._sink_ops) or ()) + (
            attempt("ops", self._engine_ops) or ())
        storage = attempt("storage", self._storage)
        backups = attempt("backup", self._backups)
        health = attempt("disks", self._health_snapshot)
        restores = attempt("restore", self._restores)
        audit = attempt("audit", self._audit_records)
        guestapi = attempt("guestapi", self._guestapi_entries) if self._guestapi else ()
        if self._extra_errors is not None:
            errors.extend(attempt("errors", self._extra_errors) or ())
        if backups is not None:
            errors.extend(ReportError(source="backup", message=m) for m in backups.errors)
        if health is not None:
            errors.extend(ReportError(source=p.source, message=p.message)
                          for p in health.problems)
        return HostReport(
            host_id=self._host_id,
            agent_version=self._agent_version,
            collected_at=collected_at,
            node=node,
            guests=guests or (),
            reconcile=reconcile,
            ops=ops[: max(0, self._ops_limit)],
            storage=storage or (),
            disks=() if health is None else tuple(d.to_dict() for d in health.disks),
            sensors=() if health is None else tuple(e.to_dict() for e in health.sensors),
            backup=() if backups is None else tuple(e.to_json() for e in backups.entries),
            restore=tuple(e.to_dict() for e in restores or ()),
            pbs=() if backups is None else backups.pbs,
            audit=audit or (),
            guestapi=guestapi or (),
            errors=tuple(errors),
        )

    def _node_facts(
        self, attempt: Callable[[str, Callable[[], Any]], Any]
    ) -> NodeFacts | None:
        version: PveVersion | None = attempt("node.version", self._client.version)
        status: NodeStatus | None = attempt("node.status", self._client.node_status)
        if version is None and status is None:
            return None
        return NodeFacts(
            name=self._node,
            pve_version=version.version if version is not None and version.version else None,
            uptime_s=None if status is None else status.uptime_s,
            cpu=None if status is None else status.cpu,
            mem_used=None if status is None else status.mem_used,
            mem_total=None if status is None else status.mem_total,
        )

    def _guests(self) -> tuple[GuestEntry, ...]:
        return tuple(
            GuestEntry(
                vmid=g.vmid,
                type=g.type.value,
                name=g.name or None,
                status=g.status,
                lock=g.lock,
                template=g.template,
            )
            for g in self._client.guests()
            if g.node == self._node
        )

    def _reconcile(self) -> ReconcileStatus | None:
        return None if self._engine is None else self._engine.status()

    def _engine_ops(self) -> tuple[OpResult, ...]:
        if self._engine is None or self._ops_limit <= 0:
            return ()
        return tuple(self._engine.op_results(limit=self._ops_limit))

    def _backups(self) -> BackupView | None:
        return None if self._engine is None else self._engine.backup_view()

    def _restores(self) -> tuple[RestoreEntry, ...]:
        return () if self._engine is None else tuple(self._engine.restore_results())

    def _sink_ops(self) -> tuple[OpResult, ...]:
        return () if self._extra_ops is None else tuple(self._extra_ops())

    def _storage(self) -> tuple[Mapping[str, Any], ...]:
        out = []
        for s in self._client.storages():
            pct = usage_pct(s.used, s.total)
            out.append({
                "kind": "storage",
                "storage": s.storage,
                "type": s.type,
                "content": list(s.content),
                "active": s.active,
                "enabled": s.enabled,
                "shared": s.shared,
                "total": s.total,
                "used": s.used,
                "avail": s.avail,
                "usage_pct": pct,
                "alert": alert(pct, warn_pct=self._warn_pct, crit_pct=self._crit_pct),
            })
        return tuple(out)

    def _health_snapshot(self) -> HealthSnapshot | None:
        return None if self._health is None else self._health.snapshot()

    def _guestapi_entries(self) -> tuple[Mapping[str, Any], ...]:
        return () if self._guestapi is None else tuple(self._guestapi())

    def _audit_records(self) -> tuple[Mapping[str, Any], ...]:
        if self._audit is None or self._audit_limit <= 0:
            return ()
        return tuple(r.to_dict() for r in self._audit.recent(self._audit_limit))
