"""The per-guest API's pure rules: headers, the token bucket, backup limits, audit sampling."""

from __future__ import annotations

import pytest

from felhom_agent.guestapi.httpwire import HttpRequest, RequestReader
from felhom_agent.guestapi.policy import (
    DAY_S,
    Limits,
    RefusalSampler,
    TokenBucket,
    check_backup_request,
    check_headers,
)


def _request(*headers: str) -> HttpRequest:
    reader = RequestReader()
    reader.feed(("GET /1.0 HTTP/1.1\r\n" + "".join(h + "\r\n" for h in headers) + "\r\n")
                .encode())
    request = reader.next()
    assert request is not None
    return request


def test_the_api_header_is_required() -> None:
    """Without ``Felhom-Guest-API: 1`` (or with another value) the request is refused."""
    assert check_headers(_request("Felhom-Guest-API: 1")) is None
    for headers in ((), ("Felhom-Guest-API: 2",), ("Felhom-Guest-API: true",)):
        refusal = check_headers(_request(*headers))
        assert refusal is not None and refusal.status == 403


@pytest.mark.parametrize("header", [
    "Forwarded: for=10.0.0.2", "X-Forwarded-For: 10.0.0.2", "x-forwarded-for: 1.2.3.4",
    "X-Forwarded-Host: pve", "X-Real-IP: 10.0.0.2",
])
def test_forwarding_headers_are_refused_even_with_the_api_header(header: str) -> None:
    """A proxy marker is refused: nothing in a request may say on whose behalf it comes."""
    refusal = check_headers(_request("Felhom-Guest-API: 1", header))
    assert refusal is not None and refusal.status == 403
    assert "forwarding header" in refusal.reason


def test_token_bucket_burst_then_rate() -> None:
    """The burst is served at once; then one token per 1/rate seconds; the wait is exact."""
    bucket = TokenBucket(5.0, 10, now=0.0)
    assert [bucket.take(0.0) for _ in range(10)] == [0.0] * 10
    wait = bucket.take(0.0)
    assert wait == pytest.approx(0.2)
    assert bucket.take(0.1) == pytest.approx(0.1)
    assert bucket.take(0.2) == 0.0
    assert bucket.take(100.0) == 0.0  # refilled, but never beyond the burst:
    assert sum(1 for _ in range(20) if bucket.take(100.0) == 0.0) == 9


def test_backup_limits_in_flight_interval_and_day() -> None:
    """One in flight; min interval with Retry-After; at most N per 24 h (rolling)."""
    limits = Limits(backup_min_interval_s=3600, backups_per_day=4)
    busy = check_backup_request(now=0, in_flight="op-1", accepted=(), limits=limits)
    assert busy is not None and busy.status == 409 and "op-1" in busy.reason
    assert check_backup_request(now=0, in_flight=None, accepted=(), limits=limits) is None
    soon = check_backup_request(now=1000, in_flight=None, accepted=[0.0], limits=limits)
    assert soon is not None and soon.status == 429 and soon.retry_after_s == 2600
    four = [0.0, 3600.0, 7200.0, 10800.0]
    full = check_backup_request(now=20000, in_flight=None, accepted=four, limits=limits)
    assert full is not None and full.status == 429 and full.retry_after_s == DAY_S - 20000
    assert check_backup_request(now=DAY_S + 1, in_flight=None, accepted=four,
                                limits=limits) is None


def test_refusal_sampler_audits_the_first_per_minute_and_summarises_the_rest() -> None:
    """10 refusals a minute get their own record; the rest are one count, handed out once."""
    sampler = RefusalSampler(10)
    admitted = [sampler.admit(float(i) / 100) for i in range(1000)]
    assert sum(1 for own, _ in admitted if own) == 10
    assert all(summary == 0 for _, summary in admitted)
    assert sampler.due(30.0) == 0
    assert sampler.due(61.0) == 990
    assert sampler.due(62.0) == 0
    own, summary = sampler.admit(200.0)
    assert own and summary == 0
