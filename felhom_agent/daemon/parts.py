"""Building the daemon's parts from a :class:`Config` (pure wiring, nothing started).

Order matters for what a failure means:

1. the state directory (``0700``), then the journal and the audit log under it -- a
   :class:`~felhom_agent.durable.DurabilityError` or a locked journal here is fatal (exit 1);
2. the Proxmox client and, when ``hub.url`` is set, the hub client -- connection settings
   were validated with the config, so these only fail on a programming error;
3. the serializer queue (``reconcile.workers``), the desired-state provider (``HubProvider``
   with a hub, else ``FileProvider(reconcile.desired_file)``, else ``EmptyProvider``) and
   the engine (which subscribes to the provider's change signal itself when started).

:meth:`DaemonParts.close` releases everything that holds a descriptor or socket.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

import attrs

from felhom_agent.config import Config
from felhom_agent.daemon.durability import FatalSignal, WatchedAuditLog, WatchedJournal
from felhom_agent.daemon.engine_seam import EngineFactory, EngineLike
from felhom_agent.execution.queue import SerializerQueue
from felhom_agent.hub.client import HubClient
from felhom_agent.planning.providers import (
    DesiredStateProvider,
    EmptyProvider,
    FileProvider,
    HubProvider,
)
from felhom_agent.proxmox import ProxmoxClient
from felhom_agent.state.audit import AuditLog
from felhom_agent.state.journal import Journal
from felhom_agent.state.recovery import is_plan_source

__all__ = ["DEFAULT_HUB_TIMEOUT_S", "DaemonParts", "build_parts", "ensure_state_dir"]

#: The hub client's read timeout: a hub slower than this counts as down (and is retried).
DEFAULT_HUB_TIMEOUT_S = 30.0


@attrs.define
class DaemonParts:
    """Everything the daemon runs, built but not started."""

    client: ProxmoxClient
    hub_client: HubClient | None
    queue: SerializerQueue
    journal: Journal
    audit: AuditLog
    provider: DesiredStateProvider
    engine: EngineLike

    def close(self) -> None:
        """Close clients, journal and audit log (the queue is shut down by the caller)."""
        self.client.close()
        if self.hub_client is not None:
            self.hub_client.close()
        self.journal.close()
        self.audit.close()


def ensure_state_dir(path: Path, logger: logging.Logger) -> None:
    """Create ``path`` with mode 0700; warn when an existing one is open to group/other."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    mode = os.stat(path).st_mode & 0o777
    if mode & 0o077:
        logger.warning(
            "state_dir %s has mode %o: group/other can read the journal; chmod 700 it",
            path, mode,
        )


def _provider(config: Config, logger: logging.Logger) -> DesiredStateProvider:
    if config.hub.url is not None:
        return HubProvider(logger=logger)
    if config.reconcile.desired_file is not None:
        return FileProvider(config.reconcile.desired_file, logger=logger)
    return EmptyProvider()


def build_parts(
    config: Config,
    *,
    stop_event: threading.Event,
    fatal: FatalSignal,
    engine_factory: EngineFactory,
    clock: Callable[[], float],
    logger: logging.Logger,
    hub_timeout_s: float = DEFAULT_HUB_TIMEOUT_S,
) -> DaemonParts:
    """Build every part; on failure, whatever was already opened is closed again.

    ``hub_timeout_s`` is the hub client's read timeout (there is no config key for it).

    Raises:
        DurabilityError: the journal or audit log cannot be opened durably.
        JournalLocked: another agent process holds the journal.
        AgentError: any other construction failure (typed, never a library exception).
    """
    ensure_state_dir(config.state_dir, logger)
    opened: list[Callable[[], None]] = []
    try:
        # Reconciler (plan:<n>) outcomes are forgotten first: their op ids never come again.
        journal = WatchedJournal.open(config.state_dir, clock=clock, logger=logger,
                                      evict_first=is_plan_source)
        opened.append(journal.close)
        audit = WatchedAuditLog.open(config.state_dir, clock=clock, logger=logger)
        opened.append(audit.close)
        if not isinstance(journal, WatchedJournal) or not isinstance(audit, WatchedAuditLog):
            raise TypeError("Journal.open/AuditLog.open must build instances of their class")
        journal.fatal = fatal
        audit.fatal = fatal
        px = config.proxmox
        client = ProxmoxClient(
            api_url=px.api_url, node=px.node, token_id=px.token_id,
            token_secret=px.token_secret, tls_fingerprint=px.tls_fingerprint,
            ca_file=px.ca_file, timeout_s=px.timeout_s, max_connections=px.max_connections,
            task_timeout_s=px.task_timeout_s,
        )
        opened.append(client.close)
        hub_client: HubClient | None = None
        if config.hub.url is not None and config.hub.token is not None:
            hub_client = HubClient(
                url=config.hub.url, host_id=config.host_id, token=config.hub.token,
                tls_fingerprint=config.hub.tls_fingerprint, ca_file=config.hub.ca_file,
                timeout_s=hub_timeout_s,
            )
            opened.append(hub_client.close)
        queue = SerializerQueue(workers=config.reconcile.workers, logger=logger)
        provider = _provider(config, logger)
        engine = engine_factory(
            client=client, node=px.node, provider=provider, queue=queue, journal=journal,
            audit=audit, interval_s=config.reconcile.interval_s,
            task_timeout_s=px.task_timeout_s, stop_event=stop_event, clock=clock,
            logger=logger.getChild("engine"),
        )
    except BaseException:
        for close in reversed(opened):
            close()
        raise
    return DaemonParts(client=client, hub_client=hub_client, queue=queue, journal=journal,
                       audit=audit, provider=provider, engine=engine)
