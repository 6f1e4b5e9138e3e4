"""Crash safety with a real process: SIGKILL mid-append loses nothing that was reported durable."""

from __future__ import annotations

import logging
import os
import random
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from felhom_agent.state.journal import Journal

REPO = Path(__file__).resolve().parents[2]
LOG_NAME = "test.journal.crash"

# The child appends begin/upid/outcome records in a loop (with compactions, thanks to a small
# max_bytes) and prints one line per record only after the call returned, i.e. after fsync.
CHILD = r"""
import logging, sys, time
from pathlib import Path
from felhom_agent.state.journal import Journal

j = Journal.open(Path(sys.argv[1]), clock=time.time, logger=logging.getLogger("child"),
                 max_bytes=int(sys.argv[2]))
out = sys.stdout
i = 0
while True:
    op = f"op-{i}"
    j.begin(op, 100 + i % 7, "start", {"pad": "x" * (i * 37 % 400)}, "plan:1")
    out.write(f"begin {op}\n"); out.flush()
    if i % 3:
        j.record_upid(op, f"UPID:pve1:{i:08X}:00000000:6A000000:qmstart:{100 + i % 7}:u@pve!t:")
        out.write(f"upid {op}\n"); out.flush()
    if i % 3 == 2:
        j.record_outcome(op, "applied", "", "OK")
        out.write(f"outcome {op}\n"); out.flush()
    i += 1
"""


def run_and_kill(state_dir: Path, kill_after: int, max_bytes: int) -> list[tuple[str, str]]:
    """Run the child until it reported ``kill_after`` records, SIGKILL it, return all reports."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(state_dir), str(max_bytes)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO, env=env,
    )
    assert proc.stdout is not None
    buf = b""
    deadline = time.monotonic() + 60
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while buf.count(b"\n") < kill_after:
            remaining = deadline - time.monotonic()
            assert remaining > 0, "child too slow to report records"
            if not sel.select(timeout=remaining):
                continue
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                _, err = proc.communicate(timeout=10)
                pytest.fail(f"child exited early: {err.decode(errors='replace')}")
            buf += chunk
    proc.send_signal(signal.SIGKILL)
    rest, _ = proc.communicate(timeout=30)  # lines printed before the kill landed count too
    assert proc.returncode == -signal.SIGKILL
    buf += rest
    complete = buf[: buf.rfind(b"\n") + 1].decode()
    return [(kind, op) for kind, op in (line.split() for line in complete.splitlines())]


@pytest.mark.parametrize("seed", range(6))
def test_sigkill_while_appending_loses_no_durable_record(
    tmp_path: Path, seed: int, caplog: pytest.LogCaptureFixture
) -> None:
    """Every record the child reported durable before SIGKILL is replayed; at most one is extra."""
    rng = random.Random(seed)
    kill_after = rng.randrange(20, 600)
    max_bytes = rng.choice([16 * 1024, 1024 * 1024])
    reported = run_and_kill(tmp_path, kill_after, max_bytes)
    assert len(reported) >= kill_after
    caplog.set_level(logging.WARNING, logger=LOG_NAME)
    with Journal.open(tmp_path, clock=time.time, logger=logging.getLogger(LOG_NAME)) as j:
        report = j.replay_report
        assert report.corrupt_lines == ()
        assert report.torn_bytes == 0 or len(caplog.records) == 1
        for kind, op in reported:
            entry = j.get(op)
            assert entry is not None, (kind, op)
            if kind == "upid":
                assert entry.upid is not None
            if kind == "outcome":
                assert entry.outcome is not None
        # The journal may hold one record the child wrote but did not live to report.
        assert report.records - len(reported) in (0, 1)
        # And it is usable again: new records append after the repaired tail.
        j.begin("after-crash", 1, "start", {}, "plan:2")
    assert not list(tmp_path.glob(".journal.log.tmp.*"))  # a killed compaction is cleaned up
    with Journal.open(tmp_path, clock=time.time, logger=logging.getLogger(LOG_NAME)) as j2:
        assert j2.replay_report.clean
        assert j2.get("after-crash") is not None
