"""The backoff module: wait strategies, stop rules and the retry runner, with no sleeping.

Every test here runs on a scripted clock: :class:`tests.support.clock.FakeClock` only moves
when the code under test sleeps. The second half pins each policy the agent uses to the
formula it had before the module existed, so moving the formulas here changed no wait.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from felhom_agent.backoff import (
    NEVER,
    Attempt,
    Chain,
    Exponential,
    FirstThen,
    Fixed,
    FullJitter,
    Incrementing,
    Proportional,
    Retry,
    RetryInterrupted,
    StopAfterAttempt,
    StopAfterDelay,
    retry_call,
)
from felhom_agent.execution.executor import DispatchRetry
from felhom_agent.hub.policy import Backoff
from felhom_agent.proxmox.tasks import PollPolicy
from felhom_agent.proxmox.taskwatch import WatchPolicy
from tests.support.clock import FakeClock

_NUMBERS = st.integers(min_value=0, max_value=5000)
_AGES = st.floats(min_value=-10.0, max_value=1e7, allow_nan=False)
_UNIT = st.floats(min_value=0.0, max_value=1.0, exclude_max=True)
_SECONDS = st.floats(min_value=0.0, max_value=1e4, allow_nan=False)


class Flaky:
    """Fails ``failures`` times with ``error``, then returns ``"ok"``."""

    def __init__(self, failures: int, error: Callable[[], BaseException] = OSError) -> None:
        self.left = failures
        self.calls = 0
        self.error = error

    def __call__(self) -> str:
        self.calls += 1
        if self.left > 0:
            self.left -= 1
            raise self.error()
        return "ok"


# ---------------------------------------------------------------- strategies


def test_shapes_at_known_points() -> None:
    """Each shape's values for the first few tries."""
    exp = Exponential(0.5, 2.0, 5.0)
    assert [exp(Attempt(n)) for n in range(6)] == [0.5, 0.5, 1.0, 2.0, 4.0, 5.0]
    inc = Incrementing(1.0, 1.0, cap_s=2.5)
    assert [inc(Attempt(n)) for n in range(1, 5)] == [1.0, 2.0, 2.5, 2.5]
    prop = Proportional(0.1, 0.25, 5.0)
    assert [prop(Attempt(1, age)) for age in (-3.0, 0.0, 2.0, 100.0)] == [0.1, 0.1, 0.6, 5.0]
    assert Fixed(3.0)(Attempt(99, 1e9)) == 3.0
    chain = Chain.of_seconds(1, 2, 5)
    assert [chain(Attempt(n)) for n in range(6)] == [1, 1, 2, 5, 5, 5]
    first = FirstThen(0.1, Fixed(7.0))
    assert [first(Attempt(n)) for n in range(3)] == [0.1, 7.0, 7.0]
    assert (Fixed(1.0) + Exponential(1.0))(Attempt(3)) == 5.0


@given(_NUMBERS, _SECONDS, st.floats(min_value=1.0, max_value=10.0), _SECONDS)
def test_exponential_never_decreases_and_never_passes_its_cap(
        n: int, first: float, factor: float, cap: float) -> None:
    """Whatever the try count (even one that overflows a float), 0 <= wait <= cap, rising."""
    exp = Exponential(first, factor, cap)
    here, later = exp(Attempt(n)), exp(Attempt(n + 1))
    assert 0.0 <= here <= later <= cap


@given(_NUMBERS, _SECONDS, _SECONDS, _UNIT)
def test_full_jitter_stays_between_floor_and_ceiling(
        n: int, floor: float, cap: float, draw: float) -> None:
    """A jittered wait lies in [floor, max(floor, ceiling)] for every draw in [0, 1)."""
    ceiling = Exponential(1.0, 2.0, cap)
    wait = FullJitter(ceiling, floor, lambda: draw)(Attempt(n))
    assert floor <= wait <= max(floor, ceiling(Attempt(n)))


@given(_AGES, _AGES)
def test_proportional_grows_with_age(a: float, b: float) -> None:
    """An older subject is never polled more often than a younger one."""
    prop = Proportional(0.02, 0.03, 5.0)
    young, old = sorted((a, b))
    assert 0.0 <= prop(Attempt(0, young)) <= prop(Attempt(0, old)) <= 5.0


def test_strategies_refuse_negative_or_nan_settings() -> None:
    """A negative or NaN wait is a configuration bug, refused when the strategy is built."""
    for build in (lambda: Fixed(-1.0), lambda: Exponential(math.nan),
                  lambda: Proportional(0.1, cap_s=-1.0), lambda: Chain(())):
        with pytest.raises(ValueError):
            build()


# ---------------------------------------------------------------- stops and Retry


def test_stop_rules_and_their_union() -> None:
    """Give up by count, by deadline, either, or never."""
    count, deadline = StopAfterAttempt(3), StopAfterDelay(10.0)
    assert [count(Attempt(n)) for n in (2, 3, 4)] == [False, True, True]
    assert [deadline(Attempt(1, t)) for t in (9.9, 10.0)] == [False, True]
    either = count | deadline
    assert either(Attempt(1, 10.0)) and either(Attempt(3, 0.0)) and not either(Attempt(2, 1.0))
    assert not NEVER(Attempt(10**9, 1e12))


def test_retry_delay_is_none_once_stopped() -> None:
    """The wait comes from the strategy until the stop rule says give up."""
    retry = Retry(Exponential(0.5, 2.0, 5.0), StopAfterAttempt(4))
    assert [retry.delay(Attempt(n)) for n in range(1, 6)] == [0.5, 1.0, 2.0, None, None]


# ---------------------------------------------------------------- the runner


def test_retry_call_retries_then_returns() -> None:
    """Failures are retried on the strategy's schedule, slept on the injected clock."""
    clock, fn = FakeClock(), Flaky(2)
    seen: list[tuple[int, float, float]] = []
    result = retry_call(fn, policy=Retry(Exponential(0.1)), retry_if=lambda e: True,
                        sleep=clock.sleep, clock=clock,
                        before_sleep=lambda a, _e, w: seen.append((a.number, a.elapsed_s, w)))
    assert result == "ok" and fn.calls == 3
    assert clock.sleeps == [0.1, 0.2]
    assert seen == [(1, 0.0, 0.1), (2, 0.1, 0.2)]


def test_retry_call_gives_up_with_the_last_failure() -> None:
    """Out of tries: the last exception itself propagates."""
    clock, fn = FakeClock(), Flaky(10, lambda: OSError("down"))
    with pytest.raises(OSError, match="down"):
        retry_call(fn, policy=Retry(Fixed(1.0), StopAfterAttempt(3)), retry_if=lambda e: True,
                   sleep=clock.sleep, clock=clock)
    assert fn.calls == 3 and clock.sleeps == [1.0, 1.0]


def test_retry_call_deadline_uses_the_injected_clock() -> None:
    """A deadline counts the scripted seconds slept, not wall time."""
    clock, fn = FakeClock(), Flaky(100)
    with pytest.raises(OSError):
        retry_call(fn, policy=Retry(Fixed(4.0), StopAfterDelay(10.0)), retry_if=lambda e: True,
                   sleep=clock.sleep, clock=clock)
    assert clock.sleeps == [4.0, 4.0, 4.0] and fn.calls == 4


def test_retry_call_does_not_retry_what_retry_if_rejects() -> None:
    """A failure outside ``retry_if`` propagates at once, unslept."""
    clock, fn = FakeClock(), Flaky(1, lambda: KeyError("k"))
    with pytest.raises(KeyError):
        retry_call(fn, policy=Retry(Fixed(1.0)), retry_if=lambda e: isinstance(e, OSError),
                   sleep=clock.sleep, clock=clock)
    assert fn.calls == 1 and clock.sleeps == []


def test_retry_call_stops_when_sleep_reports_a_stop() -> None:
    """``sleep`` returning True ends the sequence; the last failure is the cause."""
    fn = Flaky(5, lambda: OSError("down"))
    with pytest.raises(RetryInterrupted) as info:
        retry_call(fn, policy=Retry(Fixed(1.0)), retry_if=lambda e: True,
                   sleep=lambda s: True, clock=lambda: 0.0)
    assert fn.calls == 1 and isinstance(info.value.__cause__, OSError)


# ---------------------------------------------------------------- the agent's policies


@given(st.integers(min_value=1, max_value=200), _UNIT,
       st.floats(min_value=0.01, max_value=100.0), st.floats(min_value=1.0, max_value=1e4))
def test_hub_backoff_is_the_formula_it_always_had(
        failures: int, draw: float, base: float, spread: float) -> None:
    """Full jitter above ``base_s`` under ``min(cap_s, base_s * 2**(n-1))``."""
    backoff = Backoff(base_s=base, cap_s=base * spread)
    ceiling = min(backoff.cap_s, backoff.base_s * 2.0 ** min(failures - 1, 64))
    assert backoff.ceiling(failures) == ceiling
    assert backoff.wait(failures, lambda: draw) == base + draw * (ceiling - base)


@given(st.integers(min_value=0, max_value=10))
def test_dispatch_retry_is_the_formula_it_always_had(attempt: int) -> None:
    """Four tries, 0.5 s doubling to a 5 s cap."""
    retry = DispatchRetry()
    old = None if attempt >= 4 else min(5.0, 0.5 * 2.0 ** max(0, attempt - 1))
    assert retry(attempt) == old


@given(st.integers(min_value=0, max_value=50), _AGES)
def test_poll_policies_are_the_formulas_they_always_had(polls: int, age: float) -> None:
    """PollPolicy: ``first_s`` first, then ``base + growth * age`` capped; WatchPolicy alike."""
    poll, watch = PollPolicy(), WatchPolicy()
    old_poll = poll.first_s if polls <= 0 else max(
        0.0, min(poll.cap_s, poll.base_s + poll.growth * max(0.0, age)))
    old_watch = max(0.0, min(watch.cap_s, watch.base_s + watch.growth * max(0.0, age)))
    assert poll(polls, age) == old_poll
    assert watch(age) == old_watch


def test_get_retry_startup_and_step_schedules() -> None:
    """GET: 0.1 s doubling; start-up: 1, 2, 5, 10 then 30 s; guest reads: 1 s then 2 s."""
    from felhom_agent.daemon import runner
    from felhom_agent.proxmox import transport
    from felhom_agent.signedops import steps

    get = transport._GET_RETRY_WAIT
    assert [get(Attempt(n)) for n in (1, 2, 3)] == [0.1 * 2**a for a in range(3)]
    startup = runner._STARTUP_RETRY
    assert [startup.delay(Attempt(n)) for n in range(1, 8)] == [1.0, 2.0, 5.0, 10.0, 30.0,
                                                                 30.0, 30.0]
    reads = steps._READ_RETRY
    assert [reads.delay(Attempt(n)) for n in (1, 2, 3)] == [1.0, 2.0, None]
