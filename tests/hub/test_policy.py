"""The failure policy as pure functions: growth, jitter bounds, cap, steady, reset."""

from __future__ import annotations

import random

import pytest

from felhom_agent.hub.policy import Backoff, Outcome, PolicyState, RetryPolicy


def _const(value: float) -> random.Random:
    class _R(random.Random):
        def random(self) -> float:
            return value

    return _R()


def test_ceiling_doubles_from_base() -> None:
    """The ceiling starts at base_s and doubles per consecutive failure."""
    backoff = Backoff(base_s=1.0, cap_s=300.0)
    assert [backoff.ceiling(n) for n in range(1, 8)] == [1, 2, 4, 8, 16, 32, 64]


def test_ceiling_reaches_cap_and_stays() -> None:
    """Once the ceiling hits cap_s it stays there, even after very many failures."""
    backoff = Backoff(base_s=1.0, cap_s=300.0)
    assert backoff.ceiling(9) == 256
    assert backoff.ceiling(10) == 300
    assert all(backoff.ceiling(n) == 300 for n in (11, 50, 10_000))


def test_jitter_bounds() -> None:
    """Every wait is within [base_s, ceiling]: rng 0 gives the floor, rng ~1 the ceiling."""
    backoff = Backoff(base_s=1.0, cap_s=300.0)
    assert backoff.wait(5, lambda: 0.0) == 1.0
    assert backoff.wait(5, lambda: 0.999999) == pytest.approx(16.0, abs=1e-4)
    assert backoff.wait(5, lambda: 0.5) == 8.5
    rng = random.Random(7)
    for failures in range(1, 30):
        wait = backoff.wait(failures, rng.random)
        assert 1.0 <= wait <= backoff.ceiling(failures)


def test_full_jitter_spreads_waits() -> None:
    """At the cap, seeded draws cover most of [base, cap] (full jitter, not a fixed wait)."""
    backoff = Backoff(base_s=1.0, cap_s=300.0)
    rng = random.Random(1)
    waits = [backoff.wait(20, rng.random) for _ in range(500)]
    assert min(waits) < 30 and max(waits) > 270


def test_backoff_rejects_nonsense() -> None:
    """A non-positive base or a cap below base is refused."""
    with pytest.raises(ValueError):
        Backoff(base_s=0)
    with pytest.raises(ValueError):
        Backoff(base_s=10, cap_s=5)
    with pytest.raises(ValueError):
        Backoff().ceiling(0)


def test_transient_failures_grow_then_reset_after_success() -> None:
    """Transient failures back off growing; a success resets to the normal interval."""
    policy = RetryPolicy()
    rng = _const(0.5).random
    state = PolicyState()
    waits = []
    for _ in range(4):
        wait, state = policy.next_wait(state, Outcome.TRANSIENT, interval_s=30, rng=rng)
        waits.append(wait)
    assert waits == [1.0, 1.5, 2.5, 4.5]
    assert state.failures == 4
    wait, state = policy.next_wait(state, Outcome.OK, interval_s=30, rng=rng)
    assert (wait, state) == (30, PolicyState())
    wait, state = policy.next_wait(state, Outcome.TRANSIENT, interval_s=30, rng=rng)
    assert wait == 1.0


def test_steady_at_cap() -> None:
    """After enough failures every wait is drawn under the cap, forever."""
    policy = RetryPolicy(backoff=Backoff(base_s=1.0, cap_s=300.0))
    state = PolicyState()
    rng = _const(0.999999).random
    waits = []
    for _ in range(40):
        wait, state = policy.next_wait(state, Outcome.TRANSIENT, interval_s=30, rng=rng)
        waits.append(wait)
    assert all(w == pytest.approx(300, abs=1e-3) for w in waits[9:])


def test_auth_failure_retries_slowly_at_fixed_interval() -> None:
    """401/403 waits auth_retry_s, without growth, and clears the transient count."""
    policy = RetryPolicy(auth_retry_s=300)
    state = PolicyState(failures=5)
    for _ in range(3):
        wait, state = policy.next_wait(state, Outcome.AUTH, interval_s=30, rng=lambda: 0.0)
        assert wait == 300
        assert state.failures == 0


def test_malformed_answer_waits_normal_interval() -> None:
    """A malformed envelope is skipped at the normal interval (the hub did answer)."""
    policy = RetryPolicy()
    wait, state = policy.next_wait(PolicyState(failures=3), Outcome.MALFORMED, interval_s=30,
                                   rng=lambda: 0.0)
    assert (wait, state) == (30, PolicyState())
