"""A fake clock for code that takes an injected ``clock`` (and ``sleep``).

One class serves both uses: a settable wall clock (journal and audit times) and a monotonic
clock that only moves when the code under test sleeps (task waiters, backoff). Nothing real
ever waits.
"""

from __future__ import annotations

__all__ = ["WALL_T0", "FakeClock"]

#: A fixed wall-clock start (2026-09-21T14:13:20Z) for journal and audit times.
WALL_T0 = 1_790_000_000.0


class FakeClock:
    """Time that moves only when a test sets it, advances it or the code sleeps.

    Args:
        now: the starting time in seconds (POSIX seconds for a wall clock, 0 for a
            monotonic one).
    """

    def __init__(self, now: float = 0.0) -> None:
        self.now = now
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move time forward (a test stepping the clock)."""
        self.now += seconds

    def sleep(self, seconds: float) -> bool:
        """Record the sleep and move time forward by it (pass as the code's ``sleep``).

        Returns False: for a stop-aware sleep (:func:`felhom_agent.backoff.retry_call`) it
        never reports a stop.
        """
        self.sleeps.append(seconds)
        self.now += seconds
        return False
