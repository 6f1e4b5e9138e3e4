"""The op journal's memory bound (issue 9): churn must not grow the in-memory index.

Every test drives a real journal on real files (fsync per record) with a settable clock, so
nothing depends on wall-clock speed. The bound: pending ops are always held, outcomes at most
``keep_outcomes`` and none older than ``retain_s``; reconciler (``plan:<n>``) outcomes are
forgotten before orders; a reopen rebuilds exactly the same index.
"""

from __future__ import annotations

import gc
import logging
import threading
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from felhom_agent.compose.engine_seam import EngineLike
from felhom_agent.compose.root import build_parts
from felhom_agent.config import load_config
from felhom_agent.sim.pve import PveSimulator
from felhom_agent.state.journal import JOURNAL_NAME, AlreadyApplied, Journal, OpState
from felhom_agent.state.recovery import is_plan_source
from tests.daemon.helpers import FakeEngine, agent_config, pve_scenario, write_agent_config
from tests.support.clock import WALL_T0, FakeClock

LOG = logging.getLogger("test.memory")
UPID = "UPID:pve1:000A1B2C:0123ABCD:6745AB01:qmstart:{vmid}:felhom@pve!agent:"


def run_plan_ops(j: Journal, clock: FakeClock, first: int, count: int) -> None:
    """Begin, UPID and outcome for ``count`` reconciler ops, one second apart."""
    for i in range(first, first + count):
        clock.now += 1
        op = f"plan-{i}-{100 + i % 12}-set_config-{i:012x}"
        j.begin(op, 100 + i % 12, "set_config", {"description": f"soak {i}",
                                                 "guest_type": "qemu"}, f"plan:{i}")
        j.record_upid(op, UPID.format(vmid=100 + i % 12))
        j.record_outcome(op, OpState.APPLIED if i % 7 else OpState.FAILED, "", "OK")


def test_5000_ops_keep_the_index_and_file_bounded(tmp_path: Path) -> None:
    """After 5000 ops the index holds only pending ops plus keep_outcomes outcomes, orders
    first, and the file is compacted to the same entries (bounded by count, not only age)."""
    clock = FakeClock(WALL_T0)
    with Journal.open(tmp_path, clock=clock, logger=LOG, max_bytes=256 * 1024,
                      keep_outcomes=200, evict_first=is_plan_source) as j:
        j.begin("stuck", 9, "start", {}, "alice@ops")  # pending: never dropped
        j.begin("order", 10, "guest.snapshot", {"snapname": "s"}, "alice@ops")
        j.record_outcome("order", OpState.APPLIED, "", "OK")
        j.record_refused("bad-sig", vmid=11, kind="guest.rollback", source="bob@ops",
                         reason="signature does not verify")
        for chunk in range(10):
            run_plan_ops(j, clock, chunk * 500, 500)
            stats = j.stats()
            assert stats.outcomes <= 200
            assert stats.held <= 201
            assert (tmp_path / JOURNAL_NAME).stat().st_size <= 256 * 1024
        assert stats.forgotten == 5000 + 2 - 200
        assert stats.compactions > 0
        assert j.get("stuck") is not None and j.get("stuck").pending  # type: ignore[union-attr]
        with pytest.raises(AlreadyApplied):
            j.begin("order", 10, "guest.snapshot", {"snapname": "s"}, "alice@ops")
        with pytest.raises(AlreadyApplied):
            j.begin("bad-sig", 11, "guest.rollback", {}, "bob@ops")
        assert j.get("plan-0-100-set_config-000000000000") is None
        assert j.get("plan-4999-107-set_config-000000001387") is not None
        held = j.entries()
    with Journal.open(tmp_path, clock=clock, logger=LOG, keep_outcomes=200,
                      evict_first=is_plan_source) as j2:
        assert j2.replay_report.clean
        assert j2.entries() == held
        assert [e.op_id for e in j2.pending()] == ["stuck"]


def test_index_memory_stops_growing(tmp_path: Path) -> None:
    """Past the bound, 3000 more ops add next to nothing to what the journal holds in memory
    (unbounded, each op kept about 1.2 KiB: ~3.5 MiB here)."""
    clock = FakeClock(WALL_T0)
    with Journal.open(tmp_path, clock=clock, logger=LOG, keep_outcomes=500,
                      evict_first=is_plan_source) as j:
        run_plan_ops(j, clock, 0, 1000)
        gc.collect()
        tracemalloc.start()
        try:
            run_plan_ops(j, clock, 1000, 1000)  # every held entry is now a traced one
            gc.collect()
            before = tracemalloc.get_traced_memory()[0]
            run_plan_ops(j, clock, 2000, 3000)
            gc.collect()
            after = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
        assert j.stats().held == 500
    assert after - before < 64 * 1024, f"journal grew by {after - before} bytes"


def test_outcomes_older_than_retain_s_leave_memory_without_compaction(tmp_path: Path) -> None:
    """An outcome older than retain_s is forgotten at the next append even while the file is
    far below max_bytes; a pending op of any age stays."""
    clock = FakeClock(WALL_T0)
    with Journal.open(tmp_path, clock=clock, logger=LOG, retain_s=100) as j:
        j.begin("old-pending", 1, "start", {}, "alice@ops")
        run_plan_ops(j, clock, 0, 50)
        clock.now += 1000
        run_plan_ops(j, clock, 50, 1)
        stats = j.stats()
        assert stats.compactions == 0
        assert [e.op_id for e in j.entries()] == ["old-pending",
                                                  "plan-50-102-set_config-000000000032"]
        held = j.entries()
    with Journal.open(tmp_path, clock=clock, logger=LOG, retain_s=100) as j2:
        assert j2.entries() == held


def test_without_evict_first_the_oldest_outcome_goes(tmp_path: Path) -> None:
    """With no eviction preference the count bound forgets the oldest outcome of any source."""
    clock = FakeClock(WALL_T0)
    with Journal.open(tmp_path, clock=clock, logger=LOG, keep_outcomes=10) as j:
        j.begin("order", 10, "guest.snapshot", {}, "alice@ops")
        j.record_outcome("order", OpState.APPLIED, "")
        run_plan_ops(j, clock, 0, 10)
        assert j.get("order") is None
        assert j.stats().outcomes == 10


def test_daemon_journal_forgets_reconciler_outcomes_first(tmp_path: Path) -> None:
    """The daemon's parts open the journal with the plan-source preference: a signed op's
    outcome outlives a thousand newer reconciler outcomes."""
    with PveSimulator(pve_scenario()) as sim:
        config = load_config(write_agent_config(tmp_path, agent_config(tmp_path, sim)), env={})

        def factory(**parts: Any) -> EngineLike:
            return FakeEngine(**parts)

        parts = build_parts(config, stop_event=threading.Event(), on_fatal=None,
                            engine_factory=factory, clock=FakeClock(WALL_T0), logger=LOG)
        try:
            j = parts.journal
            j.begin("order", 10, "guest.snapshot", {}, "alice@ops")
            j.record_outcome("order", OpState.APPLIED, "")
            for i in range(1000):
                j.record_refused(f"plan-{i}", vmid=100, kind="start", source="plan:1",
                                 reason="r")
            assert j.get("order") is not None and j.get("plan-0") is None
            assert j.stats().outcomes == 1000
        finally:
            parts.close()
