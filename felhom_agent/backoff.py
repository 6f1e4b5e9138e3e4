"""Retry and poll timing as pure values: wait strategies, stop rules, and one retry runner.

Every wait the agent computes between two tries -- the hub loop after a failed report, a
re-dispatch PVE proved safe, a GET retried after a dropped connection, start-up while PVE is
not answering, a signed op's guest read, and the two task-poll schedules -- is a *wait
strategy* from this module, in the style of the ``tenacity`` library:

* a strategy maps an :class:`Attempt` (how many tries are done, how long since the first)
  to seconds; :class:`Fixed`, :class:`Exponential`, :class:`Incrementing` (linear in the try
  count) and :class:`Proportional` (linear in the elapsed time) are the shapes, each with an
  optional cap; :class:`FullJitter` draws uniformly between a floor and another strategy;
  :class:`Chain` uses one strategy per try and then keeps the last; :class:`FirstThen` gives
  the wait before the very first try; ``a + b`` adds two strategies;
* a *stop rule* says when to give up: :class:`StopAfterAttempt`, :class:`StopAfterDelay`
  (a deadline), :data:`NEVER`; ``a | b`` stops when either does;
* :class:`Retry` joins a strategy and a stop rule: :meth:`Retry.delay` is the seconds to wait
  after a failed try, or ``None`` to give up;
* :func:`retry_call` runs a callable under a :class:`Retry` with an injected clock and sleep.

Nothing here reads a clock or sleeps by itself: strategies and stops are plain functions of
an :class:`Attempt`, and :func:`retry_call` is handed ``clock`` and ``sleep``, so every rule
is a unit test that takes microseconds. Random draws come from an injected ``rng`` returning
floats in ``[0, 1)``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Final, TypeVar

import attrs

from felhom_agent.errors import AgentError

__all__ = [
    "NEVER",
    "Attempt",
    "Chain",
    "Exponential",
    "FirstThen",
    "Fixed",
    "FullJitter",
    "Incrementing",
    "Proportional",
    "Retry",
    "RetryInterrupted",
    "Stop",
    "StopAfterAttempt",
    "StopAfterDelay",
    "Wait",
    "retry_call",
]

T = TypeVar("T")


@attrs.frozen
class Attempt:
    """Where a retry or poll sequence stands.

    Args:
        number: tries done so far (failures for a retry, polls for a poll loop); ``0``
            before the first.
        elapsed_s: seconds since the sequence began (for a poll: the age that drives it).
    """

    number: int
    elapsed_s: float = 0.0


def _non_negative(_inst: object, attr: attrs.Attribute[float], value: float) -> None:
    if not value >= 0:  # also refuses NaN
        raise ValueError(f"{attr.name} must be >= 0, got {value!r}")


def _cap(value: float, cap_s: float) -> float:
    return max(0.0, min(cap_s, value))


@attrs.frozen
class Wait:
    """A wait strategy: :meth:`__call__` gives the seconds to wait after ``attempt``."""

    def __call__(self, attempt: Attempt) -> float:
        raise NotImplementedError

    def __add__(self, other: Wait) -> Wait:
        return _Sum(self, other)


@attrs.frozen
class _Sum(Wait):
    first: Wait
    second: Wait

    def __call__(self, attempt: Attempt) -> float:
        return self.first(attempt) + self.second(attempt)


@attrs.frozen
class Fixed(Wait):
    """Always ``seconds``."""

    seconds: float = attrs.field(validator=_non_negative)

    def __call__(self, attempt: Attempt) -> float:
        return self.seconds


@attrs.frozen
class Exponential(Wait):
    """``first_s * factor ** (n - 1)`` after the n-th try (``first_s`` for n <= 1), capped.

    An overflowing power (a very long outage with ``factor > 1``) is the cap.
    """

    first_s: float = attrs.field(validator=_non_negative)
    factor: float = attrs.field(default=2.0, validator=_non_negative)
    cap_s: float = attrs.field(default=math.inf, validator=_non_negative)

    def __call__(self, attempt: Attempt) -> float:
        try:
            value = self.first_s * self.factor ** max(0, attempt.number - 1)
        except OverflowError:
            return self.cap_s
        return _cap(value, self.cap_s)


@attrs.frozen
class Incrementing(Wait):
    """``start_s + increment_s * (n - 1)`` after the n-th try (``start_s`` for n <= 1), capped."""

    start_s: float = attrs.field(validator=_non_negative)
    increment_s: float = attrs.field(default=0.0)
    cap_s: float = attrs.field(default=math.inf, validator=_non_negative)

    def __call__(self, attempt: Attempt) -> float:
        return _cap(self.start_s + self.increment_s * max(0, attempt.number - 1), self.cap_s)


@attrs.frozen
class Proportional(Wait):
    """``base_s + growth * elapsed_s`` (negative ages count as 0), capped.

    For polling: the wait grows with the age of what is watched, so the detection lag stays a
    fixed fraction of that age while the number of polls grows only logarithmically.
    """

    base_s: float = attrs.field(validator=_non_negative)
    growth: float = attrs.field(default=0.0, validator=_non_negative)
    cap_s: float = attrs.field(default=math.inf, validator=_non_negative)

    def __call__(self, attempt: Attempt) -> float:
        return _cap(self.base_s + self.growth * max(0.0, attempt.elapsed_s), self.cap_s)


@attrs.frozen
class FullJitter(Wait):
    """A uniform draw in ``[floor_s, max(floor_s, ceiling(attempt))]``.

    "Full jitter" spreads many clients that failed at the same moment; the floor keeps a draw
    near zero from hammering a server that is just coming back.

    Args:
        ceiling: the strategy giving the largest wait.
        floor_s: the smallest wait.
        rng: returns floats in ``[0, 1)`` (injected: reproducible in tests).
    """

    ceiling: Wait
    floor_s: float = attrs.field(validator=_non_negative)
    rng: Callable[[], float]

    def __call__(self, attempt: Attempt) -> float:
        top = max(self.floor_s, self.ceiling(attempt))
        return self.floor_s + self.rng() * (top - self.floor_s)


@attrs.frozen
class Chain(Wait):
    """The n-th strategy after the n-th try (the first for n <= 1); the last one thereafter."""

    waits: tuple[Wait, ...] = attrs.field()

    @waits.validator
    def _some(self, _attr: object, value: tuple[Wait, ...]) -> None:
        if not value:
            raise ValueError("a chain needs at least one wait")

    @classmethod
    def of_seconds(cls, *seconds: float) -> Chain:
        """A chain of fixed waits: ``Chain.of_seconds(1, 2, 5)``."""
        waits: tuple[Wait, ...] = tuple(Fixed(s) for s in seconds)
        return cls(waits)

    def __call__(self, attempt: Attempt) -> float:
        index = min(max(attempt.number, 1), len(self.waits)) - 1
        return self.waits[index](attempt)


@attrs.frozen
class FirstThen(Wait):
    """``first_s`` before the first try (``number == 0``), then ``then``."""

    first_s: float = attrs.field(validator=_non_negative)
    then: Wait

    def __call__(self, attempt: Attempt) -> float:
        return self.first_s if attempt.number <= 0 else self.then(attempt)


@attrs.frozen
class Stop:
    """A stop rule: :meth:`__call__` is True when no further try should be made."""

    def __call__(self, attempt: Attempt) -> bool:
        raise NotImplementedError

    def __or__(self, other: Stop) -> Stop:
        return _Either(self, other)


@attrs.frozen
class _Either(Stop):
    first: Stop
    second: Stop

    def __call__(self, attempt: Attempt) -> bool:
        return self.first(attempt) or self.second(attempt)


@attrs.frozen
class _Never(Stop):
    def __call__(self, attempt: Attempt) -> bool:
        return False


#: Never give up (the caller's stop event ends the sequence).
NEVER: Final[Stop] = _Never()


@attrs.frozen
class StopAfterAttempt(Stop):
    """Give up once ``attempts`` tries were made."""

    attempts: int

    def __call__(self, attempt: Attempt) -> bool:
        return attempt.number >= self.attempts


@attrs.frozen
class StopAfterDelay(Stop):
    """Give up once ``seconds`` have passed since the first try (a deadline)."""

    seconds: float

    def __call__(self, attempt: Attempt) -> bool:
        return attempt.elapsed_s >= self.seconds


@attrs.frozen
class Retry:
    """A wait strategy and a stop rule.

    Args:
        wait: seconds to wait after a failed try.
        stop: when to give up (default: never).
    """

    wait: Wait
    stop: Stop = NEVER

    def delay(self, attempt: Attempt) -> float | None:
        """Seconds to wait after the try ``attempt`` describes, or ``None``: give up."""
        if self.stop(attempt):
            return None
        return self.wait(attempt)


class RetryInterrupted(AgentError):
    """The injected sleep reported a stop request; ``__cause__`` is the last failure."""


def retry_call(
    fn: Callable[[], T],
    *,
    policy: Retry,
    retry_if: Callable[[BaseException], bool],
    sleep: Callable[[float], object],
    clock: Callable[[], float] = time.monotonic,
    before_sleep: Callable[[Attempt, BaseException, float], None] | None = None,
) -> T:
    """Call ``fn`` until it returns, retrying failures ``retry_if`` accepts under ``policy``.

    Args:
        fn: the try.
        policy: waits and when to give up.
        retry_if: which exceptions are retried (any other propagates at once).
        sleep: waits the given seconds; returning ``True`` means "stop requested".
        clock: monotonic seconds, for :class:`StopAfterDelay` and ``elapsed_s``.
        before_sleep: told of each retry (the attempt, the error, the wait) before the wait.

    Raises:
        RetryInterrupted: ``sleep`` returned ``True`` (the last failure is the cause).
        BaseException: the last failure, when ``policy`` gives up, or any failure that
            ``retry_if`` rejects.
    """
    start = clock()
    done = 0
    while True:
        try:
            return fn()
        except BaseException as err:
            if not retry_if(err):
                raise
            done += 1
            attempt = Attempt(done, clock() - start)
            delay = policy.delay(attempt)
            if delay is None:
                raise
            if before_sleep is not None:
                before_sleep(attempt, err, delay)
            if sleep(delay) is True:
                raise RetryInterrupted(f"stopped while retrying after: {err}") from err
