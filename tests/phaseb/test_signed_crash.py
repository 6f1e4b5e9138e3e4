"""SIGKILL the daemon during a signed op, restart it: never executed twice (target T10).

The PVE and hub simulators run in this process; the daemon is the real program as a child
process. A crashing run is :mod:`tests.phaseb.crash_agent`, which kills itself right after one
durable write of the op; the next run recovers from the journal and gets the same op again
(the hub re-delivers it until a report shows its outcome).

The op is a ``guest.rollback``: a safety snapshot step, then the rollback. Whatever the crash
point, PVE sees at most one snapshot and one rollback, and the outcome follows one rule: an op
without its own journal ``begin`` was never sent -- it runs after the restart (or is reported
``failed``, "expired before it ran", once past its ``expires_at``); only an op whose ``begin``
is journaled without a task may have reached PVE, and only that one is reported ``unknown``.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import pytest

from felhom_agent.signedops.gate import safety_snapshot_name
from felhom_agent.signedops.unstarted import EXPIRED_REASON
from felhom_agent.state.journal import Journal, JournalEntry
from tests.phaseb.harness import TIMEOUT, Harness
from tests.phaseb.signing import op_payload
from tests.support.daemon import DaemonChild

CRASH_AGENT = (sys.executable, "-m", "tests.phaseb.crash_agent")
#: Past the op's ten-minute lifetime, within the nonce store's skew (the record is kept).
EXPIRED = ("--op-clock-offset", "650")
RUN_LOG = "never sent; running it now"


def _agent(op_id: str, point: str, *extra: str) -> tuple[str, ...]:
    # Grace 0 after a crash: the killed process can have no call in flight.
    return (*CRASH_AGENT, "--crash-point", point, "--op-id", op_id, "--lookup-grace-s", "0",
            *extra, "--")


def _rollback(h: Harness) -> str:
    h.pve.set_task_duration("qmsnapshot", 0.4)
    h.pve.set_task_duration("qmrollback", 0.4)
    return h.deliver(op_payload("guest.rollback", 101, {"snapname": "initial"}))


def _crash(h: Harness, op_id: str, point: str, *extra: str) -> None:
    crashing = DaemonChild(h.config_path, h.tmp / f"crashed{len(h.runs)}.log",
                           program=_agent(op_id, point, *extra))
    h.runs.append(crashing)
    assert crashing.wait() == -9, crashing.text()


def _finish(h: Harness, op_id: str, *extra: str) -> dict[str, Any]:
    """Restart, wait for the op's outcome, stop; every task ended, nothing pending."""
    h.start(program=_agent(op_id, "none", *extra))
    result = h.wait_reported([op_id])[op_id]
    assert h.stop() == 0
    for task in h.pve.tasks():
        h.pve.wait_task(task["upid"], TIMEOUT)
    with Journal.open(h.tmp / "state", clock=time.time,
                      logger=logging.getLogger("test.phaseb.crash")) as journal:
        assert journal.pending() == []
    return result


def _entry(h: Harness, op_id: str) -> JournalEntry | None:
    with Journal.open(h.tmp / "state", clock=time.time,
                      logger=logging.getLogger("test.phaseb.crash")) as journal:
        return journal.get(op_id)


def _types(h: Harness) -> list[str]:
    return [t["type"] for t in h.pve.tasks() if t["id"] == "101"]


#: crash point -> (final state, PVE tasks of guest 101 afterwards).
EXPECTED = {
    # never sent: runs after the restart, each step once
    "after_mark": ("applied", ["qmsnapshot", "qmrollback"]),
    # the safety step's begin is journaled, no task exists: that step is unknown, so the
    # rollback does not run; the rollback itself was never sent, so the op is failed
    "safety_begin": ("failed", []),
    # the safety task is re-attached, then the never-sent rollback runs
    "safety_wait": ("applied", ["qmsnapshot", "qmrollback"]),
    "safety_done": ("applied", ["qmsnapshot", "qmrollback"]),
    # the rollback's own begin is journaled without a task: it may have reached PVE
    "op_begin": ("unknown", ["qmsnapshot"]),
    "op_wait": ("applied", ["qmsnapshot", "qmrollback"]),
    "op_done": ("applied", ["qmsnapshot", "qmrollback"]),
}


@pytest.mark.parametrize("point", sorted(EXPECTED))
def test_crash_during_signed_op_never_runs_it_twice(point: str, harness: Harness) -> None:
    """After SIGKILL at any durable write the op ends by the rule, each call sent at most once."""
    h = harness
    op_id = _rollback(h)
    _crash(h, op_id, point)
    if point != "op_done":
        assert h.reported(op_id) is None  # no outcome reached the hub before the crash
    result = _finish(h, op_id)
    state, types = EXPECTED[point]
    assert result["state"] == state, (result, h.log())
    assert _types(h) == types
    recovered = h.runs[-1].text()
    # the rollback had no begin before the crash: run after the restart (it may then fail)
    assert (RUN_LOG in recovered) == (point in ("after_mark", "safety_begin", "safety_wait",
                                                "safety_done"))
    if point == "safety_begin":
        assert f"recovery: op {op_id}.safety-snapshot (" in recovered
        assert "safety snapshot" in result["reason"] and "was not run" in result["reason"]
        entry = _entry(h, op_id)
        assert entry is not None and entry.began_at is None  # one record: no call was sent
    if point == "op_begin":
        assert "no matching task on the node" in result["reason"]
    if point in ("safety_wait", "op_wait"):
        step = op_id + (".safety-snapshot" if point == "safety_wait" else "")
        assert f"recovery: op {step} (" in recovered and "re-attached to" in recovered
    if "qmsnapshot" in types:
        assert safety_snapshot_name(op_id) in h.pve.guest(101)["snapshots"]


@pytest.mark.parametrize("point", ["after_mark", "safety_done"])
def test_op_that_expired_before_it_ran_is_failed_in_one_record(point: str,
                                                                harness: Harness) -> None:
    """Accepted, killed before the rollback was sent, re-delivered after expiry: failed."""
    h = harness
    op_id = _rollback(h)
    _crash(h, op_id, point)
    result = _finish(h, op_id, *EXPIRED)
    assert result["state"] == "failed"
    assert result["reason"].startswith(EXPIRED_REASON)
    entry = _entry(h, op_id)
    assert entry is not None and entry.began_at is None and entry.upid is None
    assert _types(h) == ([] if point == "after_mark" else ["qmsnapshot"])


def test_kill_right_after_the_expired_record_keeps_it(harness: Harness) -> None:
    """The expired outcome is one record: killed right after it, the restart reports it."""
    h = harness
    op_id = _rollback(h)
    _crash(h, op_id, "after_mark")
    _crash(h, op_id, "decided", *EXPIRED)
    result = _finish(h, op_id, *EXPIRED)
    assert result["state"] == "failed" and result["reason"].startswith(EXPIRED_REASON)
    entry = _entry(h, op_id)
    assert entry is not None and entry.began_at is None
    assert _types(h) == []


@pytest.mark.parametrize("second", ["safety_begin", "safety_wait", "safety_done", "op_wait"])
def test_resumed_op_killed_again_still_runs_each_step_once(second: str,
                                                           harness: Harness) -> None:
    """Killed before anything was sent, then killed again while the resumed op ran."""
    h = harness
    op_id = _rollback(h)
    _crash(h, op_id, "after_mark")
    _crash(h, op_id, second)
    result = _finish(h, op_id)
    if second == "safety_begin":
        assert result["state"] == "failed"
        assert _types(h) == []
    else:
        assert result["state"] == "applied", h.log()
        assert _types(h) == ["qmsnapshot", "qmrollback"]
