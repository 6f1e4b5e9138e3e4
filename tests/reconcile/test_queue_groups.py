"""Group limits of the serializer queue: a held-back backup never holds a worker."""

from __future__ import annotations

import functools
import threading

import pytest

from felhom_agent.execution.queue import InvalidJob, SerializerQueue

WAIT = 10.0


class Gate:
    """Counts how many jobs of a group run at once and lets the test release them."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running = 0
        self.peak = 0
        self.order: list[int] = []
        self.started = {n: threading.Event() for n in range(100)}
        self.release = {n: threading.Event() for n in range(100)}

    def job(self, n: int) -> int:
        with self.lock:
            self.running += 1
            self.peak = max(self.peak, self.running)
            self.order.append(n)
        self.started[n].set()
        assert self.release[n].wait(WAIT)
        with self.lock:
            self.running -= 1
        return n


def test_group_limit_holds_back_without_holding_workers() -> None:
    """With backup limit 1 and 4 workers: one backup at a time, in submit order, while plain
    jobs on other lanes start and finish meanwhile."""
    gate = Gate()
    q = SerializerQueue(workers=4, limits={"backup": 1})
    q.start()
    try:
        backups = [q.submit(100 + n, functools.partial(gate.job, n), label=f"backup {n}",
                            group="backup") for n in range(3)]
        assert gate.started[0].wait(WAIT)
        plain = [q.submit(200 + n, functools.partial(int, n), label=f"start {n}")
                 for n in range(6)]
        assert [h.result(WAIT) for h in plain] == list(range(6))  # flowed past the backups
        assert not gate.started[1].is_set()
        assert q.snapshot().running == 1  # the held-back backups hold no worker
        for n in range(3):
            gate.release[n].set()
            assert backups[n].result(WAIT) == n
        assert gate.peak == 1
        assert gate.order == [0, 1, 2]
    finally:
        q.shutdown(grace_s=WAIT)


def test_group_limit_two_runs_two() -> None:
    """A limit of 2 runs exactly two at once."""
    gate = Gate()
    q = SerializerQueue(workers=4, limits={"backup": 2})
    q.start()
    try:
        hs = [q.submit(100 + n, functools.partial(gate.job, n), label="b", group="backup")
              for n in range(4)]
        assert gate.started[0].wait(WAIT) and gate.started[1].wait(WAIT)
        assert not gate.started[2].is_set()
        gate.release[0].set()
        assert gate.started[2].wait(WAIT)
        for n in range(1, 4):
            gate.release[n].set()
        assert [h.result(WAIT) for h in hs] == [0, 1, 2, 3]
        assert gate.peak == 2
    finally:
        q.shutdown(grace_s=WAIT)


def test_lane_order_holds_behind_a_held_back_head() -> None:
    """A lane whose head waits for a group slot keeps its later jobs behind it (FIFO)."""
    gate = Gate()
    q = SerializerQueue(workers=2, limits={"backup": 1})
    q.start()
    try:
        first = q.submit(100, lambda: gate.job(0), label="b0", group="backup")
        assert gate.started[0].wait(WAIT)
        held = q.submit(101, lambda: gate.job(1), label="b1", group="backup")
        after: list[str] = []
        behind = q.submit(101, lambda: after.append("start 101"), label="start 101")
        assert not behind.done()
        gate.release[0].set()
        gate.release[1].set()
        assert first.result(WAIT) == 0 and held.result(WAIT) == 1
        behind.result(WAIT)
        assert after == ["start 101"] and gate.order == [0, 1]
    finally:
        q.shutdown(grace_s=WAIT)


@pytest.mark.parametrize("limit", [0, -1, True, 1.5])
def test_bad_limit_is_refused(limit: object) -> None:
    """A limit must be an integer of at least 1."""
    with pytest.raises(InvalidJob, match="limit of group 'backup'"):
        SerializerQueue(workers=2, limits={"backup": limit})  # type: ignore[dict-item]
