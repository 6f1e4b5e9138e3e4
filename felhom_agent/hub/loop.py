"""The resilient hub poll loop: collect -> report -> parse -> hand over -> wait, forever.

It runs on the daemon's main thread (``docs/architecture.md``, "Threads") and must never die: every
failure is classified, logged, counted and turned into a wait by the pure :class:`RetryPolicy`
(:mod:`felhom_agent.hub.policy`), and the wait is ``stop_event.wait`` so SIGTERM ends it at once.
What happens per failure (``docs/architecture.md``, "Hub protocol"):

* collecting the report fails -> the report still goes out, carrying the failure in
  ``errors`` (the hub learns the host is alive and why it knows nothing else);
* the report cannot be serialised (a collector bug) -> same, a minimal report is sent;
* network error, timeout, 5xx, unexpected status -> exponential backoff with jitter to a cap;
* 401/403 -> logged at ERROR every time, retried slowly;
* garbage JSON or a malformed envelope -> logged, counted, skipped, normal interval;
* the hand-over callback raises -> logged with traceback, counted; the report was delivered;
* anything unexpected -> logged with traceback and backed off like a transient failure.

Counters for the daemon's status line are read with :meth:`HubLoop.status` from any thread.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import attrs

from felhom_agent import __version__
from felhom_agent.errors import AgentError
from felhom_agent.hub.envelope import Envelope, clamp_interval, parse_envelope
from felhom_agent.hub.errors import (
    HubAuthError,
    HubError,
    HubProtocolError,
    HubRequestError,
    HubServerError,
    HubTimeoutError,
    HubTransportError,
)
from felhom_agent.hub.policy import Outcome, PolicyState, RetryPolicy
from felhom_agent.hub.report import HostReport, ReportError
from felhom_agent.utc import format_utc

__all__ = ["HubLoop", "HubStatus", "ReportSink", "report_round_trip"]


class ReportSink(Protocol):
    """What the loop needs from a hub client (:class:`~felhom_agent.hub.client.HubClient`)."""

    @property
    def host_id(self) -> str:
        """Our host id."""
        ...

    def post_report_json(self, body: bytes) -> Mapping[str, Any]:
        """POST a serialised report; return the decoded answer or raise a ``HubError``."""
        ...


def report_round_trip(
    client: ReportSink, report: HostReport, *, default_interval_s: float
) -> Envelope:
    """One report and its parsed envelope, failures raised (``--selftest=hub``).

    Raises:
        HubError: any failure of :meth:`HubClient.report`, or :class:`EnvelopeError`.
        ValueError: the report is not serialisable (a collector bug).
    """
    answer = client.post_report_json(report.to_json())
    return parse_envelope(answer, default_interval_s=default_interval_s)


@attrs.frozen
class HubStatus:
    """A snapshot of the loop's counters.

    Args:
        reports_ok: reports the hub accepted with a usable envelope.
        failures: failed polls by kind (``transport``, ``timeout``, ``server``, ``auth``,
            ``request``, ``error``, ``unexpected``).
        malformed: polls whose answer was garbage or a malformed envelope.
        collect_errors: polls whose collection (or serialisation) failed.
        handover_errors: envelopes the hand-over callback failed on.
        consecutive_failures: transient failures since the last answer from the hub.
        last_ok_at: UTC time of the last accepted report.
        last_error: the last failure's text (never contains the token).
        next_wait_s: the wait chosen after the last poll.
    """

    reports_ok: int = 0
    failures: Mapping[str, int] = attrs.field(factory=dict)
    malformed: int = 0
    collect_errors: int = 0
    handover_errors: int = 0
    consecutive_failures: int = 0
    last_ok_at: str | None = None
    last_error: str | None = None
    next_wait_s: float | None = None

    def line(self) -> str:
        """One line for systemd's ``STATUS=`` and the log."""
        failed = sum(self.failures.values())
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(self.failures.items()))
        text = f"hub: {self.reports_ok} ok, {failed} failed"
        if kinds:
            text += f" ({kinds})"
        text += f", {self.malformed} malformed"
        if self.last_ok_at:
            text += f", last ok {self.last_ok_at}"
        if self.consecutive_failures:
            text += f", retrying (failure {self.consecutive_failures})"
        return text


def _failure_kind(err: BaseException) -> str:
    if isinstance(err, HubAuthError):
        return "auth"
    if isinstance(err, HubTimeoutError):
        return "timeout"
    if isinstance(err, HubTransportError):
        return "transport"
    if isinstance(err, HubServerError):
        return "server"
    if isinstance(err, HubRequestError):
        return "request"
    if isinstance(err, AgentError):
        return "error"
    return "unexpected"


class HubLoop:
    """The hub poll loop.

    Args:
        client: the hub client.
        collect: builds this poll's report; may raise (the failure is reported instead).
        on_envelope: receives each valid envelope (desired state -> HubProvider, signed ops
            -> the consumer); should return quickly.
        default_interval_s: ``hub.interval_s``, used when the envelope names none.
        stop_event: set on SIGTERM/SIGINT; ends :meth:`run` and cuts any wait short.
        clock: POSIX time for ``collected_at`` and ``last_ok_at``.
        wait: ``wait(seconds) -> stopped``; defaults to ``stop_event.wait``.
        rng: uniform [0, 1) source for the backoff jitter.
        logger: where failures are logged.
        policy: the failure policy.
        agent_version: reported in fallback reports.
    """

    def __init__(
        self,
        *,
        client: ReportSink,
        collect: Callable[[], HostReport],
        on_envelope: Callable[[Envelope], None],
        default_interval_s: float,
        stop_event: threading.Event,
        clock: Callable[[], float] = time.time,
        wait: Callable[[float], bool] | None = None,
        rng: Callable[[], float] | None = None,
        logger: logging.Logger | None = None,
        policy: RetryPolicy | None = None,
        agent_version: str = __version__,
    ) -> None:
        self._client = client
        self._collect = collect
        self._on_envelope = on_envelope
        self._default_interval_s = clamp_interval(default_interval_s)
        self._stop = stop_event
        self._clock = clock
        self._wait = wait if wait is not None else stop_event.wait
        # SystemRandom: jitter needs no reproducibility in production, and a private source
        # keeps the loop off the random module's global state.
        self._rng = rng if rng is not None else random.SystemRandom().random
        self._log = logger if logger is not None else logging.getLogger(__name__)
        self._policy = policy if policy is not None else RetryPolicy()
        self._agent_version = agent_version
        self._state = PolicyState()
        self._lock = threading.Lock()
        self._status = HubStatus()

    def status(self) -> HubStatus:
        """A consistent snapshot of the counters (thread-safe)."""
        with self._lock:
            return self._status

    def run(self) -> None:
        """Poll until ``stop_event`` is set; never raises for a failed poll."""
        self._log.info("hub loop started (host %s)", self._client.host_id)
        while not self._stop.is_set():
            wait_s = self.run_once()
            if self._wait(wait_s):
                break
        self._log.info("hub loop stopped: %s", self.status().line())

    def run_once(self) -> float:
        """One poll: collect, report, parse, hand over; return the seconds to wait next."""
        try:
            outcome, interval_s, error = self._poll()
        except Exception as err:  # the loop never dies, whatever a collaborator does
            self._log.exception("hub poll failed unexpectedly")
            outcome, interval_s, error = Outcome.TRANSIENT, self._default_interval_s, err
        wait_s, self._state = self._policy.next_wait(
            self._state, outcome, interval_s=interval_s, rng=self._rng
        )
        if isinstance(error, HubError) and outcome is Outcome.TRANSIENT:
            self._log.warning(
                "hub report failed (failure %d in a row), next try in %.1f s: %s",
                self._state.failures,
                wait_s,
                error,
            )
        self._record(outcome, error, wait_s)
        return wait_s

    def _poll(self) -> tuple[Outcome, float, BaseException | None]:
        body = self._serialised_report()
        try:
            answer = self._client.post_report_json(body)
            envelope = parse_envelope(answer, default_interval_s=self._default_interval_s)
        except HubProtocolError as err:
            self._log.warning("hub answer skipped (counted as malformed): %s", err)
            return Outcome.MALFORMED, self._default_interval_s, err
        except HubAuthError as err:
            self._log.error(
                "HUB REJECTED OUR CREDENTIALS: %s; retrying in %g s",
                err,
                self._policy.auth_retry_s,
            )
            return Outcome.AUTH, self._default_interval_s, err
        except HubError as err:
            return Outcome.TRANSIENT, self._default_interval_s, err
        if self._state.failures:
            self._log.info("hub reachable again after %d failed polls", self._state.failures)
        try:
            self._on_envelope(envelope)
        except Exception:
            self._log.exception("handing over the hub envelope failed")
            with self._lock:
                self._status = attrs.evolve(
                    self._status, handover_errors=self._status.handover_errors + 1
                )
        return Outcome.OK, envelope.poll_interval_s, None

    def _serialised_report(self) -> bytes:
        """This poll's report as JSON; a failed collection still yields a (minimal) report."""
        problem: str
        try:
            return self._collect().to_json()
        except AgentError as err:
            self._log.warning("collecting the host report failed: %s", err)
            problem = f"collect failed: {err}"
        except Exception as err:
            self._log.exception("collecting the host report failed unexpectedly")
            problem = f"collect failed: {type(err).__name__}: {err}"
        with self._lock:
            self._status = attrs.evolve(
                self._status, collect_errors=self._status.collect_errors + 1
            )
        fallback = HostReport.failed_collection(
            host_id=self._client.host_id,
            agent_version=self._agent_version,
            collected_at=format_utc(self._clock()),
            error=ReportError(source="collect", message=problem[:1000]),
        )
        return fallback.to_json()

    def _record(self, outcome: Outcome, error: BaseException | None, wait_s: float) -> None:
        with self._lock:
            status = self._status
            if outcome is Outcome.OK:
                status = attrs.evolve(
                    status, reports_ok=status.reports_ok + 1, last_ok_at=format_utc(self._clock())
                )
            elif outcome is Outcome.MALFORMED:
                status = attrs.evolve(status, malformed=status.malformed + 1)
            else:
                failures = dict(status.failures)
                kind = _failure_kind(error) if error is not None else "unexpected"
                failures[kind] = failures.get(kind, 0) + 1
                status = attrs.evolve(status, failures=failures)
            if error is not None:
                status = attrs.evolve(status, last_error=f"{type(error).__name__}: {error}")
            self._status = attrs.evolve(
                status, consecutive_failures=self._state.failures, next_wait_s=wait_s
            )
