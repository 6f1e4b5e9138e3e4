"""The composition root: every long-lived part of the agent is built here, and only here.

The daemon, ``--selftest=task``, ``--verify-op``, the read-only CLI modes and the demo all
build what they need through these functions, so each runs the same wiring: one Proxmox
client per process, the journal with its eviction rule and the fatal-error callback, the
audit log, the task watcher that every executor waits through, the serializer queue, the
executor, the verify policy whose allow-list is the kind registry's, the nonce store and,
when configured, the privileged runner. Domain packages never see the
:class:`~felhom_agent.config.Config`; they get plain values from here.

Order matters for what a failure means (:func:`build_parts`):

1. the state directory (``0700``), then the journal and the audit log under it -- a
   :class:`~felhom_agent.durable.DurabilityError` or a locked journal here is fatal (exit 1);
2. the Proxmox client and, when ``hub.url`` is set, the hub client -- connection settings
   were validated with the config, so these only fail on a programming error;
3. the fenced root CLI (``proxmox.privileged``) and the host health monitor (not started), the
   task watcher, the executor (with the host tools the ``host.*`` kinds act with), the
   serializer queue (``reconcile.workers``), the desired-state provider (``HubProvider`` with a
   hub, else ``FileProvider(reconcile.desired_file)``, else ``EmptyProvider``) and the engine.

See ``docs/architecture.md`` ("Composition").
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs

from felhom_agent.authz.errors import AllowedSignersError
from felhom_agent.authz.nonces import FileNonceStore
from felhom_agent.authz.signers import AllowedSigners, load_allowed_signers
from felhom_agent.authz.verifier import VerifyPolicy
from felhom_agent.compose.engine_seam import EngineFactory, EngineLike
from felhom_agent.config import Config, PrivilegedConfig
from felhom_agent.core.provision import ProvisionLimits, SourceRule
from felhom_agent.execution.backup_tracker import BackupSettings
from felhom_agent.execution.executor import Executor
from felhom_agent.execution.queue import SerializerQueue
from felhom_agent.guestapi.api import Api
from felhom_agent.guestapi.backend import AgentBackend, Directory
from felhom_agent.guestapi.policy import Limits
from felhom_agent.guestapi.server import GuestApiServer
from felhom_agent.guestapi.service import GuestApiService
from felhom_agent.guestapi.supervisor import DEFAULT_INTERVAL_S, GuestApiSupervisor
from felhom_agent.host.monitor import HealthMonitor
from felhom_agent.hub.client import HubClient
from felhom_agent.hub.collect import AuditSource, Collector, EngineView, HealthSource
from felhom_agent.hub.report import OpResult, ReportError
from felhom_agent.kinds.model import HostTools, Settings
from felhom_agent.kinds.provision_handlers import CLONE_GROUP_PREFIX
from felhom_agent.kinds.registry import HOST_KINDS, SIGNED_KINDS
from felhom_agent.planning.providers import (
    DesiredStateProvider,
    EmptyProvider,
    FileProvider,
    HubProvider,
)
from felhom_agent.privileged import (
    DisabledRunner,
    LocalRunner,
    PrivilegedDisabled,
    Runner,
    SshRunner,
)
from felhom_agent.privileged.facade import Privileged
from felhom_agent.privileged.guestsock import GuestSocketPlacer, LocalFdRunner
from felhom_agent.proxmox import ProxmoxClient
from felhom_agent.proxmox.taskwatch import TaskWatcher
from felhom_agent.signedops.consumer import OpSubmitter, SignedOpConsumer
from felhom_agent.state.audit import AuditLog
from felhom_agent.state.journal import Journal
from felhom_agent.state.recovery import is_plan_source

__all__ = [
    "DEFAULT_HUB_TIMEOUT_S",
    "NONCE_STORE_NAME",
    "Parts",
    "backup_settings",
    "build_executor",
    "build_parts",
    "ensure_state_dir",
    "guest_api",
    "guest_api_limits",
    "guest_socket_placer",
    "health_monitor",
    "hub_client",
    "kind_settings",
    "open_audit",
    "open_journal",
    "privileged",
    "provision_limits",
    "proxmox_client",
    "report_collector",
    "signed_op_sink",
    "verify_policy",
]

#: The hub client's read timeout: a hub slower than this counts as down (and is retried).
DEFAULT_HUB_TIMEOUT_S = 30.0
#: The nonce store's file under ``state_dir``.
NONCE_STORE_NAME = "nonces.log"

OnFatal = Callable[[BaseException], None]


@attrs.define
class Parts:
    """Everything the daemon runs, built but not started."""

    client: ProxmoxClient
    hub_client: HubClient | None
    watcher: TaskWatcher
    executor: Executor
    queue: SerializerQueue
    journal: Journal
    audit: AuditLog
    provider: DesiredStateProvider
    engine: EngineLike
    fenced: Privileged
    health: HealthMonitor

    def close(self) -> None:
        """Close clients, journal and audit log (the queue is shut down by the caller)."""
        self.health.stop()
        self.watcher.stop()
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


def proxmox_client(config: Config) -> ProxmoxClient:
    """The one Proxmox API client of this process, configured per ``proxmox.*``."""
    px = config.proxmox
    return ProxmoxClient(
        api_url=px.api_url, node=px.node, token_id=px.token_id,
        token_secret=px.token_secret, tls_fingerprint=px.tls_fingerprint,
        ca_file=px.ca_file, timeout_s=px.timeout_s, max_connections=px.max_connections,
        task_timeout_s=px.task_timeout_s,
    )


def hub_client(config: Config, *, timeout_s: float = DEFAULT_HUB_TIMEOUT_S) -> HubClient | None:
    """The hub client of ``hub.*``, or ``None`` when no hub (URL and token) is configured."""
    hub = config.hub
    if hub.url is None or hub.token is None:
        return None
    return HubClient(url=hub.url, host_id=config.host_id, token=hub.token,
                     tls_fingerprint=hub.tls_fingerprint, ca_file=hub.ca_file,
                     timeout_s=timeout_s)


def open_journal(config: Config, *, clock: Callable[[], float], logger: logging.Logger,
                 on_fatal: OnFatal | None = None) -> Journal:
    """The op journal under ``state_dir``, with the daemon's eviction rule.

    Reconciler (``plan:<n>``) outcomes are forgotten first: their op ids never come again,
    while a signed op's outcome must outlive the hub's re-deliveries.

    Raises:
        JournalLocked: another process holds it.
        DurabilityError: it cannot be opened durably.
    """
    return Journal.open(config.state_dir, clock=clock, logger=logger,
                        evict_first=is_plan_source, on_fatal=on_fatal)


def open_audit(config: Config, *, clock: Callable[[], float], logger: logging.Logger,
               on_fatal: OnFatal | None = None) -> AuditLog:
    """The audit log under ``state_dir``."""
    return AuditLog.open(config.state_dir, clock=clock, logger=logger, on_fatal=on_fatal)


def build_executor(*, client: ProxmoxClient, journal: Journal, audit: AuditLog,
                   task_timeout_s: float, stop_event: threading.Event,
                   clock: Callable[[], float], logger: logging.Logger,
                   lookup_grace_s: float = 40.0,
                   settings: Settings | None = None,
                   host: HostTools | None = None) -> tuple[TaskWatcher, Executor]:
    """The task watcher (not started) and the executor that waits through it.

    Every executor of the process waits through a :class:`TaskWatcher`: one task-list read
    per tick for all in-flight tasks (``docs/architecture.md``, "Waiting for tasks"). ``host``
    is what the host kinds act with (without it they are refused), and its fenced root CLI
    the one a guest kind's fenced step runs through (``guest.create_golden``).
    """
    watcher = TaskWatcher(client, logger=logger)
    executor = Executor(client=client, journal=journal, audit=audit,
                        task_timeout_s=task_timeout_s, waiter=watcher, cancel=stop_event,
                        lookup_grace_s=lookup_grace_s, clock=clock, settings=settings,
                        host=host, logger=logger)
    return watcher, executor


def kind_settings(config: Config) -> Settings:
    """The local limits the kinds' checks apply (``backup.min_keep``, the margin, where a
    restore's safety backup goes, the provisioning vmid range and default pool)."""
    pv = config.provision
    return Settings(min_keep=config.backup.min_keep,
                    space_margin_pct=config.backup.space_margin_pct,
                    safety_storage=config.backup.safety_storage,
                    vmid_min=pv.vmid_min, vmid_max=pv.vmid_max, pool=pv.pool)


def provision_limits(config: Config) -> ProvisionLimits:
    """The planner's ``provision.*`` limits."""
    pv = config.provision
    return ProvisionLimits(
        vmid_min=pv.vmid_min, vmid_max=pv.vmid_max, max_guests=pv.max_guests,
        allowed=tuple(SourceRule(template=a.template, archive=a.archive)
                      for a in pv.allowed_sources),
        pool=pv.pool)


#: The queue's limit on the clones of one container template (PVE locks it for the clone).
CLONE_SOURCE_LIMITS = {CLONE_GROUP_PREFIX + "*": 1}


def backup_settings(config: Config, tz: dt.tzinfo | None = None) -> BackupSettings:
    """The engine's ``backup.*`` values and the node's time zone.

    The agent runs on the node, so the node's local time is this process's (``TZ`` or
    ``/etc/localtime``); backup windows and prune buckets are node local time.
    """
    b = config.backup
    zone = tz if tz is not None else dt.datetime.now().astimezone().tzinfo or dt.UTC
    return BackupSettings(tz=zone, min_keep=b.min_keep, margin_pct=b.space_margin_pct,
                          stale_lock_s=float(b.stale_lock_s))


def verify_policy(config: Config) -> VerifyPolicy:
    """The verifier policy: host id, the ``authz`` limits and the registry's allow-list."""
    authz = config.authz
    return VerifyPolicy(host_id=config.host_id, namespace=authz.namespace,
                        max_clock_skew_s=authz.max_clock_skew_s,
                        max_op_lifetime_s=authz.max_op_lifetime_s, kinds=SIGNED_KINDS,
                        host_kinds=HOST_KINDS)


def privileged(pc: PrivilegedConfig, *, path: str | None = None) -> Privileged:
    """The fenced root CLI of ``proxmox.privileged``: local, SSH, or off (refuses everything).

    Whoever needs a fenced operation gets this from the root (``config.proxmox.privileged``);
    nothing else builds a runner. A local runner finds the tools on the daemon's own ``PATH``
    (``path``, default this process's); the USB disk operations use ``fstab_path`` and
    ``mount_root``.

    Raises:
        PrivilegedDisabled: mode ``ssh`` without host, key file or known_hosts (the config
            validation already requires them; this guards direct callers).
    """
    runner: Runner
    if pc.mode == "local":
        runner = LocalRunner(path=path if path is not None else os.environ.get("PATH"))
    elif pc.mode == "ssh":
        if pc.ssh_host is None or pc.ssh_key_file is None or pc.ssh_known_hosts is None:
            raise PrivilegedDisabled("privileged mode ssh needs ssh_host, ssh_key_file and "
                                     "ssh_known_hosts")
        runner = SshRunner(host=pc.ssh_host, port=pc.ssh_port, user=pc.ssh_user,
                           key_file=pc.ssh_key_file, known_hosts=pc.ssh_known_hosts)
    else:
        runner = DisabledRunner()
    return Privileged(runner, fstab_path=pc.fstab_path, mount_root=str(pc.mount_root))


def health_monitor(config: Config, client: ProxmoxClient, fenced: Privileged, *,
                   clock: Callable[[], float] = time.time,
                   logger: logging.Logger | None = None) -> HealthMonitor:
    """The host health monitor (not started): disks every ``storage.smart_interval_s``, with
    SMART and sensors through ``fenced`` unless ``proxmox.privileged.mode`` is off."""
    off = config.proxmox.privileged.mode == "off"
    return HealthMonitor(client=client, fenced=None if off else fenced,
                         interval_s=config.storage.smart_interval_s, clock=clock,
                         logger=logger)


def report_collector(config: Config, client: ProxmoxClient, *, engine: EngineView | None,
                     audit: AuditSource | None, health: HealthSource | None = None,
                     clock: Callable[[], float] = time.time,
                     extra_ops: Callable[[], Sequence[OpResult]] | None = None,
                     extra_errors: Callable[[], Sequence[ReportError]] | None = None,
                     guestapi: Callable[[], Sequence[Mapping[str, Any]]] | None = None,
                     logger: logging.Logger | None = None) -> Collector:
    """The HostReport collector with the ``storage.*`` alert thresholds, the health cache and
    (when it runs) the per-guest API's entries."""
    return Collector(client=client, node=config.proxmox.node, host_id=config.host_id,
                     engine=engine, audit=audit, clock=clock, health=health,
                     warn_pct=config.storage.warn_pct, crit_pct=config.storage.crit_pct,
                     extra_ops=extra_ops, extra_errors=extra_errors, guestapi=guestapi,
                     logger=logger)


def guest_socket_placer(pc: PrivilegedConfig) -> GuestSocketPlacer:
    """The fenced operation 4 (a container's API socket): local mode only, else it refuses
    (a descriptor cannot travel over SSH)."""
    return GuestSocketPlacer(LocalFdRunner() if pc.mode == "local" else None)


def guest_api_limits(config: Config) -> Limits:
    """Every guest's limits, from ``guestapi.*``."""
    g = config.guestapi
    return Limits(rate_per_s=g.rate_per_s, burst=g.burst,
                  backup_min_interval_s=float(g.backup_min_interval_s),
                  backups_per_day=g.backups_per_day, allow_restart=g.allow_restart)


def guest_api(config: Config, *, parts: Parts, logger: logging.Logger,
              placer: GuestSocketPlacer | None = None) -> GuestApiService | None:
    """The per-guest local API of ``guestapi.*`` over the daemon's parts, not started;
    ``None`` when ``guestapi.enabled`` is false (then no socket, no thread, nothing).

    Guest backups and restarts go through ``parts.engine.submit_op`` (the guest's lane, the
    queue's ``backup`` limit group); refusals and accepted requests go to ``parts.audit``. The
    supervisor passes every ``reconcile.interval_s`` (at most every 10 s) and on every change
    of the desired state.
    """
    g = config.guestapi
    if not g.enabled:
        return None
    log = logger.getChild("guestapi")
    limits = guest_api_limits(config)
    directory = Directory()
    backend = AgentBackend(directory=directory, client=parts.client,
                           submit=parts.engine.submit_op, journal=parts.journal, limits=limits,
                           logger=log)
    server = GuestApiServer(Api(backend, limits), limits, audit=parts.audit, logger=log)
    supervisor = GuestApiSupervisor(
        server=server, directory=directory, client=parts.client,
        desired=parts.provider.current,
        placer=placer if placer is not None else guest_socket_placer(config.proxmox.privileged),
        node=config.proxmox.node, host_id=config.host_id, container_path=g.container_path,
        serial_dir=g.serial_dir, socket_dir=g.socket_dir, audit=parts.audit,
        interval_s=min(DEFAULT_INTERVAL_S, config.reconcile.interval_s), logger=log)
    unsubscribe = parts.provider.subscribe(supervisor.wake)
    return GuestApiService(server, supervisor, unsubscribe)


def signed_op_sink(
    config: Config,
    engine: OpSubmitter,
    *,
    client: ProxmoxClient,
    journal: Journal,
    audit: AuditLog,
    clock: Callable[[], float] = time.time,
    logger: logging.Logger | None = None,
    stop_event: threading.Event | None = None,
    on_fatal: OnFatal | None = None,
) -> SignedOpConsumer:
    """The verifying signed-op consumer: allowed signers, verify policy, nonce store.

    An unusable allowed_signers file does not stop the agent: every op is refused with the
    file's error until a SIGHUP reload fixes it. A damaged nonce store fails closed (every op
    refused with the store's reason). Raises only
    :class:`~felhom_agent.durable.DurabilityError` (creating the store was not durable).
    """
    log = logger if logger is not None else logging.getLogger("felhom_agent.signed")
    authz = config.authz
    started = datetime.fromtimestamp(clock(), UTC)
    store = FileNonceStore.open(config.state_dir / NONCE_STORE_NAME, now=started,
                                max_clock_skew_s=authz.max_clock_skew_s,
                                max_op_lifetime_s=authz.max_op_lifetime_s, logger=log)
    error: str | None = None
    signers: AllowedSigners | None = None
    try:
        signers = load_allowed_signers(authz.allowed_signers)
    except AllowedSignersError as err:
        error = str(err)
        log.error("signed ops are refused until allowed_signers is fixed: %s", err)
    return SignedOpConsumer(
        engine=engine, client=client, journal=journal, audit=audit,
        policy=verify_policy(config), nonce_store=store, signers=signers,
        signers_error=error, clock=clock, stop_event=stop_event, on_fatal=on_fatal,
        logger=log, settings=kind_settings(config),
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
    on_fatal: OnFatal | None,
    engine_factory: EngineFactory,
    clock: Callable[[], float],
    logger: logging.Logger,
    hub_timeout_s: float = DEFAULT_HUB_TIMEOUT_S,
    workers: int | None = None,
) -> Parts:
    """Build every part; on failure, whatever was already opened is closed again.

    Args:
        config: the validated configuration.
        stop_event: set to stop; every wait of the executor and the engine watches it.
        on_fatal: the fatal-error callback (the daemon's ``FatalSignal.raise_``).
        engine_factory: builds the engine from these parts (the real
            :class:`~felhom_agent.execution.engine.Engine` by default).
        clock: wall-clock seconds.
        logger: the parent logger.
        hub_timeout_s: the hub client's read timeout (there is no config key for it).
        workers: queue workers; ``reconcile.workers`` when ``None``.

    Raises:
        DurabilityError: the journal or audit log cannot be opened durably.
        JournalLocked: another agent process holds the journal.
        AgentError: any other construction failure (typed, never a library exception).
    """
    ensure_state_dir(config.state_dir, logger)
    opened: list[Callable[[], None]] = []
    try:
        journal = open_journal(config, clock=clock, logger=logger, on_fatal=on_fatal)
        opened.append(journal.close)
        audit = open_audit(config, clock=clock, logger=logger, on_fatal=on_fatal)
        opened.append(audit.close)
        client = proxmox_client(config)
        opened.append(client.close)
        hub = hub_client(config, timeout_s=hub_timeout_s)
        if hub is not None:
            opened.append(hub.close)
        fenced = privileged(config.proxmox.privileged)
        health = health_monitor(config, client, fenced, clock=clock,
                                logger=logger.getChild("health"))
        watcher, executor = build_executor(
            client=client, journal=journal, audit=audit,
            task_timeout_s=config.proxmox.task_timeout_s, stop_event=stop_event, clock=clock,
            logger=logger.getChild("executor"), settings=kind_settings(config),
            host=HostTools(client=client, fenced=fenced, node=config.proxmox.node))
        queue = SerializerQueue(workers=workers or config.reconcile.workers,
                                limits={"backup": config.backup.max_concurrent,
                                        **CLONE_SOURCE_LIMITS}, logger=logger)
        provider = _provider(config, logger)
        engine = engine_factory(
            client=client, node=config.proxmox.node, provider=provider, queue=queue,
            journal=journal, audit=audit, executor=executor, watcher=watcher,
            interval_s=config.reconcile.interval_s, backups=backup_settings(config),
            provision=provision_limits(config), stop_event=stop_event, clock=clock,
            logger=logger.getChild("engine"),
        )
    except BaseException:
        for close in reversed(opened):
            close()
        raise
    return Parts(client=client, hub_client=hub, watcher=watcher, executor=executor,
                 queue=queue, journal=journal, audit=audit, provider=provider, engine=engine,
                 fenced=fenced, health=health)

