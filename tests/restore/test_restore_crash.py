"""SIGKILL the daemon during a signed restore over an existing guest, restart it.

The daemon is the real program as a child process (:mod:`tests.phaseb.crash_agent`: it kills
itself right after one durable write of the op); the restart recovers from the journal and
the hub delivers the op again until a report shows its outcome. The restore of 102 has two
steps: the safety backup (``<op id>.safety-backup``) and the restore itself, each a task of
half a second, so "during" means while PVE runs it.

Whatever the crash point: PVE runs at most one vzdump and at most one restore of 102, a
restore runs only after the safety backup ended OK and is listed (protected), and the op ends
by the signed-op rule -- ``applied`` when its calls went through, ``failed`` when the safety
backup could not be proven (the restore never sent, the guest untouched), ``unknown`` only
when the restore's own ``begin`` was journalled without a call.
"""

from __future__ import annotations

from typing import Any

import pytest

from felhom_agent.backup.notes import SAFETY_BACKUP_SUFFIX, notes_template
from tests.phaseb.harness import Harness
from tests.phaseb.signing import op_payload
from tests.phaseb.test_signed_crash import RUN_LOG, _crash, _finish
from tests.restore.conftest import MakeHarness
from tests.restore.rig import backup_of, restore_entries, restore_scenario, tasks_of

#: crash point -> (final state, PVE tasks of 102 afterwards).
EXPECTED = {
    # accepted, nothing sent: runs after the restart, each step once
    "after_mark": ("applied", ["vzdump", "vzrestore"]),
    # the safety backup's begin without a task: that step is unknown, so no restore
    "backup_begin": ("failed", []),
    # killed while the vzdump ran: re-attached, found, then the restore
    "backup_wait": ("applied", ["vzdump", "vzrestore"]),
    "backup_done": ("applied", ["vzdump", "vzrestore"]),
    # the restore's own begin without a call: it may have reached PVE -> unknown, not re-sent
    "op_begin": ("unknown", ["vzdump"]),
    # the restore reached PVE, its UPID not journalled: found in the task list (vzrestore,
    # id = the target vmid, our token) and adopted
    "restore_sent": ("applied", ["vzdump", "vzrestore"]),
    # killed while the restore ran: re-attached to it
    "op_wait": ("applied", ["vzdump", "vzrestore"]),
    "op_done": ("applied", ["vzdump", "vzrestore"]),
}


def _restore(h: Harness) -> str:
    return h.deliver(op_payload("guest.restore", 102, {"archive": backup_of(h.pve, 102),
                                                       "start": True}))


def _safety(h: Harness, op_id: str) -> list[dict[str, Any]]:
    step = op_id + SAFETY_BACKUP_SUFFIX
    return [b for b in h.pve.backups() if b["notes"] == notes_template(step)]


@pytest.mark.parametrize("point", sorted(EXPECTED))
def test_killed_during_a_restore_each_call_once_never_without_the_safety_backup(
        point: str, make_harness: MakeHarness) -> None:
    """After SIGKILL at any durable write the op ends by the rule; one vzdump and one
    restore at most; the restore only after the safety backup was found."""
    h = make_harness(restore_scenario(vzdump_s=0.5, restore_s=0.5))
    old = h.pve.guest(102)["config"]
    op_id = _restore(h)
    _crash(h, op_id, point)
    if point != "op_done":
        assert h.reported(op_id) is None
    result = _finish(h, op_id)
    state, types = EXPECTED[point]
    assert result["state"] == state, (result, h.log())
    tasks = tasks_of(h.pve, 102)
    assert [t["type"] for t in tasks] == types
    safety = _safety(h, op_id)
    if "vzdump" in types:
        assert tasks[0]["exitstatus"] == "OK"
        [vol] = safety
        assert vol["protected"] is True and "before the restore" in vol["config"]
    else:
        assert safety == []
    guest = h.pve.guest(102)
    if "vzrestore" in types:
        assert tasks[1]["exitstatus"] == "OK"
        assert guest["config"]["hostname"] == "restored-102" and guest["status"] == "running"
    else:
        assert guest["config"] == old and guest["lock"] is None
    recovered = h.runs[-1].text()
    # the restore had no begin before the crash: the re-delivered op runs after the restart
    assert (RUN_LOG in recovered) == (point in ("after_mark", "backup_begin", "backup_wait",
                                                "backup_done"))
    if point == "restore_sent":
        assert f"recovery: op {op_id} (restore 102) re-attached to" in recovered
        assert "re-attached (1 adopted)" in recovered
    if point in ("backup_wait", "op_wait"):
        step = op_id + (SAFETY_BACKUP_SUFFIX if point == "backup_wait" else "")
        assert f"recovery: op {step} (" in recovered and "re-attached to" in recovered
    if point == "backup_begin":
        assert "safety backup to local failed" in result["reason"]
        assert "was not run" in result["reason"]


def test_the_report_names_the_safety_backup_after_a_crash(make_harness: MakeHarness) -> None:
    """Killed while the restore ran, the restarted agent's report still carries the restore
    entry with the safety backup's volid (it is built from the journal)."""
    h = make_harness(restore_scenario(vzdump_s=0.5, restore_s=0.5))
    op_id = _restore(h)
    _crash(h, op_id, "op_wait")
    h.start()
    h.wait_reported([op_id])
    entry = restore_entries(h.hub.reports()[-1].body)[op_id]
    [vol] = _safety(h, op_id)
    assert (entry["state"], entry["safety_backup"], entry["vmid"]) == (
        "applied", vol["volid"], 102)
    assert h.stop() == 0
