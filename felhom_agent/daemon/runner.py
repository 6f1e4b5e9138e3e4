"""The daemon's main thread: start-up, the hub loop (or the file-provider loop), stop, reload.

``docs/architecture.md`` ("Threads"): the main thread runs the hub poll loop -- collect a
HostReport, POST it, hand the envelope's desired state to the :class:`HubProvider` (which wakes the
engine) and its signed ops to the :class:`SignedOpSink`, wait, repeat. It never blocks on a PVE
task; the engine's reconciler thread and the queue's workers do that. Without a hub the main thread
polls the desired-state file instead and the engine's own interval does the rest.

Life cycle (:meth:`Daemon.run`):

1. build the parts (:func:`felhom_agent.compose.root.build_parts`); a durability failure or a locked
   journal -> exit 1;
2. start the queue, then until PVE answers: ``GET /version`` and ``engine.recover()``
   (re-attach journal entries), retried with backoff, interruptible by SIGTERM;
3. ``engine.start()``, sd_notify ``READY=1`` with a ``STATUS=`` line;
4. the main loop; after every poll (real progress) ``WATCHDOG=1`` and ``STATUS=``; waits are
   cut into chunks of half the watchdog interval so a long poll interval still pings;
5. SIGTERM/SIGINT (or ``stop_event`` set by an in-process caller): ``STOPPING=1``, the engine
   stops planning, the queue drains within ``grace_s`` (running jobs may finish; queued jobs
   are left unstarted and logged; a PVE task still running keeps running on the host and its
   UPID is in the journal, so the next start re-attaches it); exit 0;
6. a :class:`~felhom_agent.durable.DurabilityError` anywhere (journal or audit append on a worker)
   stops the daemon the same way, with exit status 1 (never retried: ``docs/architecture.md``,
   "Durable state").

SIGHUP reloads the configuration (:mod:`.reload`): log level/format, the allowed-signers path
(through the sink), ``hub.interval_s``; a bad new file is logged and the old config kept.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping

from felhom_agent.backoff import Attempt, Chain, Retry, RetryInterrupted, retry_call
from felhom_agent.compose.engine_seam import EngineFactory, default_engine_factory
from felhom_agent.compose.fatal import FatalSignal
from felhom_agent.compose.root import (
    DEFAULT_HUB_TIMEOUT_S,
    Parts,
    build_parts,
    guest_api,
    report_collector,
    signed_op_sink,
)
from felhom_agent.config import Config
from felhom_agent.core.desired import DesiredStateError, parse_desired
from felhom_agent.daemon.reload import ReloadResult, apply_reload
from felhom_agent.daemon.sdnotify import Notifier
from felhom_agent.daemon.signals import SignalRouter
from felhom_agent.daemon.signed_ops import SignedOpSink
from felhom_agent.durable import DurabilityError
from felhom_agent.errors import AgentError
from felhom_agent.guestapi.service import GuestApiService
from felhom_agent.hub.collect import Collector
from felhom_agent.hub.envelope import Envelope
from felhom_agent.hub.loop import HubLoop
from felhom_agent.hub.policy import RetryPolicy
from felhom_agent.hub.report import ReportError
from felhom_agent.planning.providers import FileProvider, HubProvider
from felhom_agent.state.journal import JournalError

__all__ = ["DEFAULT_GRACE_S", "EXIT_FATAL", "EXIT_OK", "Daemon"]

EXIT_OK = 0
EXIT_FATAL = 1
EXIT_CONFIG = 2
#: Stop grace: well below the unit's TimeoutStopSec=120 s; a task still running after it is
#: re-attached from the journal on the next start.
DEFAULT_GRACE_S = 10.0
_FILE_POLL_S = 5.0
#: Start-up waits for PVE: 1, 2, 5, 10 s, then every 30 s until it answers or we are stopped.
_STARTUP_RETRY = Retry(Chain.of_seconds(1.0, 2.0, 5.0, 10.0, 30.0))


def _startup_retryable(err: BaseException) -> bool:
    """PVE not answering (or recovery failing on it) is retried; durability failures are not."""
    return isinstance(err, AgentError) and not isinstance(err, DurabilityError)


class Daemon:
    """One daemon run; construct, then call :meth:`run` once.

    Args:
        config: the validated configuration.
        env: the environment (``NOTIFY_SOCKET`` …).
        stop_event: set to stop (the signal handlers set it too); the engine shares it.
        reload_config: loads the configuration again for SIGHUP (raises ``ConfigError``).
        reconfigure_logging: applies a (reloaded) config's log settings.
        grace_s: how long running jobs may take to finish at stop.
        engine_factory: builds the engine (a fake in wiring tests).
        sink: where signed ops go (default: the verifying consumer of
            :mod:`felhom_agent.signedops.consumer`, built from the engine's parts).
        notifier: sd_notify sender (default: from ``env``).
        clock: POSIX seconds; monotonic: for waits.
        install_signals: install SIGTERM/SIGINT/SIGHUP handlers (main thread only).
        hub_policy: the hub loop's failure policy (default :class:`RetryPolicy`).
        hub_timeout_s: the hub client's read timeout.
        logger: the daemon's logger.
    """

    def __init__(
        self,
        config: Config,
        *,
        env: Mapping[str, str],
        stop_event: threading.Event | None = None,
        reload_config: Callable[[], Config] | None = None,
        reconfigure_logging: Callable[[Config], None] | None = None,
        grace_s: float = DEFAULT_GRACE_S,
        engine_factory: EngineFactory = default_engine_factory,
        sink: SignedOpSink | None = None,
        notifier: Notifier | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        install_signals: bool = True,
        hub_policy: RetryPolicy | None = None,
        hub_timeout_s: float = DEFAULT_HUB_TIMEOUT_S,
        logger: logging.Logger | None = None,
    ) -> None:
        self._config = config
        self._env = env
        self._stop = stop_event if stop_event is not None else threading.Event()
        self._reload_config = reload_config
        self._reconfigure_logging = reconfigure_logging
        self._grace_s = grace_s
        self._engine_factory = engine_factory
        self._log = logger if logger is not None else logging.getLogger("felhom_agent.daemon")
        self._sink: SignedOpSink | None = sink
        self._notifier = notifier if notifier is not None else Notifier(env, logger=self._log)
        self._clock = clock
        self._monotonic = monotonic
        self._install_signals = install_signals
        self._hub_policy = hub_policy
        self._hub_timeout_s = hub_timeout_s
        self._wake = threading.Event()
        self._reload_requested = threading.Event()
        self._fatal = FatalSignal()
        self._fatal.subscribe(self._on_fatal)
        self._envelope_errors: list[ReportError] = []
        self._errors_lock = threading.Lock()
        self._hub_loop: HubLoop | None = None
        self._guest_api: GuestApiService | None = None
        self._ready = threading.Event()

    # -- public --------------------------------------------------------------------------------

    @property
    def ready(self) -> threading.Event:
        """Set once start-up finished (PVE answered, recovery done, READY=1 sent)."""
        return self._ready

    def request_stop(self) -> None:
        """Stop soon (what SIGTERM does); safe from any thread or a signal handler."""
        self._stop.set()
        self._wake.set()

    def request_reload(self) -> None:
        """Reload the configuration soon (what SIGHUP does)."""
        self._reload_requested.set()
        self._wake.set()

    def run(self) -> int:
        """Run until stopped; return the exit status (0 clean, 1 fatal, 2 config)."""
        router = SignalRouter(on_stop=self.request_stop, on_reload=self.request_reload)
        if self._install_signals and router.can_install():
            router.install()
        bridge = threading.Thread(target=self._bridge_stop, name="felhom-stop-bridge",
                                  daemon=True)
        bridge.start()
        try:
            return self._run()
        finally:
            router.restore()
            self._stop.set()  # ends the bridge and anything else sharing the event
            bridge.join(timeout=5.0)

    # -- phases --------------------------------------------------------------------------------

    @property
    def _active_sink(self) -> SignedOpSink:
        # Built in _run before the queue starts; nothing uses it earlier.
        if self._sink is None:
            raise RuntimeError("the signed-op sink is used before start-up")
        return self._sink

    def _run(self) -> int:
        self._notifier.status("starting")
        try:
            parts = build_parts(
                self._config, stop_event=self._stop, on_fatal=self._fatal.raise_,
                engine_factory=self._engine_factory, clock=self._clock, logger=self._log,
                hub_timeout_s=self._hub_timeout_s,
            )
        except (DurabilityError, JournalError) as err:
            self._log.error("cannot open the state in %s: %s", self._config.state_dir, err)
            return EXIT_FATAL
        except AgentError as err:
            self._log.error("cannot start: %s", err)
            return EXIT_CONFIG
        try:
            if self._sink is None:
                self._sink = signed_op_sink(
                    self._config, parts.engine, client=parts.client,
                    journal=parts.journal, audit=parts.audit, clock=self._clock,
                    logger=self._log.getChild("signed"), stop_event=self._stop,
                    on_fatal=self._fatal.raise_,
                )
        except DurabilityError as err:
            self._log.error("cannot open the nonce store in %s: %s", self._config.state_dir, err)
            parts.close()
            return EXIT_FATAL
        try:
            parts.queue.start()
            if self._start_up(parts):
                parts.engine.start()
                self._start_guest_api(parts)
                parts.health.start()
                self._ready.set()
                self._notifier.ready(self._status_line(parts))
                self._log.info("felhom-agent ready (host %s, node %s, %s)",
                               self._config.host_id, self._config.proxmox.node,
                               "hub " + self._config.hub.url if self._config.hub.url
                               else "no hub")
                self._main_loop(parts)
        except DurabilityError as err:
            self._fatal.raise_(err)
        finally:
            self._shut_down(parts)
        engine_fatal = parts.engine.fatal
        if engine_fatal is not None:
            self._fatal.raise_(engine_fatal)
        if self._fatal.error is not None:
            self._log.error("exiting with status 1 after a durability failure: %s",
                            self._fatal.error)
            return EXIT_FATAL
        return EXIT_OK

    def _start_up(self, parts: Parts) -> bool:
        """Until PVE answers and recovery is done; False when stopped first."""
        if self._stop.is_set():
            return False

        def reach_and_recover() -> str:
            version = parts.client.version()
            parts.engine.recover()
            return version.version

        def waiting(attempt: Attempt, err: BaseException, wait_s: float) -> None:
            self._log.warning("PVE not ready (attempt %d), retrying in %g s: %s",
                              attempt.number, wait_s, err)
            self._notifier.status(f"waiting for PVE: {err}")

        def sleep(seconds: float) -> bool:
            self._sleep(seconds)
            return self._stop.is_set()

        try:
            version = retry_call(reach_and_recover, policy=_STARTUP_RETRY,
                                 retry_if=_startup_retryable, sleep=sleep,
                                 clock=self._monotonic, before_sleep=waiting)
        except RetryInterrupted:
            return False
        self._log.info("PVE %s reachable; journal recovery done", version)
        return True

    def _start_guest_api(self, parts: Parts) -> None:
        """The per-guest local API, when ``guestapi.enabled`` (its own threads)."""
        self._guest_api = guest_api(self._config, parts=parts, logger=self._log)
        if self._guest_api is not None:
            self._guest_api.start()
            self._log.info("per-guest local API started (guests with \"guestapi\": true)")

    def _main_loop(self, parts: Parts) -> None:
        api = self._guest_api
        collector = report_collector(
            self._config, parts.client, engine=parts.engine, audit=parts.audit,
            health=parts.health, clock=self._clock, extra_ops=self._active_sink.results,
            extra_errors=self._take_envelope_errors,
            guestapi=None if api is None else api.report, logger=self._log,
        )
        if parts.hub_client is not None:
            self._hub_loop = self._new_hub_loop(parts, collector, self._config.hub.interval_s)
        while not self._stop.is_set():
            if self._hub_loop is not None:
                wait_s = self._hub_loop.run_once()
            else:
                if isinstance(parts.provider, FileProvider):
                    parts.provider.refresh()
                wait_s = min(_FILE_POLL_S, self._config.reconcile.interval_s)
            self._notifier.send(WATCHDOG="1", STATUS=self._status_line(parts))
            self._sleep(wait_s)
            if self._reload_requested.is_set() and not self._stop.is_set():
                self._reload_requested.clear()
                self._reload(parts, collector)

    def _shut_down(self, parts: Parts) -> None:
        self._stop.set()
        if self._guest_api is not None:  # no guest request may reach a draining queue
            try:
                self._guest_api.stop()
            except Exception:  # stopping must not turn a clean stop into a crash
                self._log.exception("stopping the per-guest local API failed")
        snap = parts.queue.snapshot()
        self._notifier.stopping(f"draining {snap.running} running job(s), "
                                f"{snap.queued} queued left unstarted")
        self._log.info("stopping: %d running job(s) get up to %g s, %d queued stay unstarted",
                       snap.running, self._grace_s, snap.queued)
        started = self._monotonic()
        if not parts.engine.join(timeout=self._grace_s):
            self._log.warning("reconciler thread did not stop within %g s", self._grace_s)
        remaining = max(0.0, self._grace_s - (self._monotonic() - started))
        report = parts.queue.shutdown(grace_s=remaining)
        if self._sink is not None:
            try:
                self._sink.close()
            except Exception:  # closing must not turn a clean stop into a crash
                self._log.exception("closing the signed-op consumer failed")
        for entry in parts.journal.pending():
            if entry.upid is not None:
                self._log.info("op %s (%s %s) left running on PVE as %s; re-attached on restart",
                               entry.op_id, entry.kind, entry.vmid, entry.upid)
        try:
            parts.close()
        except Exception:  # closing must not turn a clean stop into a crash
            self._log.exception("closing the daemon's parts failed")
        self._log.info("stopped: %d job(s) finished, %d abandoned running, %d unstarted",
                       len(report.finished), len(report.abandoned_running),
                       len(report.unstarted))

    # -- hub -------------------------------------------------------------------------------------

    def _new_hub_loop(self, parts: Parts, collector: Collector,
                      interval_s: float) -> HubLoop:
        if parts.hub_client is None:
            raise RuntimeError("no hub client")
        return HubLoop(
            client=parts.hub_client, collect=collector,
            on_envelope=lambda env: self._on_envelope(parts, env),
            default_interval_s=interval_s, stop_event=self._stop, clock=self._clock,
            logger=self._log.getChild("hub"), policy=self._hub_policy,
        )

    def _on_envelope(self, parts: Parts, envelope: Envelope) -> None:
        if envelope.desired is not None and isinstance(parts.provider, HubProvider):
            try:
                state = parse_desired(envelope.desired, path="desired")
            except DesiredStateError as err:
                self._log.warning("hub desired state rejected, keeping the previous one: %s",
                                  err)
                with self._errors_lock:
                    self._envelope_errors = [ReportError("desired", str(err)[:1000])]
            else:
                with self._errors_lock:
                    self._envelope_errors = []
                if parts.provider.update(state):
                    parts.engine.wake()
        if envelope.signed_ops:
            self._active_sink.handle(envelope.signed_ops)

    def _take_envelope_errors(self) -> tuple[ReportError, ...]:
        with self._errors_lock:
            return tuple(self._envelope_errors)

    # -- reload ----------------------------------------------------------------------------------

    def _reload(self, parts: Parts, collector: Collector) -> None:
        self._notifier.reloading()
        result: ReloadResult = apply_reload(
            self._config, self._reload_config, logger=self._log,
            reconfigure_logging=self._reconfigure_logging, sink=self._active_sink,
        )
        self._config = result.config
        if result.hub_interval_changed and parts.hub_client is not None:
            self._hub_loop = self._new_hub_loop(parts, collector, self._config.hub.interval_s)
        self._notifier.ready(self._status_line(parts))

    # -- waiting, stopping -----------------------------------------------------------------------

    def _sleep(self, seconds: float) -> None:
        """Wait ``seconds`` or until stop/reload; ping the watchdog every chunk."""
        deadline = self._monotonic() + seconds
        chunk = self._notifier.watchdog_interval_s
        while True:
            self._wake.clear()
            if self._stop.is_set() or self._reload_requested.is_set():
                return
            remaining = deadline - self._monotonic()
            if remaining <= 0:
                return
            self._wake.wait(remaining if chunk is None else min(remaining, chunk))
            if chunk is not None and not self._stop.is_set():
                self._notifier.watchdog()

    def _bridge_stop(self) -> None:
        """Turn ``stop_event.set()`` by an in-process caller into a wake-up of the main loop."""
        while not self._stop.wait(3600.0):
            pass
        self._wake.set()

    def _on_fatal(self, error: BaseException) -> None:
        self._log.error("durability failure, the agent stops (never retried): %s", error)
        self.request_stop()

    def _status_line(self, parts: Parts) -> str:
        snap = parts.queue.snapshot()
        hub = self._hub_loop.status().line() if self._hub_loop is not None else "no hub"
        try:
            st = parts.engine.status()
            rec = (f"generation {st.generation}, {st.actions} action(s), "
                   f"{len(st.blocked)} blocked, {len(st.refused)} refused")
        except Exception as err:  # the status line must never break the loop
            rec = f"status unavailable ({type(err).__name__})"
        return f"{hub}; reconcile: {rec}; queue: {snap.running} running, {snap.queued} queued"
