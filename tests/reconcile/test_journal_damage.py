"""A damaged journal is repaired on open, never a crash: torn tails, flipped bytes, bad lines."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from felhom_agent.state.journal import (
    JOURNAL_NAME,
    Journal,
    JournalEntry,
    encode_line,
)
from felhom_agent.state.recovery import Reattach, decide_recovery

LOG_NAME = "test.journal.damage"
LOG = logging.getLogger(LOG_NAME)
NOW = 1_790_000_000.0


def clock() -> float:
    return NOW


def build(state_dir: Path) -> tuple[bytes, list[JournalEntry]]:
    """Write a journal of five ops in several states; return its bytes and entries."""
    with Journal.open(state_dir, clock=clock, logger=LOG) as j:
        j.begin("a", 101, "start", {}, "plan:1")
        j.record_upid("a", "UPID:pve1:0000AAAA:00BBBBBB:6A000000:qmstart:101:felhom@pve!agent:")
        j.record_outcome("a", "applied", "", "OK")
        j.begin("b", 102, "guest.rollback", {"snapname": "pre-upgrade"}, "alice@ops")
        j.begin("c", 103, "set_config", {"description": "web"}, "plan:2")
        j.record_upid("c", "UPID:pve1:0000AAAB:00BBBBBC:6A000001:qmconfig:103:felhom@pve!agent:")
        j.begin("d", 104, "stop", {}, "plan:2")
        entries = j.entries()
    return (state_dir / JOURNAL_NAME).read_bytes(), entries


def line_bounds(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of every line, end exclusive of the newline."""
    out, start = [], 0
    while start < len(data):
        end = data.index(b"\n", start)
        out.append((start, end))
        start = end + 1
    return out


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOG_NAME and r.levelno == logging.WARNING]


def test_torn_tail_at_every_byte_offset(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Cutting the last record at any byte keeps every earlier record and logs one WARNING."""
    data, entries = build(tmp_path / "src")
    last_start = line_bounds(data)[-1][0]
    expected = entries[:-1]  # the last record is d's begin: d disappears entirely
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    caplog.set_level(logging.WARNING, logger=LOG_NAME)
    for cut in range(last_start + 1, len(data)):
        (state_dir / JOURNAL_NAME).write_bytes(data[:cut])
        caplog.clear()
        with Journal.open(state_dir, clock=clock, logger=LOG) as j:
            assert j.entries() == expected, cut
            assert j.replay_report.torn_bytes == cut - last_start
            assert j.replay_report.corrupt_lines == ()
            assert len(warnings_of(caplog)) == 1
            assert "torn tail" in warnings_of(caplog)[0].getMessage()
            j.begin("e", 105, "start", {}, "plan:3")  # appends start on a clean line
        assert (state_dir / JOURNAL_NAME).read_bytes().startswith(data[:last_start])
        caplog.clear()
        with Journal.open(state_dir, clock=clock, logger=LOG) as j:
            assert j.replay_report.clean and not warnings_of(caplog)
            assert [e.op_id for e in j.entries()] == ["a", "b", "c", "e"]
        (state_dir / JOURNAL_NAME).unlink()


def test_cut_exactly_at_a_line_end_is_clean(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A file that ends on a newline has no torn tail: no warning, nothing dropped."""
    _data, entries = build(tmp_path)
    caplog.set_level(logging.WARNING, logger=LOG_NAME)
    with Journal.open(tmp_path, clock=clock, logger=LOG) as j:
        assert j.entries() == entries and j.replay_report.clean
    assert not warnings_of(caplog)


def test_flipped_byte_rejects_only_that_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A flipped bit anywhere in a middle record loses that record only; later ones survive."""
    data, entries = build(tmp_path / "src")
    bounds = line_bounds(data)
    b_start, b_end = bounds[3]  # line 4: b's begin, the only record of op b
    expected = [e for e in entries if e.op_id != "b"]
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    caplog.set_level(logging.WARNING, logger=LOG_NAME)
    for offset in range(b_start, b_end):
        damaged = bytearray(data)
        damaged[offset] ^= 0x01
        (state_dir / JOURNAL_NAME).write_bytes(bytes(damaged))
        caplog.clear()
        with Journal.open(state_dir, clock=clock, logger=LOG) as j:
            assert j.entries() == expected, offset
            report = j.replay_report
            assert report.corrupt_lines == (4,) and report.records == len(bounds) - 1
            assert report.broken_copy is not None
            assert report.broken_copy.read_bytes() == bytes(damaged)
            assert len(warnings_of(caplog)) == 1
        # The journal was rewritten without the bad line: the next open is clean.
        with Journal.open(state_dir, clock=clock, logger=LOG) as j:
            assert j.replay_report.clean and j.entries() == expected
        shutil.rmtree(state_dir)
        state_dir.mkdir()


def test_checksum_hex_is_case_strict(tmp_path: Path) -> None:
    """Upper-casing a checksum digit (a 0x20 bit flip that int(x, 16) ignores) is caught."""
    data, _entries = build(tmp_path)
    bounds = line_bounds(data)
    start = bounds[0][0]
    line = data[bounds[0][0]:bounds[0][1]]
    index = next(i for i, ch in enumerate(line[:8]) if chr(ch) in "abcdef")
    damaged = bytearray(data)
    damaged[start + index] ^= 0x20
    (tmp_path / JOURNAL_NAME).write_bytes(bytes(damaged))
    with Journal.open(tmp_path, clock=clock, logger=LOG) as j:
        assert j.replay_report.corrupt_lines == (1,)


def test_lost_begin_leaves_a_damaged_entry_that_still_reattaches(tmp_path: Path) -> None:
    """If only an op's begin line is corrupt, its UPID record still yields a re-attachable entry."""
    data, _entries = build(tmp_path)
    bounds = line_bounds(data)
    c_begin = bounds[4]  # line 5: c's begin; line 6 is c's upid
    damaged = bytearray(data)
    damaged[c_begin[0] + 20] ^= 0x04
    (tmp_path / JOURNAL_NAME).write_bytes(bytes(damaged))
    with Journal.open(tmp_path, clock=clock, logger=LOG) as j:
        c = j.get("c")
        assert c is not None and c.damaged and c.began_at is None
        assert c.vmid == 103 and c.kind == "set_config" and c.params == {} and c.source == ""
        assert c.upid is not None and c.upid.startswith("UPID:pve1:0000AAAB")
        assert decide_recovery(c, [], token_user="felhom@pve!agent", now=NOW) == Reattach(
            c.upid, adopted=False
        )
        d = j.get("d")
        assert d is not None and not d.damaged


def test_valid_checksum_but_bad_schema_is_skipped(tmp_path: Path) -> None:
    """A line with a correct CRC but an unknown type or missing fields is reported, not applied."""
    data, entries = build(tmp_path)
    junk = [
        encode_line({"t": "mystery", "op": "z", "vmid": 1, "kind": "start", "time": 1.0}),
        encode_line({"t": "begin", "op": "z", "vmid": "101", "kind": "start", "time": 1.0,
                     "params": {}, "source": "plan:1"}),
        encode_line({"t": "outcome", "op": "a", "vmid": 101, "kind": "start", "time": 1.0,
                     "state": "exploded", "reason": "", "exitstatus": None}),
        b"00000000 []\n",
        b"\x00" * 40 + b"\n",
    ]
    (tmp_path / JOURNAL_NAME).write_bytes(b"".join(junk[:3]) + data + b"".join(junk[3:]))
    with Journal.open(tmp_path, clock=clock, logger=LOG) as j:
        assert j.entries() == entries
        assert j.replay_report.corrupt_lines == (1, 2, 3, 11, 12)


def test_power_loss_zero_fill_tail(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """NUL bytes without a newline after the last record (delayed allocation) are a torn tail."""
    data, entries = build(tmp_path)
    (tmp_path / JOURNAL_NAME).write_bytes(data + b"\x00" * 4096)
    caplog.set_level(logging.WARNING, logger=LOG_NAME)
    with Journal.open(tmp_path, clock=clock, logger=LOG) as j:
        assert j.entries() == entries
        assert j.replay_report.torn_bytes == 4096
    assert (tmp_path / JOURNAL_NAME).read_bytes() == data
    assert len(warnings_of(caplog)) == 1
