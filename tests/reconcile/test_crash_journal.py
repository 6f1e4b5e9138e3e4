"""A torn or corrupt journal at start: the engine recovers with a log line and re-applies nothing.

T11 with the engine on top: the journal of a converged run is cut at byte offsets inside its
last record (or has a line flipped mid-file); opening it logs one WARNING, ``recover()``
re-attaches what became pending (its task already finished: no new call), and the next pass
plans nothing.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from felhom_agent.compose.root import build_executor
from felhom_agent.core.desired import parse_desired
from felhom_agent.execution.engine import Engine
from felhom_agent.execution.queue import SerializerQueue
from felhom_agent.planning.providers import HubProvider
from felhom_agent.sim.pve import PveSimulator
from felhom_agent.state.journal import JOURNAL_NAME
from tests.reconcile.crash_child import open_state, scenario
from tests.support.pve import sim_client

LOG_NAME = "test.crash_journal"
DESIRED = {"generation": 2, "guests": {
    "200": {"type": "qemu", "state": "running"},
    "201": {"type": "qemu", "config": {"description": "two"}},
}}


@pytest.fixture
def sim() -> Iterator[PveSimulator]:
    with PveSimulator(scenario(qemu=2)) as s:
        yield s


def _engine_run(sim: PveSimulator, state: Path, *, converge: bool) -> tuple[int, bool]:
    """Open the state, recover, run one pass; returns (calls sent, plan in sync)."""
    log = logging.getLogger(LOG_NAME)
    journal, audit = open_state(state, log)
    queue = SerializerQueue(workers=2, logger=log)
    queue.start()
    provider = HubProvider(logger=log)
    provider.update(parse_desired(DESIRED))
    stop = threading.Event()
    with sim_client(sim) as client:
        watcher, executor = build_executor(client=client, journal=journal, audit=audit,
                                           task_timeout_s=10, stop_event=stop,
                                           clock=time.time, logger=log, lookup_grace_s=0.2)
        engine = Engine(client=client, node=sim.node, provider=provider, queue=queue,
                        journal=journal, audit=audit, executor=executor, watcher=watcher,
                        interval_s=30, stop_event=stop, logger=log, lookup_grace_s=0.2)
        try:
            report = engine.recover()
            sent = sum(1 for h in report.handles if h.result(10).mutated)
            result = engine.run_pass()
            for h in result.submitted:
                sent += int(h.result(10).mutated)
            if converge:
                result = engine.run_pass()
            in_sync = result.plan is not None and result.plan.in_sync
        finally:
            stop.set()
            engine.watcher.stop()
            queue.shutdown(5)
            journal.close()
            audit.close()
    return sent, in_sync


def test_truncated_last_record_recovers_and_reapplies_nothing(
    sim: PveSimulator, tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    """Cut inside the last record at many offsets: one WARNING, no new task, in sync."""
    base = tmp_path / "base"
    sent, in_sync = _engine_run(sim, base, converge=True)
    assert sent == 2 and in_sync
    data = (base / JOURNAL_NAME).read_bytes()
    last = data.rstrip(b"\n").rfind(b"\n") + 1
    tasks = len(sim.tasks())
    offsets = sorted({last + 1, len(data) - 1, *range(last + 1, len(data), 9)})
    for cut in offsets:
        state = tmp_path / f"cut{cut}"
        shutil.copytree(base, state)
        with (state / JOURNAL_NAME).open("r+b") as fh:
            fh.truncate(cut)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger=LOG_NAME):
            sent, in_sync = _engine_run(sim, state, converge=False)
        warnings = [r for r in caplog.records if "torn tail" in r.getMessage()]
        assert len(warnings) == 1, cut
        assert sent == 0 and in_sync, cut
    assert len(sim.tasks()) == tasks


def test_corrupt_line_mid_file_recovers_and_reapplies_nothing(
    sim: PveSimulator, tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    """A flipped byte in an early record: repaired with a WARNING, nothing sent again."""
    state = tmp_path / "state"
    assert _engine_run(sim, state, converge=True) == (2, True)
    path = state / JOURNAL_NAME
    data = bytearray(path.read_bytes())
    data[20] ^= 0x01  # inside the first record's JSON: its checksum no longer matches
    path.write_bytes(bytes(data))
    tasks = len(sim.tasks())
    with caplog.at_level(logging.WARNING, logger=LOG_NAME):
        sent, in_sync = _engine_run(sim, state, converge=False)
    assert any("corrupt line" in r.getMessage() for r in caplog.records)
    assert sent == 0 and in_sync and len(sim.tasks()) == tasks
