"""Retention: the min_keep floor, the prune-backups string, PVE's keep marking, the review."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from felhom_agent.backup.prune import (
    effective_keep,
    format_prune_backups,
    mark_backups,
    prune_options,
    review_prune,
)
from felhom_agent.core.backup_policy import KeepOptions
from felhom_agent.proxmox.backup_models import BackupVolume, PruneMark, PruneMarkKind
from tests.backup.helpers import backup
from tests.support.hypo import examples

UTC = dt.UTC
PLUS2 = dt.timezone(dt.timedelta(hours=2))
_SEQ = itertools.count()


def vol(when: str, *, vmid: int = 101, subtype: str = "lxc", protected: bool = False,
        tz: dt.tzinfo = UTC) -> BackupVolume:
    """A backup made at local time ``when`` (``2024-05-01 01:00``) in ``tz``."""
    ctime = int(dt.datetime.fromisoformat(when).replace(tzinfo=tz).timestamp())
    return backup(f"local:backup/vzdump-{subtype}-{vmid}-{ctime}-{next(_SEQ)}", vmid=vmid,
                  subtype=subtype, ctime=ctime, size=10, protected=protected)


def marks(volumes: list[BackupVolume], keep: KeepOptions, tz: dt.tzinfo = UTC) -> list[str]:
    """The marks, in input order."""
    return [m.mark.value for m in mark_backups(volumes, keep, tz)]


def test_effective_keep_raises_last_to_the_floor() -> None:
    """min_keep raises keep.last (or adds it) only when the options prune at all."""
    assert effective_keep(KeepOptions(last=1, daily=7), 3) == KeepOptions(last=3, daily=7)
    assert effective_keep(KeepOptions(last=5), 3) == KeepOptions(last=5)
    assert effective_keep(KeepOptions(weekly=4), 3) == KeepOptions(last=3, weekly=4)
    assert effective_keep(KeepOptions(all=True), 3) == KeepOptions(all=True)
    assert effective_keep(KeepOptions(last=0), 3) == KeepOptions(last=0)  # keeps all


def test_prune_backups_string() -> None:
    """PVE's property string: evaluation order, zeros left out, keep-all for keep-everything."""
    assert format_prune_backups(KeepOptions(weekly=4, last=3, daily=7)) == (
        "keep-last=3,keep-daily=7,keep-weekly=4")
    assert format_prune_backups(KeepOptions(hourly=0, monthly=2, yearly=1)) == (
        "keep-monthly=2,keep-yearly=1")
    assert format_prune_backups(KeepOptions(all=True)) == "keep-all=1"
    assert format_prune_backups(KeepOptions(daily=0)) == "keep-all=1"


def test_prune_options_for_a_policy() -> None:
    """No keep or a keep-everything policy: no prune call; otherwise the floored string."""
    assert prune_options(None, 3) is None
    assert prune_options(KeepOptions(all=True), 3) is None
    assert prune_options(KeepOptions(last=0, daily=0), 3) is None
    assert prune_options(KeepOptions(last=1, daily=7, weekly=4), 3) == (
        "keep-last=3,keep-daily=7,keep-weekly=4")


def test_keep_last_keeps_the_newest() -> None:
    """keep-last=3 of five: the three newest stay, whatever the input order."""
    v = [vol(f"2024-05-0{d} 01:00") for d in (3, 1, 5, 2, 4)]
    assert marks(v, KeepOptions(last=3)) == ["keep", "remove", "keep", "remove", "keep"]


def test_keep_daily_keeps_the_newest_of_each_day() -> None:
    """Several backups a day: daily keeps the newest of each of the N newest days."""
    v = [vol("2024-05-03 18:00"), vol("2024-05-03 06:00"), vol("2024-05-02 18:00"),
         vol("2024-05-02 06:00"), vol("2024-05-01 12:00")]
    assert marks(v, KeepOptions(daily=2)) == ["keep", "remove", "keep", "remove", "remove"]


def test_later_options_skip_buckets_an_earlier_option_kept() -> None:
    """keep-last=1 keeps the newest; daily=2 then counts only days not yet covered."""
    v = [vol("2024-05-03 18:00"), vol("2024-05-03 06:00"), vol("2024-05-02 18:00"),
         vol("2024-05-01 12:00"), vol("2024-04-30 12:00")]
    assert marks(v, KeepOptions(last=1, daily=2)) == [
        "keep", "remove", "keep", "keep", "remove"]


def test_an_option_stops_at_its_count_and_leaves_the_rest_to_later_options() -> None:
    """hourly=1 keeps one hour; weekly=2 then keeps the newest backup of another week."""
    v = [vol("2024-05-08 10:30"), vol("2024-05-08 10:10"), vol("2024-05-08 09:00"),
         vol("2024-05-01 09:00"), vol("2024-04-30 09:00")]
    # 2024-05-08 is ISO week 19; 05-01 and 04-30 are week 18.
    assert marks(v, KeepOptions(hourly=1, weekly=2)) == [
        "keep", "remove", "remove", "keep", "remove"]


def test_weekly_uses_iso_weeks_across_new_year() -> None:
    """2024-12-30 and 2025-01-02 are the same ISO week (2025-W01); 2024-12-27 is 2024-W52."""
    v = [vol("2025-01-02 01:00"), vol("2024-12-30 01:00"), vol("2024-12-27 01:00")]
    assert marks(v, KeepOptions(weekly=2)) == ["keep", "remove", "keep"]


def test_monthly_and_yearly() -> None:
    """Monthly and yearly buckets by calendar month and year."""
    v = [vol("2024-03-20 01:00"), vol("2024-03-02 01:00"), vol("2024-02-10 01:00"),
         vol("2023-12-31 23:00"), vol("2023-06-01 01:00"), vol("2022-06-01 01:00")]
    assert marks(v, KeepOptions(monthly=2, yearly=2)) == [
        "keep", "remove", "keep", "keep", "remove", "keep"]


def test_buckets_are_node_local_time() -> None:
    """21:30Z and 22:30Z are one UTC day but two days at +02:00 (23:30 and 00:30)."""
    v = [vol("2024-05-01 22:30"), vol("2024-05-01 21:30")]
    assert marks(v, KeepOptions(daily=2), UTC) == ["keep", "remove"]
    assert marks(v, KeepOptions(daily=2), PLUS2) == ["keep", "keep"]


def test_protected_is_neither_removed_nor_counted() -> None:
    """keep-last=2 with the newest protected keeps the next two as well."""
    v = [vol("2024-05-05 01:00", protected=True), vol("2024-05-04 01:00"),
         vol("2024-05-03 01:00"), vol("2024-05-02 01:00", protected=True),
         vol("2024-05-01 01:00")]
    assert marks(v, KeepOptions(last=2)) == [
        "protected", "keep", "keep", "protected", "remove"]


def test_nonstandard_names_are_renamed_and_groups_are_separate() -> None:
    """subtype unknown is never pruned; each vmid/type is its own group."""
    v = [vol("2024-05-03 01:00", subtype="unknown"), vol("2024-05-02 01:00"),
         vol("2024-05-01 01:00"), vol("2024-05-01 01:00", vmid=102),
         vol("2024-05-01 02:00", subtype="qemu")]
    assert marks(v, KeepOptions(last=1)) == ["renamed", "keep", "remove", "keep", "keep"]
    nameless = backup("local:backup/x.tar", vmid=None, ctime=5)
    assert mark_backups([nameless], KeepOptions(last=1), UTC)[0].mark is PruneMarkKind.RENAMED
    unknown = mark_backups([v[0]], KeepOptions(last=1), UTC)[0]
    assert (unknown.type, unknown.vmid) == ("unknown", 101)


def test_undated_backups_are_kept_and_take_no_slot() -> None:
    """A backup without ctime cannot be bucketed: kept, and the dated ones marked as without it."""
    undated = backup("local:backup/odd.tar.zst", ctime=None)
    v = [undated, vol("2024-05-02 01:00"), vol("2024-05-01 01:00")]
    assert marks(v, KeepOptions(last=1)) == ["keep", "keep", "remove"]
    assert mark_backups([undated], KeepOptions(last=1), UTC)[0].ctime is None


def test_keep_everything() -> None:
    """keep-all, or only zero counts: nothing removed, protected still marked protected."""
    v = [vol("2024-05-02 01:00"), vol("2024-05-01 01:00", protected=True)]
    assert marks(v, KeepOptions(all=True)) == ["keep", "protected"]
    assert marks(v, KeepOptions(last=0)) == ["keep", "protected"]


def test_equal_ctimes_are_one_last_bucket_as_in_pve() -> None:
    """keep-last counts distinct creation times: a second file of the same second is removed."""
    a = vol("2024-05-02 01:00")
    b = backup("local:backup/dup", ctime=a.ctime)
    assert marks([a, b, vol("2024-05-01 01:00")], KeepOptions(last=2)) == [
        "keep", "remove", "keep"]


# -- review of PVE's dry run -------------------------------------------------------------


def row(volid: str, ctime: int | None, mark: str, vmid: int = 101, typ: str = "lxc"
        ) -> PruneMark:
    """A dry-run row, as the client parses it."""
    return PruneMark(volid=volid, ctime=ctime, type=typ, vmid=vmid, mark=PruneMarkKind(mark))


def test_review_allows_a_sane_dry_run_and_lists_removals_newest_first() -> None:
    """Removals are listed for the audit; the floor is respected."""
    rows = [row("a", 5, "keep"), row("b", 4, "keep"), row("c", 3, "keep"), row("d", 1, "remove"),
            row("e", 2, "remove"), row("p", 0, "protected"), row("x", 9, "keep", vmid=102)]
    review = review_prune(rows, vmid=101, guest_type="lxc", min_keep=3)
    assert review.allowed
    assert review.remove == ("e", "d")
    assert review.kept == 3
    assert review.reason == "prune lxc 101: remove 2, keep 3 unprotected backups"


@pytest.mark.parametrize(
    ("rows", "protected", "fragment"),
    [
        ([row("a", 5, "keep"), row("x", 1, "remove", vmid=102)], (), "other guests: x"),
        ([row("a", 5, "keep"), row("q", 1, "remove", typ="qemu")], (), "other guests: q"),
        ([row("a", 5, "keep"), row("b", 4, "keep"), row("c", 3, "keep"),
          row("p", 1, "remove")], ("p",), "would remove protected backups p"),
        ([row("a", 5, "keep"), row("b", 4, "remove"), row("c", 3, "remove")], (),
         "would keep 1 unprotected backups, fewer than backup.min_keep 3"),
        ([row("a", 5, "remove"), row("b", 4, "keep"), row("c", 3, "keep"), row("d", 2, "keep")],
         (), "would remove a, one of the 3 newest"),
    ],
)
def test_review_refuses(rows: list[PruneMark], protected: tuple[str, ...], fragment: str
                        ) -> None:
    """Another guest's backup, a protected one, or going below the floor: nothing pruned."""
    review = review_prune(rows, vmid=101, guest_type="lxc", min_keep=3, protected=protected)
    assert not review.allowed
    assert fragment in review.reason
    assert review.reason.endswith("nothing pruned")


def test_review_with_fewer_backups_than_the_floor() -> None:
    """Two backups and min_keep 3: both must stay, and then it is fine."""
    ok = review_prune([row("a", 2, "keep"), row("b", 1, "keep")], vmid=101, guest_type="lxc",
                      min_keep=3)
    assert ok.allowed and ok.remove == () and ok.kept == 2


# -- properties --------------------------------------------------------------------------

_COUNT = st.none() | st.integers(0, 6)
_KEEPS = st.builds(KeepOptions, last=_COUNT, hourly=_COUNT, daily=_COUNT, weekly=_COUNT,
                   monthly=_COUNT, yearly=_COUNT)
#: Backups of two guests over ~3 years, distinct times, some protected, some renamed, at most
#: one undated.
_BACKUPS = st.lists(
    st.tuples(st.integers(1_640_995_200, 1_735_689_600) | st.none(), st.sampled_from([101, 102]),
              st.sampled_from(["lxc", "lxc", "lxc", "qemu", "unknown"]),
              st.booleans() | st.just(False)),
    max_size=40, unique_by=lambda t: t[0],
).map(lambda items: [backup(f"s:backup/{i}", vmid=vmid, subtype=sub, ctime=ctime, size=10,
                            protected=prot)
                     for i, (ctime, vmid, sub, prot) in enumerate(items)])
_ZONES = st.sampled_from([UTC, PLUS2, dt.timezone(dt.timedelta(hours=-5, minutes=-30))])


def _kept(volumes: list[BackupVolume], keep: KeepOptions, tz: dt.tzinfo) -> set[str]:
    return {m.volid for m in mark_backups(volumes, keep, tz)
            if m.mark is not PruneMarkKind.REMOVE}


def _dated(volumes: list[BackupVolume], vmid: int, sub: str) -> list[BackupVolume]:
    """The guest's unprotected dated backups, newest first."""
    return sorted((v for v in volumes if v.vmid == vmid and v.subtype == sub
                   and not v.protected and v.ctime is not None),
                  key=lambda v: v.ctime or 0, reverse=True)


@settings(max_examples=examples(300))
@given(_BACKUPS, _KEEPS, st.integers(1, 5), _ZONES)
def test_prune_never_removes_protected_and_keeps_the_newest(
    volumes: list[BackupVolume], keep: KeepOptions, min_keep: int, tz: dt.tzinfo
) -> None:
    """Protected: never removed. With the floor: the min(last, n) newest unprotected backups
    of every guest stay. Renamed and undated files stay. The review of that outcome agrees."""
    effective = effective_keep(keep, min_keep)
    result = mark_backups(volumes, effective, tz)
    assert [m.volid for m in result] == [v.volid for v in volumes]
    by_volid = {m.volid: m.mark for m in result}
    for v in volumes:
        if v.protected:
            assert by_volid[v.volid] == "protected"
        elif v.subtype is None:
            assert by_volid[v.volid] == "renamed"
        elif v.ctime is None:
            assert by_volid[v.volid] == "keep"
    for vmid, sub in itertools.product((101, 102), ("lxc", "qemu")):
        mine = _dated(volumes, vmid, sub)
        last = effective.last or 0 if not effective.keeps_all else len(mine)
        assert all(by_volid[v.volid] == "keep" for v in mine[:min(last, len(mine))])
        if not effective.keeps_all:
            assert sum(by_volid[v.volid] == "keep" for v in mine) >= min(min_keep, len(mine))
        dry_run = [m for m in result if m.vmid == vmid and m.type == sub]  # vmid+type query
        review = review_prune(dry_run, vmid=vmid, guest_type=sub, min_keep=min_keep,
                              protected=[v.volid for v in volumes if v.protected])
        assert review.allowed, review.reason


@settings(max_examples=examples(300))
@given(_BACKUPS, _KEEPS, st.integers(1, 5), _ZONES)
def test_the_floor_only_ever_keeps_more(volumes: list[BackupVolume], keep: KeepOptions,
                                        min_keep: int, tz: dt.tzinfo) -> None:
    """Everything the policy's own options keep is also kept with the min_keep floor."""
    if keep.keeps_all:
        return
    assert _kept(volumes, keep, tz) <= _kept(volumes, effective_keep(keep, min_keep), tz)


@settings(max_examples=examples(200))
@given(_BACKUPS, st.integers(0, 8), _ZONES)
def test_keep_last_alone_is_exactly_the_newest(volumes: list[BackupVolume], last: int,
                                               tz: dt.tzinfo) -> None:
    """keep-last=N alone keeps exactly the N newest unprotected backups of each guest."""
    result = {m.volid: m.mark for m in mark_backups(volumes, KeepOptions(last=last), tz)}
    for vmid, sub in itertools.product((101, 102), ("lxc", "qemu")):
        mine = _dated(volumes, vmid, sub)
        n = len(mine) if last == 0 else last  # last=0 alone keeps everything
        assert [result[v.volid] for v in mine] == ["keep"] * min(n, len(mine)) + [
            "remove"] * (len(mine) - min(n, len(mine)))
