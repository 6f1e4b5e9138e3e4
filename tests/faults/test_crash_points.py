"""A trimmed crash sweep: the daemon child SIGKILLed at seeded crash points, then restarted.

``scripts/test-faults`` runs the same seeds by the hundred (:mod:`tests.faults.sweep`); here
ten seeds chosen to cover every crash-point kind (requests, forked, finished, lost_reply)
and signed ops (applied; accepted, killed before they were sent, and run after the
restart), plus seed 1008 of the full sweep (a rollback accepted before a crash once ended
``unknown`` there though nothing was sent: a ``begin`` was written on the way to "never
started", and a second kill landed between it and the outcome), run three at a time.
See :mod:`tests.faults.crash` for the points and the checks.
"""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.faults.crash import CRASH_KINDS, describe, draw_scenario, kills_for, run_seed

SEEDS = (2, 4, 5, 6, 10, 11, 15, 16, 18, 25, 1008)


def test_seeded_crash_points_no_duplicate_no_lost(tmp_path: Path) -> None:
    """After SIGKILLs at seeded points and a restart: no mutation twice, no change lost."""
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(lambda s: run_seed(s, tmp_path / f"seed{s}"), SEEDS))
    lines = "\n".join(describe(r) for r in results)
    assert all(r.ok for r in results), lines
    assert sum(r.duplicates for r in results) == 0 and sum(r.lost for r in results) == 0
    points = [p for r in results for p in r.points]
    assert len(points) == sum(kills_for(s) for s in SEEDS)
    assert {p.split(":")[0] for p in points} == set(CRASH_KINDS), lines
    assert all(r.converge_s is not None for r in results)
    # The ops live ten minutes: every one runs, also when it was accepted before a crash.
    signed = {o.split("=")[1] for r in results for o in r.signed}
    assert signed == {"applied"}, lines
    assert sum(r.resumed for r in results) >= 1, lines


def test_scenarios_are_seeded_and_need_changes() -> None:
    """A seed always draws the same scenario, and every scenario needs at least 3 changes."""
    for seed in range(50):
        a, b = draw_scenario(random.Random(seed)), draw_scenario(random.Random(seed))
        assert a == b
        assert len(a.expected) >= 3
        assert 1 <= kills_for(seed) <= 3
