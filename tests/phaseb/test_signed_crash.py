"""SIGKILL the daemon during a signed op, restart it: never executed twice (target T10).

The PVE and hub simulators run in this process; the daemon is the real program as a child
process. The first run is :mod:`tests.phaseb.crash_agent`, which kills itself at a crash point
of the op; the second is ``python -m felhom_agent``, which recovers from the journal and gets
the same op again (the hub re-delivers it until a report shows its outcome).
"""

from __future__ import annotations

import logging
import sys
import time

import pytest

from felhom_agent.signedops.gate import safety_snapshot_name
from felhom_agent.state.journal import Journal
from tests.phaseb.harness import TIMEOUT, Harness
from tests.phaseb.signing import op_payload
from tests.support.daemon import DaemonChild

CRASH_AGENT = (sys.executable, "-m", "tests.phaseb.crash_agent")


@pytest.mark.parametrize("point", ["after_mark", "safety_wait", "op_wait"])
def test_crash_during_signed_op_never_runs_it_twice(point: str, harness: Harness) -> None:
    """After SIGKILL at any point the op is re-attached or reported, and PVE ran it at most once."""
    h = harness
    h.pve.set_task_duration("qmsnapshot", 0.4)
    h.pve.set_task_duration("qmrollback", 0.4)
    op_id = h.deliver(op_payload("guest.rollback", 101, {"snapname": "initial"}))

    crashing = DaemonChild(h.config_path, h.tmp / "crashed.log",
                           program=(*CRASH_AGENT, "--crash-point", point, "--op-id", op_id, "--"))
    h.runs.append(crashing)
    assert crashing.wait() == -9, crashing.text()
    assert h.reported(op_id) is None  # no outcome reached the hub before the crash

    h.start()
    result = h.wait_reported([op_id])[op_id]
    assert h.stop() == 0
    for task in h.pve.tasks():
        h.pve.wait_task(task["upid"], TIMEOUT)
    with Journal.open(h.tmp / "state", clock=time.time,
                      logger=logging.getLogger("test.phaseb.crash")) as journal:
        assert journal.pending() == []
    types = [t["type"] for t in h.pve.tasks() if t["id"] == "101"]
    assert types.count("qmrollback") <= 1 and types.count("qmsnapshot") <= 1
    recovered = h.runs[-1].text()
    if point == "op_wait":
        assert f"recovery: op {op_id} (" in recovered and "re-attached to" in recovered
        assert result["state"] == "applied"
        assert types == ["qmsnapshot", "qmrollback"]
    else:
        # consumed before its own step began: reported, never re-run
        assert result["state"] == "failed"
        assert "never started" in result["reason"]
        assert "qmrollback" not in types
    if point == "safety_wait":
        assert f"recovery: op {op_id}.safety-snapshot (" in recovered
        assert safety_snapshot_name(op_id) in h.pve.guest(101)["snapshots"]
