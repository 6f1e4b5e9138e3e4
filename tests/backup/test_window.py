"""The backup window: inside, midnight wrap, next opening, in injected time zones (with DST).

No test reads the machine's time zone or clock: zones are fixed offsets or named IANA zones
passed in, and instants are built from explicit local times.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from felhom_agent.backup.window import (
    describe,
    inside,
    inside_at,
    local_time,
    next_open,
    parse_window,
)
from felhom_agent.core.backup_policy import Window
from tests.support.hypo import examples

UTC = dt.UTC
PLUS2 = dt.timezone(dt.timedelta(hours=2))
BUDAPEST = ZoneInfo("Europe/Budapest")  # DST: +1 / +2, jumps at 02:00 and 03:00 local
NEW_YORK = ZoneInfo("America/New_York")
LORD_HOWE = ZoneInfo("Australia/Lord_Howe")  # a 30-minute DST shift
ZONES = [UTC, PLUS2, BUDAPEST, NEW_YORK, LORD_HOWE]


def at(tz: dt.tzinfo, local: str, *, fold: int = 0) -> float:
    """The POSIX time of a local wall-clock time in ``tz`` (``"2024-05-01 02:30"``)."""
    return dt.datetime.fromisoformat(local).replace(tzinfo=tz, fold=fold).timestamp()


@pytest.mark.parametrize(
    ("window", "hhmm", "expected"),
    [
        ("01:00-05:00", (0, 59), False), ("01:00-05:00", (1, 0), True),
        ("01:00-05:00", (4, 59), True), ("01:00-05:00", (5, 0), False),
        ("22:00-04:00", (21, 59), False), ("22:00-04:00", (22, 0), True),
        ("22:00-04:00", (23, 59), True), ("22:00-04:00", (0, 0), True),
        ("22:00-04:00", (3, 59), True), ("22:00-04:00", (4, 0), False),
        ("22:00-04:00", (12, 0), False), ("23:59-00:00", (23, 59), True),
        ("23:59-00:00", (0, 0), False),
    ],
)
def test_inside_with_and_without_wrap(window: str, hhmm: tuple[int, int], expected: bool
                                      ) -> None:
    """Start inclusive, end exclusive; an end before the start wraps past midnight."""
    assert inside(parse_window(window), dt.time(*hhmm)) is expected


def test_seconds_count_at_the_end_of_the_window() -> None:
    """04:59:59.9 is inside 01:00-05:00; a datetime is reduced to its time of day."""
    window = parse_window("01:00-05:00")
    assert inside(window, dt.time(4, 59, 59, 900_000))
    assert inside(window, dt.datetime(2024, 5, 1, 4, 59, 59, tzinfo=PLUS2))
    assert inside(None, dt.time(12, 0))


def test_inside_at_uses_the_given_zone_not_the_machines() -> None:
    """The same instant is inside the window in one zone and outside in another."""
    window = parse_window("01:00-05:00")
    instant = at(UTC, "2024-05-01 00:30")  # 00:30 UTC = 02:30 at +2
    assert not inside_at(window, instant, UTC)
    assert inside_at(window, instant, PLUS2)
    assert local_time(instant, PLUS2).hour == 2
    assert describe(instant, PLUS2) == "2024-05-01T00:30:00Z (02:30 node time)"


def test_next_open_simple_cases() -> None:
    """Open now: now. Before the start: today's start. After the end: tomorrow's start."""
    window = parse_window("01:00-05:00")
    inside_now = at(PLUS2, "2024-05-01 02:00:17")
    assert next_open(window, inside_now, PLUS2) == inside_now
    early, late = at(PLUS2, "2024-05-01 00:10"), at(PLUS2, "2024-05-01 05:00")
    assert next_open(window, early, PLUS2) == at(PLUS2, "2024-05-01 01:00")
    assert next_open(window, late, PLUS2) == at(PLUS2, "2024-05-02 01:00")
    assert next_open(None, 123.5, PLUS2) == 123.5


def test_next_open_wrapping_window() -> None:
    """22:00-04:00 at noon opens at 22:00 today; at 03:00 it is open."""
    window = parse_window("22:00-04:00")
    assert next_open(window, at(UTC, "2024-01-31 12:00"), UTC) == at(UTC, "2024-01-31 22:00")
    assert next_open(window, at(UTC, "2024-02-01 03:00"), UTC) == at(UTC, "2024-02-01 03:00")
    # across a month and a year boundary
    assert next_open(window, at(UTC, "2024-12-31 04:00"), UTC) == at(UTC, "2024-12-31 22:00")


def test_window_inside_a_spring_forward_gap_stays_shut_that_day() -> None:
    """Budapest skips 02:00-03:00 on 2024-03-31: 02:15-02:45 opens the next day."""
    window = parse_window("02:15-02:45")
    before = at(BUDAPEST, "2024-03-31 01:00")
    opened = next_open(window, before, BUDAPEST)
    assert local_time(opened, BUDAPEST).replace(tzinfo=None) == dt.datetime(2024, 4, 1, 2, 15)


def test_window_containing_the_jump_opens_at_the_jump() -> None:
    """02:30-03:30 on the spring-forward day opens at 03:00 local (the first instant after it)."""
    window = parse_window("02:30-03:30")
    before = at(BUDAPEST, "2024-03-31 01:00")
    opened = next_open(window, before, BUDAPEST)
    assert local_time(opened, BUDAPEST).replace(tzinfo=None) == dt.datetime(2024, 3, 31, 3, 0)
    assert opened == at(UTC, "2024-03-31 01:00")


def test_window_in_a_fall_back_fold_opens_twice() -> None:
    """02:10-02:20 happens twice on 2024-10-27 in Budapest (03:00 goes back to 02:00)."""
    window = parse_window("02:10-02:20")
    first = next_open(window, at(BUDAPEST, "2024-10-27 01:00"), BUDAPEST)
    assert first == at(BUDAPEST, "2024-10-27 02:10", fold=0)
    after_first = at(BUDAPEST, "2024-10-27 02:30", fold=0)
    second = next_open(window, after_first, BUDAPEST)
    assert second == at(BUDAPEST, "2024-10-27 02:10", fold=1)
    assert second - first == 3600


def test_window_reentered_by_a_fall_back_jump_opens_at_the_jump() -> None:
    """01:00-02:30: after it closes at 02:30 (summer time) the clock jumps from 03:00 back to
    02:00, inside the window again: it re-opens at the jump."""
    window = parse_window("01:00-02:30")
    closed = at(BUDAPEST, "2024-10-27 02:40", fold=0)
    assert not inside_at(window, closed, BUDAPEST)
    reopened = next_open(window, closed, BUDAPEST)
    assert reopened == at(UTC, "2024-10-27 01:00")  # 03:00 CEST == 02:00 CET == 01:00 UTC
    assert local_time(reopened, BUDAPEST).hour == 2


_MINUTES = st.integers(0, 1439)
_WINDOWS = st.tuples(_MINUTES, _MINUTES).filter(lambda t: t[0] != t[1]).map(
    lambda t: Window(*t))
# 2023-2026, which includes DST changes of all the zones above.
_INSTANTS = st.integers(1_672_531_200, 1_798_761_600).map(float) | st.floats(
    1_672_531_200, 1_798_761_600)


@settings(max_examples=examples(500))
@given(_WINDOWS, st.integers(0, 86_399_999_999).map(lambda us: us / 60_000_000))
def test_wrap_symmetry(window: Window, minute: float) -> None:
    """A window and its swapped twin (end-start) split the day: exactly one holds any time."""
    twin = Window(window.end, window.start)
    assert window.contains_minute(minute) != twin.contains_minute(minute)
    assert window.length_min + twin.length_min == 1440


def _check_first_open(window: Window, now: float, tz: dt.tzinfo) -> None:
    """next_open(now) is open, is >= now, and nothing between now and it is open.

    "Nothing between" is checked at every whole minute in between (windows start and end on
    whole minutes of wall time, and every zone's offset is whole minutes) and at the second
    before the answer.
    """
    opened = next_open(window, now, tz)
    assert opened >= now
    assert inside_at(window, opened, tz)
    if opened == now:
        return
    assert opened - now <= 2 * 86400
    assert not inside_at(window, now, tz)
    assert not inside_at(window, max(now, opened - 1), tz)
    t = now - (now % 60) + 60
    while t < opened:
        assert not inside_at(window, t, tz), (window, now, t, opened)
        t += 60


@settings(max_examples=examples(300))
@given(_WINDOWS, _INSTANTS, st.sampled_from(ZONES))
def test_next_open_is_the_first_open_instant(window: Window, now: float, tz: dt.tzinfo
                                             ) -> None:
    """The first open instant at or after now, from any instant in 2023-2026."""
    _check_first_open(window, now, tz)


@settings(max_examples=examples(200))
@given(_WINDOWS, _INSTANTS)
def test_fixed_offset_answer_is_start_time(window: Window, now: float) -> None:
    """Without DST the window opens at its start wall time, within one day."""
    opened = next_open(window, now, PLUS2)
    if opened != now:
        local = local_time(opened, PLUS2)
        assert local.hour * 60 + local.minute == window.start
        assert local.second == 0
        assert opened - now <= 86400


#: Days on which the named zones change their offset (2024), to aim the property at them.
_DST_DAYS = [
    (BUDAPEST, dt.date(2024, 3, 31)), (BUDAPEST, dt.date(2024, 10, 27)),
    (NEW_YORK, dt.date(2024, 3, 10)), (NEW_YORK, dt.date(2024, 11, 3)),
    (LORD_HOWE, dt.date(2024, 4, 7)), (LORD_HOWE, dt.date(2024, 10, 6)),
]


#: Windows with their edges mostly in the small hours, where the zones above change offset.
_NIGHT = st.integers(60, 240) | st.integers(0, 1439)
_NIGHT_WINDOWS = st.tuples(_NIGHT, _NIGHT).filter(lambda t: t[0] != t[1]).map(
    lambda t: Window(*t))


@settings(max_examples=examples(300))
@given(_NIGHT_WINDOWS, st.sampled_from(_DST_DAYS), st.integers(-2 * 86400, 86400))
def test_next_open_around_dst_changes(window: Window, day: tuple[dt.tzinfo, dt.date],
                                      shift: int) -> None:
    """The first-open-instant property, from instants within two days of a DST change."""
    tz, date = day
    now = at(tz, f"{date.isoformat()} 02:00") + shift
    _check_first_open(window, now, tz)
