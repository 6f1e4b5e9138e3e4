"""The per-guest API's rules as pure functions and small state machines (clock injected).

``docs/architecture.md`` ("The per-guest local API"):

* :class:`Limits` -- the numbers (``guestapi.*`` plus the fixed protocol limits);
* :func:`check_headers` -- ``Felhom-Guest-API: 1`` is required and any forwarding header
  (``Forwarded``, ``X-Forwarded-*``, ``X-Real-IP``) is refused: a proxy inside the guest must
  not be able to pass on someone else's request, and nothing in a request ever names who
  sent it;
* :class:`TokenBucket` -- the read budget of one guest (429 with ``Retry-After``);
* :func:`check_backup_request` -- one guest-requested backup in flight, at least
  ``backup_min_interval_s`` between accepted requests, at most ``backups_per_day`` in any
  24 hours;
* :class:`RefusalSampler` -- a guest that floods refusals must not flood (and so rotate away)
  the audit log: the first few refusals of each minute are audited one by one, the rest are
  counted into one summary record.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Final, Protocol

import attrs

__all__ = [
    "DAY_S",
    "FORWARDING_HEADERS",
    "GUEST_API_HEADER",
    "Limits",
    "Refusal",
    "RefusalSampler",
    "TokenBucket",
    "check_backup_request",
    "check_headers",
    "retry_after",
]

GUEST_API_HEADER: Final = "Felhom-Guest-API"
#: Headers by which a proxy says on whose behalf it asks: always refused.
FORWARDING_HEADERS: Final = ("forwarded", "x-forwarded-for", "x-forwarded-host",
                             "x-forwarded-proto", "x-real-ip")
DAY_S: Final = 86_400.0


@attrs.frozen
class Limits:
    """What one guest may do.

    Attributes:
        rate_per_s: token bucket refill (requests per second, every request counts).
        burst: token bucket size.
        max_connections: open connections per guest (more are answered 503 and closed).
        timeout_s: a request must arrive complete within this after its first byte (or after
            the previous answer); an answer must be written within it too.
        backup_min_interval_s: between two accepted backup requests of one guest.
        backups_per_day: accepted backup requests of one guest in any 24 hours.
        allow_restart: ``POST /1.0/restart`` is served at all.
        audited_refusals_per_min: refusals of one guest audited one by one per minute; the
            rest go into one summary record.
    """

    rate_per_s: float = 5.0
    burst: int = 10
    max_connections: int = 4
    timeout_s: float = 5.0
    backup_min_interval_s: float = 3600.0
    backups_per_day: int = 4
    allow_restart: bool = False
    audited_refusals_per_min: int = 10


@attrs.frozen
class Refusal:
    """A request the API does not serve: the status, why, and when to try again."""

    status: int
    reason: str
    retry_after_s: int | None = None


class _Headers(Protocol):
    def header(self, name: str) -> str | None: ...

    def has(self, name: str) -> bool: ...


def check_headers(request: _Headers) -> Refusal | None:
    """The header rules of every HTTP request (the serial framing has no headers)."""
    for name in FORWARDING_HEADERS:
        if request.has(name):
            return Refusal(403, f"forwarding header {name} refused: requests are answered "
                           "only for the guest they arrive from, never on someone's behalf")
    if request.header(GUEST_API_HEADER) != "1":
        return Refusal(403, f"header {GUEST_API_HEADER}: 1 is required")
    return None


class TokenBucket:
    """``rate`` tokens per second up to ``burst``; one token per request.

    Args:
        rate: refill per second (> 0).
        burst: capacity; the bucket starts full.
        now: the clock reading at creation (monotonic seconds).
    """

    __slots__ = ("_burst", "_last", "_rate", "_tokens")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._last = now

    def take(self, now: float) -> float:
        """Take a token: ``0.0`` when granted, else the seconds until one is available."""
        if now > self._last:
            self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
            self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self._rate


def retry_after(seconds: float) -> int:
    """A ``Retry-After`` value: whole seconds, at least 1."""
    return max(1, math.ceil(seconds))


def check_backup_request(*, now: float, in_flight: str | None, accepted: Iterable[float],
                         limits: Limits) -> Refusal | None:
    """Whether a guest's backup request may be accepted now.

    Args:
        now: wall-clock seconds.
        in_flight: the operation id of this guest's unfinished backup request, if any.
        accepted: when this guest's earlier backup requests were accepted.
        limits: the guest's limits.
    """
    if in_flight is not None:
        return Refusal(409, f"a backup requested by this guest is not finished yet "
                       f"(operation {in_flight})")
    times = sorted(t for t in accepted if now - t < DAY_S)
    if times and now - times[-1] < limits.backup_min_interval_s:
        wait = limits.backup_min_interval_s - (now - times[-1])
        return Refusal(429, f"backups may be requested at most every "
                       f"{limits.backup_min_interval_s:g} s", retry_after(wait))
    if len(times) >= limits.backups_per_day:
        wait = times[len(times) - limits.backups_per_day] + DAY_S - now
        return Refusal(429, f"at most {limits.backups_per_day} backups may be requested "
                       "in 24 hours", retry_after(wait))
    return None


class RefusalSampler:
    """Which refusals of one guest get their own audit record.

    Per minute (a window starting at the first refusal) the first ``per_minute`` are
    admitted; the others are counted and handed out once, as the number of suppressed
    refusals, when the window is over (:meth:`admit` or :meth:`due`).
    """

    __slots__ = ("_count", "_per_minute", "_start", "_suppressed")

    def __init__(self, per_minute: int) -> None:
        self._per_minute = per_minute
        self._start: float | None = None
        self._count = 0
        self._suppressed = 0

    def admit(self, now: float) -> tuple[bool, int]:
        """Count one refusal: (audit it on its own?, suppressed refusals to summarise now)."""
        summary = self.due(now)
        if self._start is None:
            self._start, self._count = now, 0
        self._count += 1
        if self._count <= self._per_minute:
            return True, summary
        self._suppressed += 1
        return False, summary

    def due(self, now: float) -> int:
        """The suppressed count of a window that has ended (once; 0 otherwise)."""
        if self._start is None or now - self._start < 60.0:
            return 0
        suppressed, self._suppressed = self._suppressed, 0
        self._start, self._count = None, 0
        return suppressed
