"""The space check before a vzdump call: the newest backup's size plus the margin."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from felhom_agent.backup.space import check_space, space_needed
from felhom_agent.proxmox.backup_models import BackupVolume
from tests.backup.helpers import backup
from tests.support.hypo import examples


def vol(size: int | None, volid: str = "pbs1:backup/ct/101/2024-05-01T01:00:00Z"
        ) -> BackupVolume:
    """The guest's newest backup with ``size``."""
    return backup(volid, ctime=1_714_525_200, size=size)


def test_enough_space_is_allowed() -> None:
    """avail >= size x 1.2 passes, with what was checked in the reason."""
    check = check_space(storage="pbs1", avail=1200, newest=vol(1000), margin_pct=20)
    assert check.allowed
    assert (check.need, check.avail) == (1200, 1200)
    assert check.estimate_from == "pbs1:backup/ct/101/2024-05-01T01:00:00Z"
    assert "need ~1200 bytes, avail 1200" in check.reason


def test_full_storage_is_refused_with_the_documented_reason() -> None:
    """One byte short of the margin: refused, nothing may be sent."""
    check = check_space(storage="pbs1", avail=1199, newest=vol(1000), margin_pct=20)
    assert not check.allowed
    assert check.reason.startswith("storage pbs1 full: need ~1200 bytes, avail 1199")
    assert "+20% margin" in check.reason


def test_no_earlier_backup_means_no_estimate() -> None:
    """The first backup of a guest runs whatever the free space."""
    check = check_space(storage="local", avail=0, newest=None, margin_pct=20)
    assert check.allowed and check.need is None and check.estimate_from is None
    assert "no earlier backup" in check.reason


def test_unknown_pbs_size_means_no_estimate() -> None:
    """PBS reports size 1 (or nothing) when it does not know: no estimate, allowed."""
    for size in (None, 0, 1):
        check = check_space(storage="pbs1", avail=0, newest=vol(size), margin_pct=20)
        assert check.allowed and check.need is None
        assert "is unknown" in check.reason


def test_unknown_avail_with_an_estimate_is_refused() -> None:
    """When the status has no avail, the rule cannot be checked: refused, and said so."""
    check = check_space(storage="pbs1", avail=None, newest=vol(5000), margin_pct=0)
    assert not check.allowed
    assert check.reason.startswith("storage pbs1: free space unknown")
    assert check.need == 5000


def test_margin_rounds_up_and_zero_margin_is_exact() -> None:
    """Integer arithmetic, rounded up to a whole byte."""
    assert space_needed(1001, 20) == 1202  # 1201.2 -> 1202
    assert space_needed(1000, 0) == 1000
    assert space_needed(3, 1000) == 33
    assert space_needed(0, 20) == 0


@settings(max_examples=examples(300))
@given(st.integers(2, 2**50), st.integers(0, 1000), st.integers(0, 2**52))
def test_allowed_exactly_when_avail_covers_the_need(size: int, margin: int, avail: int
                                                    ) -> None:
    """allowed <=> avail >= ceil(size * (100 + margin) / 100), with exact integers."""
    check = check_space(storage="s1", avail=avail, newest=vol(size), margin_pct=margin)
    need = space_needed(size, margin)
    assert need * 100 >= size * (100 + margin) > (need - 1) * 100
    assert check.allowed == (avail >= need)
    assert check.reason.startswith("storage s1 full:") != check.allowed
