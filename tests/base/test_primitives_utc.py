"""The UTC formatter and parser: one text form, read back exactly."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from felhom_agent.utc import UTC_PATTERN, format_utc, parse_utc

_MOMENTS = st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(9998, 12, 31),
                        timezones=st.just(UTC))


def test_known_values() -> None:
    """POSIX seconds and aware datetimes give the protocol's form; fractions are dropped."""
    assert format_utc(0) == "1970-01-01T00:00:00Z"
    assert format_utc(1795687200.7) == "2026-11-26T10:00:00Z"
    assert format_utc(1795687200.25, millis=True) == "2026-11-26T10:00:00.250Z"
    assert format_utc(1795687200.9994, millis=True) == "2026-11-26T10:00:00.999Z"
    assert format_utc(1795687200, compact=True) == "20261126T100000Z"
    plus_two = datetime(2026, 11, 26, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    assert format_utc(plus_two) == "2026-11-26T10:00:00Z"


def test_a_naive_datetime_is_refused() -> None:
    """A datetime without a zone could be any UTC time; formatting it is a bug."""
    with pytest.raises(ValueError, match="no time zone"):
        format_utc(datetime(2026, 1, 1))


@given(_MOMENTS)
def test_parse_reads_back_what_format_wrote(moment: datetime) -> None:
    """Round trip to the second, and the text always matches the published pattern."""
    text = format_utc(moment)
    assert UTC_PATTERN.fullmatch(text)
    assert parse_utc(text) == moment.replace(microsecond=0)


@given(st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(2200, 1, 1),
                    timezones=st.just(UTC)))
def test_seconds_and_datetimes_agree(moment: datetime) -> None:
    """The same instant formats the same whether given as a datetime or POSIX seconds.

    (Up to 2200 a float holds POSIX seconds to well under a microsecond; far later it does
    not, and the two forms may then differ by the float's own rounding.)
    """
    assert format_utc(moment.timestamp(), millis=True)[:19] == format_utc(moment)[:19]


@pytest.mark.parametrize("text", [
    "2026-11-26T10:00:00", "2026-11-26 10:00:00Z", "2026-11-26T10:00:00.000Z",
    "2026-1-26T10:00:00Z", "2026-02-30T10:00:00Z", "2026-11-26T25:00:00Z",
    "2026-11-26T10:00:00+00:00", " 2026-11-26T10:00:00Z",
])
def test_parse_refuses_every_other_form(text: str) -> None:
    """Only ``YYYY-MM-DDTHH:MM:SSZ`` of a real date and time is read."""
    with pytest.raises(ValueError):
        parse_utc(text)
