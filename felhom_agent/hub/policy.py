"""The hub loop's failure policy as pure objects: outcome in, next wait out, no sleeping.

``docs/architecture.md`` ("Hub protocol"): network errors and 5xx back off exponentially with jitter
up to a cap, then keep trying at the cap; 401/403 is retried slowly; a malformed envelope is skipped
at the normal interval; success resets everything. Keeping this pure (no clock, no sleep, the random
source passed in) means every rule is a unit test of a few microseconds.

Jitter is "full jitter" above a floor: the n-th consecutive failure waits a uniform draw from
``[base_s, min(cap_s, base_s * 2**(n-1))]``. Full jitter spreads a fleet of agents that all
lost the hub at the same moment; the floor keeps a draw near zero from hammering a hub that is
just coming back. Once the ceiling reaches ``cap_s`` it stays there ("steady at the cap").
The formula is :class:`felhom_agent.backoff.FullJitter` over
:class:`~felhom_agent.backoff.Exponential`; this module only maps outcomes to waits.
"""

from __future__ import annotations

import enum
from collections.abc import Callable

import attrs

from felhom_agent.backoff import Attempt, Exponential, FullJitter

__all__ = ["Backoff", "Outcome", "PolicyState", "RetryPolicy"]


class Outcome(enum.Enum):
    """How one poll ended, as far as the wait before the next one is concerned."""

    OK = "ok"
    #: the hub answered but the envelope was unusable; the report was delivered.
    MALFORMED = "malformed"
    #: 401/403: the token is wrong or revoked; asking often does not help.
    AUTH = "auth"
    #: network error, timeout, 5xx, unexpected status or an unexpected exception.
    TRANSIENT = "transient"


def _positive(_inst: object, attr: attrs.Attribute[float], value: float) -> None:
    if not value > 0:
        raise ValueError(f"{attr.name} must be > 0, got {value!r}")


@attrs.frozen
class Backoff:
    """Exponential backoff with full jitter above a floor, capped.

    Args:
        base_s: the first ceiling and the floor of every draw.
        cap_s: the largest ceiling; reached after ``log2(cap_s/base_s) + 1`` failures.
    """

    base_s: float = attrs.field(default=1.0, validator=_positive)
    cap_s: float = attrs.field(default=300.0, validator=_positive)

    def __attrs_post_init__(self) -> None:
        if self.cap_s < self.base_s:
            raise ValueError(f"cap_s {self.cap_s} is below base_s {self.base_s}")

    def _ceiling(self) -> Exponential:
        return Exponential(self.base_s, 2.0, self.cap_s)

    def ceiling(self, failures: int) -> float:
        """The largest wait after ``failures`` consecutive failures (``failures >= 1``)."""
        if failures < 1:
            raise ValueError("ceiling() needs at least one failure")
        return self._ceiling()(Attempt(failures))

    def wait(self, failures: int, rng: Callable[[], float]) -> float:
        """A jittered wait in ``[base_s, ceiling(failures)]``; ``rng`` returns floats in [0, 1)."""
        if failures < 1:
            raise ValueError("wait() needs at least one failure")
        return FullJitter(self._ceiling(), self.base_s, rng)(Attempt(failures))


@attrs.frozen
class PolicyState:
    """What the policy remembers between polls: consecutive transient failures."""

    failures: int = 0


@attrs.frozen
class RetryPolicy:
    """Map a poll's outcome to the wait before the next poll.

    Args:
        backoff: the transient-failure backoff.
        auth_retry_s: the slow, fixed retry after 401/403.
    """

    backoff: Backoff = attrs.Factory(Backoff)
    auth_retry_s: float = attrs.field(default=300.0, validator=_positive)

    def next_wait(
        self,
        state: PolicyState,
        outcome: Outcome,
        *,
        interval_s: float,
        rng: Callable[[], float],
    ) -> tuple[float, PolicyState]:
        """Return ``(seconds to wait, new state)``.

        Args:
            state: the state after the previous poll.
            outcome: how this poll ended.
            interval_s: the normal interval (the envelope's, or the configured default).
            rng: uniform random source in [0, 1), injected for reproducible tests.
        """
        if outcome is Outcome.TRANSIENT:
            failures = state.failures + 1
            return self.backoff.wait(failures, rng), PolicyState(failures=failures)
        # The hub answered (even if with 401 or garbage): the network path is fine again.
        fresh = PolicyState()
        if outcome is Outcome.AUTH:
            return self.auth_retry_s, fresh
        return interval_s, fresh
