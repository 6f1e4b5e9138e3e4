"""The audit log: durable JSON lines per mutation, recent() for the report, size rotation."""

from __future__ import annotations

import errno
import json
import logging
import os
import threading
from pathlib import Path

import pytest

from felhom_agent.durable import DurabilityError
from felhom_agent.state.audit import AUDIT_NAME, AuditLog, AuditRecord
from tests.support.clock import FakeClock

LOG_NAME = "test.audit"
LOG = logging.getLogger(LOG_NAME)
T0 = 1_790_000_000.25


def add(log: AuditLog, i: int, source: str = "plan:7") -> AuditRecord:
    return log.append(op_id=f"op{i}", source=source, kind="start", vmid=100 + i,
                      upid=f"UPID:pve1:{i:08X}:", outcome="applied")


def test_append_writes_one_json_line_per_mutation(tmp_path: Path) -> None:
    """Each append is one compact JSON line with time, op_id, source, kind, vmid, upid, outcome."""
    with AuditLog.open(tmp_path, clock=FakeClock(T0), logger=LOG) as log:
        rec = log.append(op_id="o1", source="alice@ops", kind="guest.rollback", vmid=101,
                         upid=None, outcome="refused", reason="snapshot failed")
    lines = (tmp_path / AUDIT_NAME).read_text().splitlines()
    assert len(lines) == 1
    assert json.loads(lines[0]) == {
        "time": "2026-09-21T14:13:20.250Z", "op_id": "o1", "source": "alice@ops",
        "kind": "guest.rollback", "vmid": 101, "upid": None, "outcome": "refused",
        "reason": "snapshot failed",
    }
    assert rec.to_dict() == json.loads(lines[0])
    assert (tmp_path / AUDIT_NAME).stat().st_mode & 0o777 == 0o600


def test_recent_returns_newest_n_oldest_first_across_reopen(tmp_path: Path) -> None:
    """recent(n) gives the last n records in order, also after a restart."""
    with AuditLog.open(tmp_path, clock=FakeClock(T0), logger=LOG) as log:
        for i in range(10):
            add(log, i)
        assert [r.op_id for r in log.recent(3)] == ["op7", "op8", "op9"]
    with AuditLog.open(tmp_path, clock=FakeClock(T0), logger=LOG, keep_recent=5) as log2:
        assert [r.op_id for r in log2.recent(100)] == [f"op{i}" for i in range(5, 10)]
        assert log2.recent(0) == []
        add(log2, 10)
        assert log2.recent(1)[0].op_id == "op10"


def test_rotation_keeps_exactly_one_old_file(tmp_path: Path) -> None:
    """Past max_bytes the file moves to audit.log.1 (replacing the older one); no record is
    split, and recent() still spans both files after a reopen."""
    max_bytes = 1000
    with AuditLog.open(tmp_path, clock=FakeClock(T0), logger=LOG, max_bytes=max_bytes) as log:
        for i in range(40):
            add(log, i)
            assert (tmp_path / AUDIT_NAME).stat().st_size <= max_bytes
    assert sorted(p.name for p in tmp_path.iterdir()) == [AUDIT_NAME, AUDIT_NAME + ".1"]
    current = (tmp_path / AUDIT_NAME).read_text().splitlines()
    old = (tmp_path / (AUDIT_NAME + ".1")).read_text().splitlines()
    ops = [json.loads(line)["op_id"] for line in old + current]
    assert ops == [f"op{i}" for i in range(40 - len(ops), 40)]  # contiguous, newest last
    assert len(ops) < 40  # older files were dropped
    with AuditLog.open(tmp_path, clock=FakeClock(T0), logger=LOG, max_bytes=max_bytes) as log2:
        assert [r.op_id for r in log2.recent(len(ops))] == ops


def test_torn_tail_is_truncated_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A crash mid-line leaves a partial record; open truncates it so appends start cleanly."""
    with AuditLog.open(tmp_path, clock=FakeClock(T0), logger=LOG) as log:
        add(log, 1)
        add(log, 2)
    data = (tmp_path / AUDIT_NAME).read_bytes()
    (tmp_path / AUDIT_NAME).write_bytes(data[:-7])
    caplog.set_level(logging.WARNING, logger=LOG_NAME)
    with AuditLog.open(tmp_path, clock=FakeClock(T0), logger=LOG) as log2:
        assert [r.op_id for r in log2.recent(10)] == ["op1"]
        add(log2, 3)
    assert [r.getMessage() for r in caplog.records if "torn tail" in r.getMessage()]
    lines = (tmp_path / AUDIT_NAME).read_text().splitlines()
    assert [json.loads(line)["op_id"] for line in lines] == ["op1", "op3"]


def test_unreadable_lines_are_skipped_not_fatal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A garbled complete line is counted and skipped; the other records load."""
    with AuditLog.open(tmp_path, clock=FakeClock(T0), logger=LOG) as log:
        add(log, 1)
    with (tmp_path / AUDIT_NAME).open("ab") as f:
        f.write(b"{not json\n[1,2]\n{\"op_id\": 3}\n")
    caplog.set_level(logging.WARNING, logger=LOG_NAME)
    with AuditLog.open(tmp_path, clock=FakeClock(T0), logger=LOG) as log2:
        add(log2, 2)
        assert [r.op_id for r in log2.recent(10)] == ["op1", "op2"]
    assert any("3 unreadable" in r.getMessage() for r in caplog.records)


def test_failed_fsync_is_not_retried(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failed fsync raises DurabilityError and the log refuses further appends."""
    log = AuditLog.open(tmp_path, clock=FakeClock(T0), logger=LOG)
    calls: list[int] = []

    def failing_fsync(fd: int) -> None:
        calls.append(fd)
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(DurabilityError):
        add(log, 1)
    monkeypatch.undo()
    with pytest.raises(DurabilityError):
        add(log, 2)
    assert len(calls) == 1
    assert log.recent(5) == []
    log.close()


def test_concurrent_appends_keep_lines_whole(tmp_path: Path) -> None:
    """Appends from several threads (with rotation) never interleave bytes within a line."""
    barrier = threading.Barrier(6, timeout=30)
    errors: list[BaseException] = []
    log = AuditLog.open(tmp_path, clock=FakeClock(T0), logger=LOG, max_bytes=20_000,
                        keep_recent=1000)

    def worker(t: int) -> None:
        try:
            barrier.wait()
            for i in range(50):
                add(log, t * 1000 + i, source=f"signer-{t}")
        except BaseException as err:  # reported below
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(6)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=60)
    assert not errors
    assert len(log.recent(1000)) == 300
    log.close()
    for name in (AUDIT_NAME, AUDIT_NAME + ".1"):
        for line in (tmp_path / name).read_text().splitlines():
            assert AuditRecord.from_dict(json.loads(line)) is not None
