"""HubLoop against the real hub simulator: every fault, backoff waits, resume, no token leak.

The loop's ``wait`` is injected: it records the wait the policy chose, performs the test's
scripted step (take the hub down, bring it back) and returns at once, so no test sleeps and
the asserted waits are the computed ones, not wall time.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

import pytest

from felhom_agent.errors import AgentError
from felhom_agent.hub.envelope import Envelope
from felhom_agent.hub.errors import HubAuthError
from felhom_agent.hub.loop import HubLoop, report_round_trip
from felhom_agent.hub.policy import Backoff, RetryPolicy
from felhom_agent.hub.report import HostReport, NodeFacts, OpResult
from felhom_agent.sim.hub import HubFault, HubSimulator
from tests.hub.conftest import TOKEN, make_client, sample_report

INTERVAL = 7.0  # the fixture hub's poll_interval_s
DEFAULT = 30.0
HALF = 0.5  # rng value: waits are base + 0.5 * (ceiling - base) = 1.0, 1.5, 2.5, 4.5, ...


class ScriptedWait:
    """An injected ``wait``: records waits, runs step ``n`` after the n-th poll, stops at max."""

    def __init__(self, polls: int, steps: Mapping[int, Callable[[], None]] | None = None):
        self.polls = polls
        self.steps = dict(steps or {})
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> bool:
        self.waits.append(seconds)
        step = self.steps.get(len(self.waits))
        if step is not None:
            step()
        return len(self.waits) >= self.polls


def _loop(
    hub: HubSimulator,
    wait: ScriptedWait,
    *,
    collect: Callable[[], HostReport] = sample_report,
    on_envelope: Callable[[Envelope], None] | None = None,
    timeout_s: float = 5.0,
    logger: logging.Logger | None = None,
    rng: Callable[[], float] = lambda: HALF,
) -> tuple[HubLoop, list[Envelope]]:
    received: list[Envelope] = []
    loop = HubLoop(
        client=make_client(hub, timeout_s=timeout_s),
        collect=collect,
        on_envelope=on_envelope if on_envelope is not None else received.append,
        default_interval_s=DEFAULT,
        stop_event=threading.Event(),
        clock=lambda: 1795687200.0,
        wait=wait,
        rng=rng,
        logger=logger,
        policy=RetryPolicy(backoff=Backoff(base_s=1.0, cap_s=300.0), auth_retry_s=300.0),
    )
    return loop, received


def test_happy_path_hands_over_envelopes_at_the_hub_interval(hub: HubSimulator) -> None:
    """Each poll reports, parses and hands over; the wait is the envelope's poll_interval_s."""
    wait = ScriptedWait(3)
    loop, received = _loop(hub, wait)
    loop.run()
    assert wait.waits == [INTERVAL] * 3
    assert len(hub.reports()) == 3
    assert [e.desired for e in received] == [{"generation": 3, "guests": {}}] * 3
    status = loop.status()
    assert status.reports_ok == 3 and status.failures == {} and status.malformed == 0
    assert status.last_ok_at == "2026-11-26T10:00:00Z"
    assert "3 ok, 0 failed" in status.line()


def test_hub_down_at_start_backs_off_then_resumes(hub: HubSimulator) -> None:
    """A hub that is down at start costs growing backoff waits; the loop resumes when it is up."""
    hub.go_down()
    wait = ScriptedWait(6, {4: hub.come_up})
    loop, received = _loop(hub, wait)
    loop.run()
    assert wait.waits == [1.0, 1.5, 2.5, 4.5, INTERVAL, INTERVAL]
    assert len(received) == 2
    status = loop.status()
    assert status.failures == {"transport": 4}
    assert status.reports_ok == 2 and status.consecutive_failures == 0


def test_hub_down_mid_run_and_back(hub: HubSimulator) -> None:
    """Going down mid-run backs off from 1 s again; coming back resets to the normal interval."""
    wait = ScriptedWait(7, {2: hub.go_down, 5: hub.come_up})
    loop, received = _loop(hub, wait)
    loop.run()
    assert wait.waits == [INTERVAL, INTERVAL, 1.0, 1.5, 2.5, INTERVAL, INTERVAL]
    assert len(received) == 4 and len(hub.reports()) == 4


def test_5xx_backs_off_and_recovers(hub: HubSimulator) -> None:
    """Repeated 500/503 answers back off exponentially; success resets the backoff."""
    hub.inject(HubFault(kind="http_error", status=500, count=2))
    hub.inject(HubFault(kind="http_error", status=503, count=1))
    wait = ScriptedWait(5)
    loop, _ = _loop(hub, wait)
    loop.run()
    assert wait.waits == [1.0, 1.5, 2.5, INTERVAL, INTERVAL]
    assert loop.status().failures == {"server": 3}


def test_backoff_reaches_cap_and_stays(hub: HubSimulator) -> None:
    """A long outage ends in steady waits at the cap (rng near 1 -> the ceiling)."""
    hub.go_down()
    wait = ScriptedWait(14)
    loop, _ = _loop(hub, wait, rng=lambda: 0.999999)  # draws at the ceiling itself
    loop.run()
    assert wait.waits[:9] == pytest.approx([1, 2, 4, 8, 16, 32, 64, 128, 256], abs=1e-3)
    assert wait.waits[9:] == pytest.approx([300] * 5, abs=1e-3)


def test_401_is_logged_loudly_and_retried_slowly(
    hub: HubSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    """A rejected token is logged at ERROR and retried every auth_retry_s, not faster."""
    wait = ScriptedWait(3)
    loop = HubLoop(
        client=make_client(hub, token="revoked-token-XY9"),
        collect=sample_report, on_envelope=lambda e: None, default_interval_s=DEFAULT,
        stop_event=threading.Event(), wait=wait, rng=lambda: HALF,
    )
    with caplog.at_level(logging.DEBUG):
        loop.run()
    assert wait.waits == [300.0, 300.0, 300.0]
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 3 and "CREDENTIALS" in errors[0].getMessage()
    assert loop.status().failures == {"auth": 3}
    assert "revoked-token-XY9" not in caplog.text


def test_auth_recovers_when_the_hub_accepts_again(hub: HubSimulator) -> None:
    """After 401s the loop returns to the normal interval as soon as the hub accepts."""
    hub.inject(HubFault(kind="http_error", status=401, count=2))
    wait = ScriptedWait(3)
    loop, _ = _loop(hub, wait)
    loop.run()
    assert wait.waits == [300.0, 300.0, INTERVAL]


def test_slow_hub_past_timeout_backs_off(hub: HubSimulator) -> None:
    """A hub slower than the client timeout counts as a timeout and is backed off."""
    hub.inject(HubFault(kind="slow", delay_s=60, count=1))
    wait = ScriptedWait(2)
    loop, received = _loop(hub, wait, timeout_s=1.0)
    loop.run()
    assert wait.waits == [1.0, INTERVAL]
    assert loop.status().failures == {"timeout": 1}
    assert len(received) == 1


def test_garbage_json_is_skipped_at_normal_interval(hub: HubSimulator) -> None:
    """Garbage or non-object JSON is counted as malformed and skipped at the default interval."""
    hub.inject(HubFault(kind="garbage", count=1))
    hub.inject(HubFault(kind="garbage", body="[]", count=1))
    wait = ScriptedWait(3)
    loop, received = _loop(hub, wait)
    loop.run()
    assert wait.waits == [DEFAULT, DEFAULT, INTERVAL]
    assert loop.status().malformed == 2 and loop.status().failures == {}
    assert len(received) == 1


def test_envelope_with_wrong_types_is_skipped(
    hub: HubSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    """A wrong-typed envelope is logged with the field, counted, skipped; the loop goes on."""
    hub.inject(HubFault(kind="wrong_types", count=1))
    wait = ScriptedWait(2)
    loop, received = _loop(hub, wait)
    with caplog.at_level(logging.WARNING):
        loop.run()
    assert wait.waits == [DEFAULT, INTERVAL]
    assert loop.status().malformed == 1
    assert "desired" in caplog.text
    assert len(received) == 1


def test_dropped_connection_backs_off(hub: HubSimulator) -> None:
    """A connection dropped without an answer is a transport failure with backoff."""
    hub.inject(HubFault(kind="drop", count=2))
    wait = ScriptedWait(3)
    loop, _ = _loop(hub, wait)
    loop.run()
    assert wait.waits == [1.0, 1.5, INTERVAL]
    assert loop.status().failures == {"transport": 2}


def test_collect_failure_becomes_a_report_error(hub: HubSimulator) -> None:
    """A failing collector still yields a report, with the failure in its errors."""

    def collect() -> HostReport:
        raise AgentError("PVE API unreachable")

    wait = ScriptedWait(1)
    loop, received = _loop(hub, wait, collect=collect)
    loop.run()
    (recorded,) = hub.reports()
    assert recorded.body["errors"] == [
        {"source": "collect", "message": "collect failed: PVE API unreachable"}
    ]
    assert recorded.body["node"] is None and recorded.body["host_id"] == "pve1"
    assert recorded.body["collected_at"] == "2026-11-26T10:00:00Z"
    assert loop.status().collect_errors == 1 and len(received) == 1


def test_unexpected_collect_bug_and_unserialisable_report_are_reported(
    hub: HubSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    """A collector bug (any exception, or a report that is not JSON) is logged and reported."""
    reports = iter([
        HostReport(host_id="pve1", agent_version="1", collected_at="t",
                   storage=({"bad": object()},)),
    ])

    def collect() -> HostReport:
        try:
            return next(reports)
        except StopIteration:
            raise KeyError("missing") from None

    wait = ScriptedWait(2)
    loop, _ = _loop(hub, wait, collect=collect)
    with caplog.at_level(logging.ERROR):
        loop.run()
    first, second = hub.reports()
    assert first.body["errors"][0]["message"].startswith("collect failed: TypeError")
    assert second.body["errors"][0]["message"] == "collect failed: KeyError: 'missing'"
    assert any(r.exc_info for r in caplog.records)
    assert wait.waits == [INTERVAL, INTERVAL]


def test_handover_failure_is_counted_and_loop_continues(hub: HubSimulator) -> None:
    """An exception in on_envelope is logged and counted; the report still counts as ok."""

    def boom(envelope: Envelope) -> None:
        raise RuntimeError("consumer bug")

    wait = ScriptedWait(2)
    loop, _ = _loop(hub, wait, on_envelope=boom)
    loop.run()
    status = loop.status()
    assert status.handover_errors == 2 and status.reports_ok == 2
    assert wait.waits == [INTERVAL, INTERVAL]


class _BrokenSink:
    """A client that raises a non-agent exception: the loop must survive it."""

    host_id = "pve1"

    def post_report_json(self, body: bytes) -> Mapping[str, Any]:
        raise RuntimeError("bug in the client")


def test_unexpected_exception_is_logged_with_traceback_and_backed_off(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An unexpected exception never kills the loop; it is logged with traceback and backed off."""
    wait = ScriptedWait(3)
    loop = HubLoop(client=_BrokenSink(), collect=sample_report, on_envelope=lambda e: None,
                   default_interval_s=DEFAULT, stop_event=threading.Event(), wait=wait,
                   rng=lambda: HALF)
    with caplog.at_level(logging.ERROR):
        loop.run()
    assert wait.waits == [1.0, 1.5, 2.5]
    assert loop.status().failures == {"unexpected": 3}
    assert all(r.exc_info for r in caplog.records if r.levelno >= logging.ERROR)


def test_signed_ops_handed_over_exactly_and_redelivered_until_outcome(hub: HubSimulator) -> None:
    """Signed ops reach on_envelope as the exact strings and stop once a report has the outcome."""
    payload = '{"v": 1, "op_id": "op-1",  "kind": "guest.start"}'
    hub.add_signed_op(payload, "-----BEGIN SSH SIGNATURE-----\nAA\n")
    outcome: list[OpResult] = []

    def collect() -> HostReport:
        base = sample_report()
        return HostReport(host_id=base.host_id, agent_version="1", collected_at="t",
                          node=NodeFacts(name="pve1"), ops=tuple(outcome))

    wait = ScriptedWait(
        4,
        {1: lambda: outcome.append(OpResult(op_id="op-1", state="running")),
         2: lambda: outcome.__setitem__(0, OpResult(op_id="op-1", state="applied"))},
    )
    loop, received = _loop(hub, wait, collect=collect)
    loop.run()
    counts = [len(e.signed_ops) for e in received]
    assert counts == [1, 1, 0, 0]
    assert received[0].signed_ops[0].payload == payload


def test_stop_event_interrupts_the_real_wait(hub: HubSimulator) -> None:
    """With the default wait (stop_event.wait), setting the event ends a long wait at once."""
    stop = threading.Event()
    loop = HubLoop(client=make_client(hub), collect=sample_report, on_envelope=lambda e: None,
                   default_interval_s=3600, stop_event=stop)
    thread = threading.Thread(target=loop.run)
    thread.start()
    hub.wait_for_reports(1, timeout=10)
    stop.set()
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert loop.status().reports_ok == 1


def test_no_token_in_any_log_or_error(hub: HubSimulator, caplog: pytest.LogCaptureFixture) -> None:
    """Across every failure type no log line (any logger, DEBUG) or status text holds the token."""
    for fault in (HubFault(kind="http_error", status=500, count=1),
                  HubFault(kind="http_error", status=401, count=1),
                  HubFault(kind="garbage", body=f"echo {TOKEN}", count=1),
                  HubFault(kind="wrong_types", count=1),
                  HubFault(kind="drop", count=1)):
        hub.inject(fault)
    wait = ScriptedWait(8, {6: hub.go_down, 7: hub.come_up})
    loop, _ = _loop(hub, wait, logger=logging.getLogger("felhom_agent.hub.test"))
    with caplog.at_level(logging.DEBUG):
        loop.run()
    assert TOKEN not in caplog.text
    status = loop.status()
    assert status.last_error is not None and TOKEN not in status.last_error
    assert TOKEN not in status.line()
    assert len(status.failures) >= 3


def test_report_round_trip_for_selftest(hub: HubSimulator) -> None:
    """report_round_trip returns the parsed envelope and raises typed errors (selftest seam)."""
    envelope = report_round_trip(make_client(hub), sample_report(), default_interval_s=DEFAULT)
    assert envelope.poll_interval_s == INTERVAL and envelope.desired is not None
    with pytest.raises(HubAuthError):
        report_round_trip(make_client(hub, token="nope-nope"), sample_report(),
                          default_interval_s=DEFAULT)
