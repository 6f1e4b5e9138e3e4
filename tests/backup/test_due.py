"""Due, overdue and next-due from the content listing, with an injected clock and zone."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from felhom_agent.backup.due import DueState, due_state, guest_backups
from felhom_agent.core.backup_policy import BackupPolicy, Window, parse_window
from felhom_agent.proxmox.backup_models import BackupVolume
from tests.backup.helpers import backup
from tests.support.hypo import examples

PLUS1 = dt.timezone(dt.timedelta(hours=1))
BUDAPEST = ZoneInfo("Europe/Budapest")
H = 3600
#: 2024-05-01 12:00:00 at +01:00.
NOON = dt.datetime(2024, 5, 1, 12, tzinfo=PLUS1).timestamp()


def vol(ctime: float, *, vmid: int = 101, subtype: str = "lxc", storage: str = "pbs1",
        size: int = 1000) -> BackupVolume:
    """A backup volume as the content listing would show it."""
    return backup(f"{storage}:backup/ct/{vmid}/{int(ctime)}", vmid=vmid, subtype=subtype,
                  ctime=int(ctime), size=size)


def state(policy: BackupPolicy, volumes: list[BackupVolume], now: float = NOON,
          tz: dt.tzinfo = PLUS1, policy_since: float | None = None) -> DueState:
    """The due state of guest lxc 101."""
    return due_state(policy, vmid=101, guest_type="lxc", volumes=volumes, now=now, tz=tz,
                     policy_since=policy_since)


DAILY = BackupPolicy(storage="pbs1", every_h=24)


def test_no_backup_is_due_now() -> None:
    """Without any backup the guest is due at once (no window), not overdue."""
    s = state(DAILY, [])
    assert (s.due, s.stale, s.in_window, s.overdue, s.count) == (True, True, True, False, 0)
    assert s.newest is None
    assert s.next_due_at == NOON
    assert s.reason == "due: no backup of lxc 101 on pbs1 yet (every 24 h)"


def test_no_backup_is_overdue_only_when_the_policy_is_older_than_a_period() -> None:
    """policy_since decides overdue for a guest without backups."""
    assert not state(DAILY, [], policy_since=NOON - 23 * H).overdue
    late = state(DAILY, [], policy_since=NOON - 25 * H)
    assert late.overdue
    assert late.reason.startswith("overdue, due: no backup")


def test_fresh_backup_is_not_due_and_next_due_is_its_age_limit() -> None:
    """A backup younger than every_h: not due; next due when it is every_h old."""
    newest = vol(NOON - 5 * H)
    s = state(DAILY, [vol(NOON - 50 * H), newest, vol(NOON - 29 * H)])
    assert not s.due and not s.stale and not s.overdue
    assert s.newest == newest
    assert s.count == 3
    assert newest.ctime is not None and s.next_due_at == newest.ctime + 24 * H
    assert s.reason == ("ok: newest backup of lxc 101 on pbs1 is 5.0 h old; next due "
                        "2024-05-02T06:00:00Z (07:00 node time)")


def test_the_boundary_follows_the_rule_ctime_at_least_now_minus_every_h() -> None:
    """A backup exactly every_h old still counts; one second older does not."""
    assert not state(DAILY, [vol(NOON - 24 * H)]).due
    assert state(DAILY, [vol(NOON - 24 * H - 1)]).due


def test_stale_but_outside_the_window_waits_for_it() -> None:
    """Stale at noon with a 01:00-05:00 window: not due, next due at 01:00 tomorrow."""
    policy = BackupPolicy(storage="pbs1", every_h=24, window=parse_window("01:00-05:00"))
    s = state(policy, [vol(NOON - 30 * H)])
    assert s.stale and not s.in_window and not s.due
    assert s.next_due_at == dt.datetime(2024, 5, 2, 1, tzinfo=PLUS1).timestamp()
    assert s.reason.startswith("waiting for the window 01:00-05:00, which opens "
                               "2024-05-02T00:00:00Z (01:00 node time): newest backup of lxc "
                               "101 on pbs1 is 30.0 h")
    inside = state(policy, [vol(NOON - 30 * H)], now=NOON + 14 * H)  # 02:00 next day
    assert inside.due and inside.next_due_at == NOON + 14 * H


def test_the_window_is_node_local_time() -> None:
    """02:30 at the node is inside 01:00-05:00 even where the agent's clock says 00:30 UTC."""
    policy = BackupPolicy(storage="pbs1", every_h=24, window=parse_window("01:00-05:00"))
    now = dt.datetime(2024, 5, 1, 0, 30, tzinfo=dt.UTC).timestamp()
    assert state(policy, [], now=now, tz=BUDAPEST).due
    assert not state(policy, [], now=now, tz=dt.UTC).due


def test_fresh_until_inside_a_wrapping_window() -> None:
    """A backup at 23:00 with every 24 h and 22:00-04:00: next due 23:00 the next day."""
    policy = BackupPolicy(storage="pbs1", every_h=24, window=parse_window("22:00-04:00"))
    made = dt.datetime(2024, 5, 1, 23, tzinfo=PLUS1).timestamp()
    s = state(policy, [vol(made)], now=made + 3600)
    assert s.next_due_at == made + 24 * H


def test_other_guests_types_and_storages_do_not_count() -> None:
    """Only backups of this vmid *and* type on the policy's storage count."""
    others = [vol(NOON - H, vmid=102), vol(NOON - H, subtype="qemu"),
              vol(NOON - H, storage="local"), vol(NOON - H, subtype="unknown")]
    s = state(DAILY, others)
    assert s.due and s.count == 0 and s.newest is None
    assert guest_backups(others, vmid=101, guest_type="qemu", storage="pbs1") == (others[1],)


def test_undated_backups_are_never_the_newest() -> None:
    """A backup without ctime counts as a backup of the guest, but makes nobody fresh."""
    undated = backup("pbs1:backup/ct/101/odd", ctime=None)
    s = state(DAILY, [undated])
    assert s.due and s.count == 1 and s.newest is None
    assert s.reason.startswith("due: no backup of lxc 101 on pbs1 yet")
    dated = vol(NOON - H)
    s = state(DAILY, [undated, dated])
    assert not s.due and s.count == 2 and s.newest == dated
    assert guest_backups([undated, dated], vmid=101, guest_type="lxc",
                         storage="pbs1") == (dated, undated)


def test_overdue_after_two_periods() -> None:
    """Due for longer than every_h more (newest older than 2 x every_h) is overdue."""
    assert not state(DAILY, [vol(NOON - 47 * H)]).overdue
    s = state(DAILY, [vol(NOON - 49 * H)])
    assert s.overdue and s.due
    assert s.reason.startswith("overdue, due: newest backup of lxc 101 on pbs1 is 49.0 h old")
    policy = BackupPolicy(storage="pbs1", every_h=24, window=parse_window("01:00-05:00"))
    waiting = state(policy, [vol(NOON - 49 * H)])
    assert waiting.overdue and not waiting.due


@pytest.mark.parametrize("every_h", [0.25, 1, 168])
def test_fractional_and_long_periods(every_h: float) -> None:
    """every_h is hours as a number; a backup half a period old is fresh."""
    policy = BackupPolicy(storage="pbs1", every_h=every_h)
    half = every_h * H / 2
    assert not state(policy, [vol(NOON - half)]).due
    assert state(policy, [vol(NOON - 2 * half - 1)]).due


def test_a_backup_from_the_future_is_fresh() -> None:
    """A ctime after now (clock skew between agent and node) is fresh, not an error."""
    s = state(DAILY, [vol(NOON + 600)])
    assert not s.due and s.next_due_at == NOON + 600 + 24 * H


_WINDOWS = st.none() | st.tuples(st.integers(0, 1439), st.integers(0, 1439)).filter(
    lambda t: t[0] != t[1]).map(lambda t: Window(*t))


@settings(max_examples=examples(300))
@given(
    window=_WINDOWS,
    every_h=st.integers(1, 72),
    ages=st.lists(st.integers(-3600, 10 * 86400), max_size=4),
    now=st.integers(1_704_067_200, 1_767_225_600),
    tz=st.sampled_from([PLUS1, BUDAPEST, dt.UTC]),
)
def test_due_and_next_due_agree(window: Window | None, every_h: int, ages: list[int],
                                now: int, tz: dt.tzinfo) -> None:
    """due means next_due_at == now; otherwise nothing is due before next_due_at, and it is
    due right after it. Reported at next_due_at, nothing has changed but the clock."""
    policy = BackupPolicy(storage="pbs1", every_h=every_h, window=window)
    volumes = [vol(now - age) for age in ages]
    s = state(policy, volumes, now=now, tz=tz)
    assert s.stale == (not ages or min(ages) > every_h * H)
    if s.due:
        assert s.next_due_at == now
        return
    assert s.next_due_at >= now
    for t in (now, (now + s.next_due_at) / 2, s.next_due_at - 0.001):
        if now <= t < s.next_due_at:
            assert not state(policy, volumes, now=t, tz=tz).due
    after = state(policy, volumes, now=s.next_due_at + 0.001, tz=tz)
    assert after.due
    assert after.next_due_at == s.next_due_at + 0.001
