"""Retention: PVE's keep marking (pure) and the prunebackups dry run and run over HTTPS."""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from felhom_agent.sim.pve.prune import mark_group, parse_keep
from tests.sim.backup_helpers import BACKUP_100, backup_scenario, running
from tests.sim.helpers import TIMEOUT, Api

TZ = ZoneInfo("Europe/Budapest")


def _t(text: str) -> int:
    """Local time ``YYYY-MM-DD HH:MM`` in Budapest as epoch seconds."""
    return int(dt.datetime.strptime(text, "%Y-%m-%d %H:%M").replace(tzinfo=TZ).timestamp())


def _marks(times: list[str], keep: dict[str, int], protected: tuple[str, ...] = ()
           ) -> dict[str, str]:
    entries: list[dict[str, Any]] = [
        {"ctime": _t(t), **({"mark": "protected"} if t in protected else {})} for t in times]
    mark_group(entries, keep, TZ)
    return {t: e["mark"] for t, e in zip(times, entries, strict=True)}


def test_keep_last_then_daily_count_only_unkept_backups() -> None:
    """keep-last keeps the newest N; keep-daily then keeps the newest backup of each further
    day not already covered; the rest (older same-day backups) is removed."""
    times = ["2026-03-10 22:00", "2026-03-10 10:00", "2026-03-09 23:00", "2026-03-09 01:00",
             "2026-03-08 12:00", "2026-03-07 12:00"]
    assert _marks(times, {"keep-last": 1, "keep-daily": 2}) == {
        "2026-03-10 22:00": "keep", "2026-03-10 10:00": "remove",
        "2026-03-09 23:00": "keep", "2026-03-09 01:00": "remove",
        "2026-03-08 12:00": "keep", "2026-03-07 12:00": "remove"}


def test_days_are_local_days() -> None:
    """00:30 Budapest is the previous UTC day but its own local day."""
    times = ["2026-03-10 00:30", "2026-03-09 23:30"]
    assert _marks(times, {"keep-daily": 2}) == {t: "keep" for t in times}
    assert _marks(times, {"keep-daily": 1})["2026-03-09 23:30"] == "remove"


def test_weekly_uses_iso_weeks_and_monthly_yearly() -> None:
    """Sunday and the following Monday are different ISO weeks; months and years bucket."""
    times = ["2026-03-09 12:00", "2026-03-08 12:00", "2026-03-02 12:00", "2026-02-20 12:00",
             "2025-12-31 12:00", "2025-06-01 12:00", "2024-06-01 12:00"]
    assert _marks(times, {"keep-weekly": 2}) == {
        "2026-03-09 12:00": "keep", "2026-03-08 12:00": "keep", "2026-03-02 12:00": "remove",
        "2026-02-20 12:00": "remove", "2025-12-31 12:00": "remove",
        "2025-06-01 12:00": "remove", "2024-06-01 12:00": "remove"}
    monthly = _marks(times, {"keep-monthly": 3})
    assert [t for t, m in monthly.items() if m == "keep"] == times[:1] + times[3:5]
    yearly = _marks(times, {"keep-yearly": 3})
    assert [t for t, m in yearly.items() if m == "keep"] == [times[0], times[4], times[6]]


def test_protected_never_removed_nor_counted_and_keep_all() -> None:
    """A protected backup keeps its mark and does not use up a keep-last slot."""
    times = ["2026-03-10 12:00", "2026-03-09 12:00", "2026-03-08 12:00"]
    assert _marks(times, {"keep-last": 1}, protected=(times[0],)) == {
        times[0]: "protected", times[1]: "keep", times[2]: "remove"}
    assert set(_marks(times, {"keep-all": 1}).values()) == {"keep"}
    assert set(_marks(times, {"keep-last": 0}).values()) == {"keep"}


@pytest.mark.parametrize(("text", "error"), [
    ("keep-lost=1", "unknown retention option"), ("keep-last=x", "is not valid"),
    ("keep-all=1,keep-last=2", "cannot be set together"), ("keep-last=1,keep-last=2",
                                                           "duplicate key")])
def test_parse_keep_rejects_bad_options(text: str, error: str) -> None:
    """The property string parser names the problem."""
    with pytest.raises(ValueError, match=error):
        parse_keep(text)


def _storage(prune: str | None = None) -> dict[str, Any]:
    backups = [{"vmid": 100, "type": "lxc", "ctime": 1_767_225_600 - i * 86_400}
               for i in range(4)]
    backups[3]["protected"] = True
    backups += [{"vmid": 101, "type": "qemu", "ctime": 1_767_225_600},
                {"vmid": 100, "type": "lxc", "ctime": 1_700_000_000,
                 "volid": "my-copy-of-100.tar.zst"}]
    config: dict[str, Any] = {"path": "/var/lib/vz"}
    if prune is not None:
        config["prune-backups"] = prune
    return {"storage": "local", "type": "dir", "content": "backup", "config": config,
            "backups": backups}


def test_dry_run_marks_per_group_with_filters() -> None:
    """GET prunebackups lists ``{volid, ctime, type, vmid, mark}`` for every backup (no
    per-item filter): the newest of guest 100 kept, older removed, protected and renamed
    files kept; ``vmid``/``type`` narrow it."""
    with running(backup_scenario(storages=[_storage()])) as sim:
        api = Api(sim, auth=BACKUP_100)
        marks = api.data("GET", "/nodes/pve1/storage/local/prunebackups",
                         params={"prune-backups": "keep-last=1"})
        by = {(m["vmid"], m["mark"]) for m in marks}
        assert len(marks) == 6 and (101, "keep") in by
        mine = [m for m in marks if m["vmid"] == 100]
        assert sorted(m["mark"] for m in mine) == ["keep", "protected", "remove", "remove",
                                                   "renamed"]
        renamed = next(m for m in mine if m["mark"] == "renamed")
        assert renamed["volid"] == "local:backup/my-copy-of-100.tar.zst"
        assert renamed["type"] == "unknown"
        only = api.data("GET", "/nodes/pve1/storage/local/prunebackups",
                        params={"prune-backups": "keep-last=1", "vmid": "101", "type": "qemu"})
        assert [(m["vmid"], m["mark"]) for m in only] == [(101, "keep")]
        r = api.get("/nodes/pve1/storage/local/prunebackups")
        assert r.status_code == 500 and r.reason == (
            "no prune-backups options configured for storage 'local'")
        r = api.get("/nodes/pve1/storage/local/prunebackups",
                    params={"prune-backups": "keep-every=1"})
        assert r.status_code == 400 and "prune-backups" in r.json()["errors"]


def test_prune_run_removes_only_remove_marks() -> None:
    """DELETE prunebackups is a ``prunebackups`` task with id ``<vmid>@<storage>``; it removes
    exactly the dry run's ``remove`` entries (storage setting used when none is given)."""
    with running(backup_scenario(storages=[_storage("keep-last=2")])) as sim:
        api = Api(sim)
        dry = api.data("GET", "/nodes/pve1/storage/local/prunebackups", params={"vmid": "100"})
        doomed = {m["volid"] for m in dry if m["mark"] == "remove"}
        assert len(doomed) == 1
        upid = api.data("DELETE", "/nodes/pve1/storage/local/prunebackups",
                        params={"vmid": "100", "type": "lxc"})
        assert upid.split(":")[5:7] == ["prunebackups", "100@local"]
        rec = sim.wait_task(upid, TIMEOUT)
        assert rec["exitstatus"] == "OK"
        assert rec["log"][:-1] == [f"removing backup '{v}'" for v in sorted(doomed)]
        left = {b["volid"] for b in sim.backups("local")}
        assert not doomed & left and len(left) == 5


def test_prune_run_permissions() -> None:
    """Without a vmid the prune needs Datastore.Allocate; with one, AllocateSpace plus
    VM.Backup on that guest."""
    with running(backup_scenario(storages=[_storage("keep-last=1")])) as sim:
        api = Api(sim, auth=BACKUP_100)
        r = api.delete("/nodes/pve1/storage/local/prunebackups")
        assert (r.status_code, r.reason) == (
            403, "Permission check failed (/storage/local, Datastore.Allocate)")
        r = api.delete("/nodes/pve1/storage/local/prunebackups", params={"vmid": "101"})
        assert (r.status_code, r.reason) == (403, "Permission check failed (/vms/101, VM.Backup)")
        rec = api.run_task("DELETE", "/nodes/pve1/storage/local/prunebackups",
                           params={"vmid": "100"})
        assert rec["exitstatus"] == "OK" and rec["id"] == "100@local"
