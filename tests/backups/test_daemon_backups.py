"""Backup policies and signed backup ops through the daemon program (a child process).

The real program (``python -m felhom_agent``) against the PVE and hub simulators: what the
tests see is what an operator sees -- the reports the hub receives, the tasks and volumes on
the node, the audit log, the exit status.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from felhom_agent.backup.notes import notes_template
from tests.backups.conftest import MakeHarness
from tests.backups.rig import DAY, HIDING_TOKEN, backup_scenario, policy_guests, vzdumps
from tests.phaseb.harness import TIMEOUT, Harness
from tests.phaseb.signing import op_payload
from tests.support.daemon import wait_report

GIB = 2**30
Body = Mapping[str, Any]


def _entries(body: Body) -> dict[int, dict[str, Any]]:
    return {e["vmid"]: e for e in body.get("backup", ())}


def _volumes(h: Harness, vmid: int, storage: str = "local") -> list[dict[str, Any]]:
    return [b for b in h.pve.backups(storage) if b["vmid"] == vmid]


def _audit(h: Harness) -> list[dict[str, Any]]:
    path = h.tmp / "state" / "audit.log"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _backup(vmid: int, kind: str, age_s: float, **extra: Any) -> dict[str, Any]:
    return {"vmid": vmid, "type": kind, "ctime": int(time.time() - age_s), **extra}


def _passes(h: Harness, n: int) -> None:
    """Let the daemon report ``n`` more times (it plans every second, reports every second)."""
    h.hub.wait_for_reports(len(h.hub.reports()) + n, TIMEOUT)


# ------------------------------------------------------------------ policy, prune, restart


def test_one_backup_per_due_guest_reported_pruned_and_not_repeated_after_a_restart(
        make_harness: MakeHarness) -> None:
    """100 and 102 are due (no backup): one vzdump each, found and reported with its volid;
    101 is fresh with five backups, one protected: pruned to ``min_keep`` 2 plus the
    protected one, the dry run in the audit. A second start repeats nothing."""
    old = [_backup(101, "qemu", age, protected=age == 3 * DAY)
           for age in (3600, DAY, 2 * DAY, 3 * DAY, 4 * DAY)]
    h = make_harness(backup_scenario(local_backups=old), backup={"min_keep": 2})
    by_age = [b["volid"] for b in sorted(_volumes(h, 101), key=lambda b: -b["ctime"])]
    guests = policy_guests({100: "lxc", 102: "lxc"})
    guests.update(policy_guests({101: "qemu"}, keep={"last": 1}))
    h.hub.set_desired({"generation": 1, "guests": guests})
    child = h.start()

    def done(body: Body) -> bool:
        e = _entries(body)
        return (all(e.get(v, {}).get("status") == "ok" and e[v]["last"] for v in (100, 102))
                and e.get(101, {}).get("count") == 3)

    body = wait_report(h.hub, done, TIMEOUT, child=child)
    entries = _entries(body)
    for vmid in (100, 102):
        [vol] = _volumes(h, vmid)
        assert entries[vmid]["last"]["volid"] == vol["volid"]
        assert entries[vmid]["storage"] == "local" and entries[vmid]["count"] == 1
        assert entries[vmid]["policy"] == {"storage": "local", "every_h": 24,
                                           "mode": "snapshot"}
        [task] = vzdumps(h.pve, vmid)
        assert task["exitstatus"] == "OK"
        [applied] = [a for a in _audit(h) if a["kind"] == "backup" and a["vmid"] == vmid]
        assert applied["outcome"] == "applied" and applied["upid"] == task["upid"]
        assert vol["notes"] == notes_template(applied["op_id"])
        assert applied["reason"].startswith(f"backup {vol['volid']} (")
    left = {b["volid"]: b["protected"] for b in _volumes(h, 101)}
    assert left == {by_age[0]: False, by_age[1]: False, by_age[3]: True}
    assert vzdumps(h.pve, 101) == []
    [dry] = [a for a in _audit(h) if a["outcome"] == "dry_run"]
    assert dry["kind"] == "prune" and dry["vmid"] == 101
    assert set(dry["reason"].partition(", remove ")[2].split(", ")) == {by_age[2], by_age[4]}
    assert body["pbs"] and body["pbs"][0]["storage"] == "pbs1"
    assert h.stop() == 0

    tasks = len(h.pve.tasks())
    again = h.start()
    wait_report(h.hub, lambda b: (b["reconcile"] or {}).get("last_plan_at") is not None
                and done(b), TIMEOUT, after=len(h.hub.reports()), child=again)
    _passes(h, 3)
    assert len(h.pve.tasks()) == tasks
    assert [len(vzdumps(h.pve, v)) for v in (100, 101, 102)] == [1, 0, 1]
    assert h.stop() == 0


# ------------------------------------------------------------------ refusals and the stale lock


def test_full_storage_stale_lock_and_hidden_backups_are_reported_and_nothing_is_sent(
        make_harness: MakeHarness) -> None:
    """``local`` is too full for 100's next backup (refused with the numbers), 101 carries a
    ``backup`` lock with no vzdump running (stale_lock, the fix named), and the token may not
    see 102's backups (a permission problem, not "no backups"): no vzdump, pass after pass."""
    old = [_backup(100, "lxc", 2 * DAY, size=10 * GIB), _backup(102, "lxc", 3600)]
    h = make_harness(backup_scenario(local_backups=old), token=HIDING_TOKEN)
    h.pve.set_storage("local", avail=5 * GIB)
    h.pve.set_lock(101, "backup")
    guests = policy_guests({100: "lxc", 102: "lxc"})
    guests.update(policy_guests({101: "qemu"}))
    h.hub.set_desired({"generation": 1, "guests": guests})
    child = h.start()

    def reported(body: Body) -> bool:
        e = _entries(body)
        return [e.get(v, {}).get("status") for v in (100, 101, 102)] == [
            "refused", "stale_lock", "refused"]

    body = wait_report(h.hub, reported, TIMEOUT, child=child)
    entries = _entries(body)
    assert (f"storage local full: need ~{12 * GIB} bytes, avail {5 * GIB}"
            in entries[100]["reason"])
    assert entries[100]["last"]["size"] == 10 * GIB
    assert "`qm unlock 101`" in entries[101]["reason"]
    assert entries[102]["reason"].startswith("permission: the token lacks VM.Backup on "
                                             "/vms/102")
    assert entries[102]["last"] is None
    refused = {r["vmid"]: r["reason"] for r in body["reconcile"]["refused"]}
    assert set(refused) == {100, 102}
    _passes(h, 3)
    assert vzdumps(h.pve) == []
    assert h.stop() == 0


# ------------------------------------------------------------------ killed during a backup


def test_agent_killed_during_a_backup_reattaches_on_restart_exactly_one_volume(
        make_harness: MakeHarness) -> None:
    """SIGKILL while vzdump runs: the restarted agent re-attaches to the task (it sends no
    second vzdump), finds the volume, and reports it."""
    h = make_harness(backup_scenario())
    h.pve.set_backup(100, duration_s=3600)
    h.hub.set_desired({"generation": 1, "guests": policy_guests({100: "lxc"})})
    child = h.start()
    assert h.pve.wait_lock(100, "backup", timeout=TIMEOUT)
    [task] = vzdumps(h.pve, 100)
    child.sigkill()
    again = h.start()
    h.pve.release_tasks()
    body = wait_report(h.hub, lambda b: _entries(b).get(100, {}).get("status") == "ok",
                       TIMEOUT, child=again)
    [vol] = _volumes(h, 100)
    assert _entries(body)[100]["last"]["volid"] == vol["volid"]
    assert vzdumps(h.pve, 100) == [h.pve.wait_task(task["upid"])]
    [applied] = [a for a in _audit(h) if a["kind"] == "backup"]
    assert applied["outcome"] == "applied" and applied["upid"] == task["upid"]
    assert vol["notes"] == notes_template(applied["op_id"])
    assert "re-attached" in again.text()
    _passes(h, 2)
    assert len(vzdumps(h.pve, 100)) == 1
    assert h.stop() == 0


# ------------------------------------------------------------------ signed ops


def test_signed_backup_protect_and_delete(make_harness: MakeHarness) -> None:
    """guest.backup (protected) is applied; one to a storage that does not exist is refused
    at once (reported, not retried); backup.delete is refused without ``irreversible`` and
    for a protected backup; backup.protect false, then the delete runs."""
    h = make_harness(backup_scenario())
    made = h.deliver(op_payload("guest.backup", 100, {"storage": "local", "protected": True}))
    nowhere = h.deliver(op_payload("guest.backup", 102, {"storage": "nosuch"}))
    h.start()
    first = h.wait_reported([made, nowhere])
    assert first[nowhere]["state"] == "refused"
    assert "No such storage" in (first[nowhere]["reason"] or "")
    [vol] = _volumes(h, 100)
    assert first[made]["state"] == "applied" and vol["protected"] is True
    assert vol["notes"] == notes_template(made)
    volid = vol["volid"]
    ids = [
        h.deliver(op_payload("backup.delete", 100, {"volid": volid})),
        h.deliver(op_payload("backup.delete", 100, {"volid": volid}, irreversible=True)),
        h.deliver(op_payload("backup.protect", 100, {"volid": volid, "protected": False})),
        h.deliver(op_payload("backup.delete", 100, {"volid": volid}, irreversible=True)),
    ]
    found = h.wait_reported(ids)
    states = [found[i]["state"] for i in ids]
    assert states == ["refused", "refused", "applied", "applied"], found
    assert "irreversible" in (found[ids[0]]["reason"] or "")
    assert "is protected" in (found[ids[1]]["reason"] or "")
    assert _volumes(h, 100) == []
    assert [t["type"] for t in h.pve.tasks()] == ["vzdump", "imgdel"]
    # the refused op was decided once: one audit line, never re-run
    assert [a["outcome"] for a in _audit(h) if a["op_id"] == nowhere] == ["refused"]
    assert h.log().count("running it now: guest.backup vmid 102") == 0
    assert h.stop() == 0


def test_the_backup_of_a_destroyed_guest_can_be_deleted(make_harness: MakeHarness) -> None:
    """A backup outlives its guest: a signed backup.delete of vmid 999's backup (no guest 999
    on the node) takes the guest type from the volume's name and runs; without that the gate
    would refuse it as "not a guest"."""
    old = {"vmid": 999, "type": "lxc", "ctime": int(time.time() - 3 * DAY)}
    h = make_harness(backup_scenario(local_backups=[old]))
    [vol] = _volumes(h, 999)
    op = h.deliver(op_payload("backup.delete", 999, {"volid": vol["volid"]}, irreversible=True))
    h.start()
    done = h.wait_reported([op])
    assert done[op]["state"] == "applied", done
    assert _volumes(h, 999) == []
    assert [t["type"] for t in h.pve.tasks()] == ["imgdel"]
    assert h.stop() == 0


# ------------------------------------------------------------------ bad policies


def test_bad_policies_are_reported_and_nothing_else_breaks(make_harness: MakeHarness) -> None:
    """An unknown storage and a non-backup storage refuse that guest's policy only (another
    guest is backed up); a malformed policy rejects the whole desired state with the path in
    the report's errors, and the daemon keeps running on the previous one."""
    h = make_harness(backup_scenario())
    guests = policy_guests({100: "lxc", 102: "lxc"})
    guests["100"]["backup"]["storage"] = "nosuch"
    guests.update(policy_guests({101: "qemu"}, storage="local-lvm"))
    h.hub.set_desired({"generation": 1, "guests": guests})
    child = h.start()
    body = wait_report(h.hub, lambda b: _entries(b).get(102, {}).get("status") == "ok",
                       TIMEOUT, child=child)
    entries = _entries(body)
    assert entries[100]["status"] == "refused"
    assert entries[100]["reason"].startswith("backup storage nosuch does not exist on this node")
    assert entries[101]["status"] == "refused"
    assert entries[101]["reason"].startswith("backup storage local-lvm does not hold backups")
    assert [len(vzdumps(h.pve, v)) for v in (100, 101, 102)] == [0, 0, 1]

    good = policy_guests({102: "lxc"})
    bad: list[tuple[dict[str, Any], str]] = [
        ({"every_h": 0}, "desired.guests.102.backup.every_h"),
        ({"window": "1:00-5:00"}, "desired.guests.102.backup.window"),
        ({"keep": {"daly": 7}}, "desired.guests.102.backup.keep.daly"),
    ]
    for generation, (change, path) in enumerate(bad, start=2):
        doc = {"102": {"type": "lxc", "backup": {**good["102"]["backup"], **change}}}
        h.hub.set_desired({"generation": generation, "guests": doc})

        def rejected(b: Body, path: str = path) -> bool:
            return any(e["source"] == "desired" and path in e["message"]
                       for e in b["errors"])

        seen = wait_report(h.hub, rejected, TIMEOUT, after=len(h.hub.reports()), child=child)
        assert (seen["reconcile"] or {}).get("generation") == 1, seen["reconcile"]
    h.hub.set_desired({"generation": 20, "guests": good})
    fixed = wait_report(h.hub, lambda b: (b["reconcile"] or {}).get("generation") == 20
                        and not any(e["source"] == "desired" for e in b["errors"]),
                        TIMEOUT, after=len(h.hub.reports()), child=child)
    assert _entries(fixed)[102]["status"] == "ok"
    assert [len(vzdumps(h.pve, v)) for v in (100, 101, 102)] == [0, 0, 1]
    assert child.alive() and h.stop() == 0
