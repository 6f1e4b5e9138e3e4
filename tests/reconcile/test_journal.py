"""The op journal's API contract on real files: round trip, idempotency, conflicts, bounds."""

from __future__ import annotations

import errno
import json
import logging
import os
import threading
from pathlib import Path

import pytest

from felhom_agent.durable import DurabilityError
from felhom_agent.secret import Secret
from felhom_agent.state.journal import (
    JOURNAL_NAME,
    AlreadyApplied,
    Journal,
    JournalLocked,
    OpConflict,
    OpState,
    UnknownOp,
    decode_line,
    encode_line,
)
from felhom_agent.state.recovery import is_plan_source
from tests.support.clock import WALL_T0, FakeClock

LOG = logging.getLogger("test.journal")


def open_journal(path: Path, clock: FakeClock, **kwargs: float) -> Journal:
    return Journal.open(path, clock=clock, logger=LOG, **kwargs)  # type: ignore[arg-type]


def test_round_trip_survives_reopen(tmp_path: Path) -> None:
    """Begin, UPID and outcome records written by one Journal are all replayed by the next."""
    clock = FakeClock(WALL_T0)
    with open_journal(tmp_path, clock) as j:
        j.begin("a", 101, "start", {"x": 1}, "plan:7")
        clock.now += 1
        j.record_upid("a", "UPID:pve1:0000AAAA:00BBBBBB:6A000000:qmstart:101:felhom@pve!agent:")
        clock.now += 1
        j.record_outcome("a", OpState.APPLIED, "", "OK")
        j.begin("b", 102, "guest.rollback", {"snapname": "s1"}, "alice@ops")
        before = j.entries()
    with open_journal(tmp_path, clock) as j2:
        assert j2.entries() == before
        assert j2.replay_report.clean
        assert j2.replay_report.records == 4
        a = j2.get("a")
        assert a is not None and a.outcome is not None
        assert a.began_at == 1_790_000_000.0 and a.upid_at == 1_790_000_001.0
        assert a.outcome.finished_at == 1_790_000_002.0 and a.outcome.exitstatus == "OK"
        assert [e.op_id for e in j2.pending()] == ["b"]
        assert j2.pending()[0].upid is None
        assert j2.pending()[0].params == {"snapname": "s1"}


def test_entries_render_as_host_report_ops(tmp_path: Path) -> None:
    """to_report() gives the HostReport ops item: running while pending, else the outcome."""
    clock = FakeClock(WALL_T0)
    with open_journal(tmp_path, clock) as j:
        j.begin("a", 101, "start", {}, "plan:7")
        assert j.entries()[0].to_report() == {
            "op_id": "a", "state": "running", "reason": "", "upid": None, "finished_at": None,
            "vmid": 101,
        }
        j.record_upid("a", "UPID:a")
        j.record_outcome("a", "failed", "VM 101 already running", "VM 101 already running")
        assert j.entries()[0].to_report() == {
            "op_id": "a", "state": "failed", "reason": "VM 101 already running",
            "upid": "UPID:a", "finished_at": "2026-09-21T14:13:20Z", "vmid": 101,
        }


def test_line_format_is_checksum_space_json(tmp_path: Path) -> None:
    """Each record is one ASCII line: 8 lowercase hex CRC32 digits, a space, compact JSON."""
    with open_journal(tmp_path, FakeClock(WALL_T0)) as j:
        j.begin("op-ü", 101, "start", {"description": "line1\nline2 ü"}, "plan:1")
    data = (tmp_path / JOURNAL_NAME).read_bytes()
    assert data.isascii() and data.count(b"\n") == 1 and data.endswith(b"\n")
    record = decode_line(data[:-1])
    assert record is not None and record["params"] == {"description": "line1\nline2 ü"}
    assert encode_line(record) == data


def test_file_is_owner_only(tmp_path: Path) -> None:
    """The journal holds op parameters, so it is created mode 0600."""
    with open_journal(tmp_path, FakeClock(WALL_T0)) as j:
        j.begin("a", 1, "start", {}, "plan:1")
    assert (tmp_path / JOURNAL_NAME).stat().st_mode & 0o777 == 0o600


def test_already_applied_across_reopen(tmp_path: Path) -> None:
    """An op id with a stored outcome is refused with AlreadyApplied after a restart."""
    clock = FakeClock(WALL_T0)
    with open_journal(tmp_path, clock) as j:
        j.begin("op1", 101, "guest.stop", {}, "alice@ops")
        j.record_outcome("op1", "failed", "VM 101 not running", "VM 101 not running")
    with open_journal(tmp_path, clock) as j2:
        with pytest.raises(AlreadyApplied) as info:
            j2.begin("op1", 101, "guest.stop", {}, "alice@ops")
        assert info.value.outcome.state is OpState.FAILED
        assert info.value.outcome.reason == "VM 101 not running"
        with pytest.raises(AlreadyApplied):
            j2.check_not_applied("op1")
        j2.check_not_applied("op2")
        assert j2.outcome("op2") is None


def test_refusal_is_one_record_and_idempotent(tmp_path: Path) -> None:
    """A refused op is journaled without a begin, keeps its source, and blocks re-execution."""
    with open_journal(tmp_path, FakeClock(WALL_T0)) as j:
        out = j.record_refused("r1", vmid=104, kind="set_config", source="plan:3",
                               reason="destructive key: memory")
        assert out.state is OpState.REFUSED
        assert j.stats().records == 1
    with open_journal(tmp_path, FakeClock(WALL_T0)) as j2:
        entry = j2.get("r1")
        assert entry is not None and not entry.damaged and entry.source == "plan:3"
        assert entry.vmid == 104 and entry.kind == "set_config"
        with pytest.raises(AlreadyApplied):
            j2.begin("r1", 104, "set_config", {}, "plan:3")
        with pytest.raises(AlreadyApplied):
            j2.record_refused("r1", vmid=104, kind="set_config", source="plan:3", reason="x")


def test_outcome_decided_without_a_call_is_one_record(tmp_path: Path) -> None:
    """``record_decided``: one outcome line with its source, no begin; kept across a replay."""
    with open_journal(tmp_path, FakeClock(WALL_T0)) as j:
        j.record_decided("s1", vmid=101, kind="rollback", source="alice@ops",
                         state=OpState.FAILED, reason="expired before it ran")
        assert j.stats().records == 1 and j.pending() == []
        with pytest.raises(OpConflict):
            j.record_decided("s2", vmid=1, kind="start", source="x", state="done", reason="")
        assert j.get("s2") is None
        j.begin("p1", 1, "start", {}, "alice@ops")
        with pytest.raises(OpConflict):  # a begun op may have been sent: never decided so
            j.record_decided("p1", vmid=1, kind="start", source="alice@ops",
                             state=OpState.FAILED, reason="x")
    lines = (tmp_path / "journal.log").read_bytes().splitlines()
    assert [json.loads(line[9:])["t"] for line in lines] == ["outcome", "begin"]
    with open_journal(tmp_path, FakeClock(WALL_T0)) as j2:
        entry = j2.get("s1")
        assert entry is not None and entry.began_at is None and not entry.damaged
        assert entry.source == "alice@ops" and entry.outcome is not None
        assert entry.outcome.state is OpState.FAILED
        assert [e.op_id for e in j2.pending()] == ["p1"]
        with pytest.raises(AlreadyApplied):
            j2.begin("s1", 101, "rollback", {}, "alice@ops")
        with pytest.raises(AlreadyApplied):
            j2.record_decided("s1", vmid=101, kind="rollback", source="alice@ops",
                              state=OpState.APPLIED, reason="")


def test_may_have_forgotten_is_true_once_the_count_bound_could_drop_a_young_outcome(
        tmp_path: Path) -> None:
    """An op id with no record is proof of "never begun" only while nothing young was dropped.

    The count bound drops a signed (not evict-first) outcome only when ``keep_outcomes`` of
    them are held; each finished later. Plan outcomes never make it drop one.
    """
    clock = FakeClock(WALL_T0)
    since = clock.now
    with Journal.open(tmp_path, clock=clock, logger=LOG, keep_outcomes=3,
                      evict_first=is_plan_source) as j:
        assert not j.may_have_forgotten(since)
        for i in range(10):  # plan outcomes are dropped first: never a reason to doubt
            clock.now += 1
            j.record_decided(f"plan-{i}", vmid=1, kind="start", source="plan:1",
                             state=OpState.APPLIED, reason="")
        assert not j.may_have_forgotten(since)
        for i in range(2):
            clock.now += 1
            j.record_decided(f"s{i}", vmid=1, kind="start", source="alice@ops",
                             state=OpState.APPLIED, reason="")
        assert not j.may_have_forgotten(since)
        clock.now += 1
        j.record_decided("s2", vmid=1, kind="start", source="alice@ops",
                         state=OpState.APPLIED, reason="")
        assert j.may_have_forgotten(since)  # one more and "s0" goes
        assert not j.may_have_forgotten(clock.now - 1.5)  # only s2 is that young
        clock.now += 1
        j.record_decided("s3", vmid=1, kind="start", source="alice@ops",
                         state=OpState.APPLIED, reason="")
        assert j.get("s0") is None and j.may_have_forgotten(since)
    with Journal.open(tmp_path, clock=clock, logger=LOG, keep_outcomes=3,
                      evict_first=is_plan_source) as j2:  # the replay rebuilds the same answer
        assert j2.get("s0") is None and j2.may_have_forgotten(since)
        assert not j2.may_have_forgotten(clock.now - 0.5)
    with open_journal(tmp_path, clock, retain_s=60.0) as j3:  # older than the age bound
        assert j3.may_have_forgotten(clock.now - 61)
        assert not j3.may_have_forgotten(clock.now - 0.5)


def test_conflicting_records_are_refused(tmp_path: Path) -> None:
    """A second begin, a different UPID, a second outcome or an unknown op id raise, unwritten."""
    with open_journal(tmp_path, FakeClock(WALL_T0)) as j:
        j.begin("a", 1, "start", {}, "plan:1")
        with pytest.raises(OpConflict):
            j.begin("a", 1, "start", {}, "plan:1")
        with pytest.raises(OpConflict):
            j.record_refused("a", vmid=1, kind="start", source="plan:1", reason="x")
        j.record_upid("a", "UPID:1")
        j.record_upid("a", "UPID:1")  # same UPID again: a harmless no-op
        with pytest.raises(OpConflict):
            j.record_upid("a", "UPID:2")
        with pytest.raises(OpConflict):
            j.record_outcome("a", "done", "")
        j.record_outcome("a", "applied", "")
        with pytest.raises(OpConflict):
            j.record_outcome("a", "failed", "")
        with pytest.raises(UnknownOp):
            j.record_upid("zz", "UPID:3")
        with pytest.raises(UnknownOp):
            j.record_outcome("zz", "applied", "")
        assert j.stats().records == 3


def test_unserialisable_params_never_reach_the_file(tmp_path: Path) -> None:
    """A Secret in params is rejected before writing, and the error does not show its value."""
    with open_journal(tmp_path, FakeClock(WALL_T0)) as j:
        with pytest.raises(OpConflict) as info:
            j.begin("a", 1, "set_config", {"password": Secret("hunter2-xyz")}, "plan:1")
        assert "hunter2-xyz" not in str(info.value)
        assert j.get("a") is None
    assert (tmp_path / JOURNAL_NAME).read_bytes() == b""


def test_stale_compaction_temp_is_removed_on_open(tmp_path: Path) -> None:
    """A temp file left by a compaction killed mid-way is deleted when the journal opens."""
    stale = tmp_path / f".{JOURNAL_NAME}.tmp.99999"
    stale.write_bytes(b"half a compaction")
    with open_journal(tmp_path, FakeClock(WALL_T0)) as j:
        assert j.replay_report.clean
    assert not stale.exists()


def test_second_process_lock_is_refused(tmp_path: Path) -> None:
    """While one Journal is open on a state_dir a second open raises JournalLocked."""
    j = open_journal(tmp_path, FakeClock(WALL_T0))
    try:
        with pytest.raises(JournalLocked):
            open_journal(tmp_path, FakeClock(WALL_T0))
    finally:
        j.close()
    j.close()  # idempotent
    open_journal(tmp_path, FakeClock(WALL_T0)).close()


def test_failed_fsync_raises_and_is_not_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failed fsync raises DurabilityError once; every later append is refused, no retry."""
    j = open_journal(tmp_path, FakeClock(WALL_T0))
    calls: list[int] = []

    def failing_fsync(fd: int) -> None:
        calls.append(fd)
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(DurabilityError):
        j.begin("a", 1, "start", {}, "plan:1")
    monkeypatch.undo()
    with pytest.raises(DurabilityError):
        j.begin("b", 1, "start", {}, "plan:1")
    assert len(calls) == 1
    assert j.get("b") is None
    j.close()


def test_concurrent_appends_from_many_threads(tmp_path: Path) -> None:
    """Workers appending at once lose no record and interleave no bytes (one lock)."""
    threads_n, per_thread = 8, 40
    barrier = threading.Barrier(threads_n, timeout=30)
    errors: list[BaseException] = []
    j = open_journal(tmp_path, FakeClock(WALL_T0))

    def worker(t: int) -> None:
        try:
            barrier.wait()
            for i in range(per_thread):
                op = f"t{t}-{i}"
                j.begin(op, 100 + t, "start", {"i": i}, "plan:1")
                j.record_upid(op, f"UPID:{op}")
                j.record_outcome(op, "applied", "")
        except BaseException as err:  # reported below, so a failure is not silent
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    assert j.stats().fsyncs == 3 * threads_n * per_thread
    j.close()
    with open_journal(tmp_path, FakeClock(WALL_T0)) as j2:
        assert j2.replay_report.clean
        assert j2.replay_report.records == 3 * threads_n * per_thread
        assert len(j2.entries()) == threads_n * per_thread
        assert not j2.pending()


def test_compaction_keeps_pending_and_recent_outcomes(tmp_path: Path) -> None:
    """compact(max_age) drops only outcomes older than max_age; pending ops always stay."""
    clock = FakeClock(WALL_T0)
    with open_journal(tmp_path, clock) as j:
        j.begin("old-done", 1, "start", {}, "plan:1")
        j.record_outcome("old-done", "applied", "")
        j.begin("old-pending", 2, "start", {}, "plan:1")
        j.begin("old-running", 3, "start", {}, "alice@ops")
        j.record_upid("old-running", "UPID:3")
        j.record_refused("old-refused", vmid=4, kind="destroy", source="bob", reason="no")
        clock.now += 1000
        j.begin("new-done", 5, "stop", {"k": "v"}, "plan:2")
        j.record_outcome("new-done", "unknown", "lost")
        before_size = (tmp_path / JOURNAL_NAME).stat().st_size
        result = j.compact(max_age_s=500)
        assert (result.kept, result.dropped) == (3, 2)
        assert result.bytes_before == before_size > result.bytes_after
        kept = j.entries()
        assert [e.op_id for e in kept] == ["old-pending", "old-running", "new-done"]
        j.begin("after", 6, "start", {}, "plan:3")  # appends go to the new file
        kept = j.entries()
    assert not list(tmp_path.glob(".journal*tmp*"))
    with open_journal(tmp_path, clock) as j2:
        assert j2.replay_report.clean
        assert j2.entries() == kept
        assert [e.op_id for e in j2.pending()] == ["old-pending", "old-running", "after"]


def test_growth_past_max_bytes_triggers_compaction(tmp_path: Path) -> None:
    """Under steady traffic the file stays within max_bytes: compaction by age runs past it."""
    clock = FakeClock(WALL_T0)
    max_bytes = 8192
    with open_journal(tmp_path, clock, max_bytes=max_bytes, retain_s=10) as j:
        j.begin("stuck", 9, "start", {}, "alice@ops")
        for i in range(400):
            clock.now += 1
            j.begin(f"op{i}", 100, "start", {}, "plan:1")
            j.record_outcome(f"op{i}", "applied", "")
            assert (tmp_path / JOURNAL_NAME).stat().st_size <= max_bytes
        stats = j.stats()
        assert stats.compactions > 0
        assert j.get("stuck") is not None
        assert j.get("op0") is None and j.get("op399") is not None
        assert len(j.entries()) < 70
    with open_journal(tmp_path, clock) as j2:
        assert j2.replay_report.clean
        assert [e.op_id for e in j2.pending()] == ["stuck"]


def test_young_journal_does_not_compact_on_every_append(tmp_path: Path) -> None:
    """When nothing is old enough to drop, the next compaction waits for the file to double."""
    clock = FakeClock(WALL_T0)
    with open_journal(tmp_path, clock, max_bytes=4096, retain_s=10**9) as j:
        for i in range(200):
            j.begin(f"op{i}", 100, "start", {}, "plan:1")
        stats = j.stats()
        assert 1 <= stats.compactions <= 4
        assert len(j.entries()) == 200


def test_fsyncs_and_bytes_per_job(tmp_path: Path) -> None:
    """A begin/upid/outcome job costs exactly 3 fsyncs and well under 1 KiB (target T13)."""
    with open_journal(tmp_path, FakeClock(WALL_T0)) as j:
        op = "0b9f6a52-2c1e-4f7e-9d1e-2b8a5d0c1f00"
        j.begin(op, 101, "set_config", {"description": "web frontend", "onboot": 1}, "plan:7")
        j.record_upid(op, "UPID:pve1:000A1B2C:0123ABCD:6745AB01:qmconfig:101:felhom@pve!agent:")
        j.record_outcome(op, "applied", "", "OK")
        stats = j.stats()
    assert stats.fsyncs == 3
    assert stats.bytes_written < 1024
