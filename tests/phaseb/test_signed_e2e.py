"""Signed ops end to end: hub simulator -> daemon (real engine, verifying sink) -> PVE simulator.

Every op is signed at test time by the real ``ssh-keygen -Y sign -n felhom-op``; outcomes and
rejection reasons are asserted as the hub received them in the reports' ``ops``.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from felhom_agent.signedops.gate import safety_snapshot_name
from felhom_agent.sim.pve import Fault
from tests.phaseb.harness import Harness
from tests.phaseb.signing import op_payload


def _audit(h: Harness) -> list[dict[str, Any]]:
    path = h.tmp / "state" / "audit.log"
    return [json.loads(line) for line in path.read_text().splitlines()]


def _types(h: Harness, vmid: int) -> list[str]:
    return [t["type"] for t in h.pve.tasks() if t["id"] == str(vmid)]


def test_every_kind_applied_end_to_end(harness: Harness) -> None:
    """All eight signed kinds run on the simulator, are reported applied, audited by principal."""
    h = harness
    docs = [
        op_payload("guest.snapshot", 101, {"snapname": "s1", "description": "before"}),
        op_payload("guest.set_config", 101, {"memory": 2048}),
        op_payload("guest.rollback", 101, {"snapname": "initial"}),
        op_payload("guest.delete_snapshot", 101, {"snapname": "s1"}, irreversible=True),
        op_payload("guest.start", 101),
        op_payload("guest.shutdown", 101, {"timeout": 30}),
        op_payload("guest.stop", 100),
        op_payload("guest.set_config", 102, {"description": "cache", "tags": "phaseb"}),
        op_payload("guest.destroy", 104, irreversible=True),
        op_payload("guest.destroy", 105, {"stop_first": True, "purge": True},
                   irreversible=True),
    ]
    ids = [h.deliver(d) for d in docs]
    h.start()
    found = h.wait_reported(ids)
    assert {i: found[i]["state"] for i in ids} == dict.fromkeys(ids, "applied"), found
    h.hub.wait_for_reports(len(h.hub.reports()) + 1, 10.0)  # audit lines follow outcomes
    assert h.stop() == 0

    # order on 101: delivery order, each destructive op behind its own safety snapshot
    assert _types(h, 101) == ["qmsnapshot", "qmsnapshot", "qmconfig", "qmsnapshot",
                              "qmrollback", "qmdelsnapshot", "qmstart", "qmshutdown"]
    snaps = set(h.pve.guest(101)["snapshots"])
    assert {safety_snapshot_name(ids[1]), safety_snapshot_name(ids[2])} <= snaps
    assert "s1" not in snaps
    assert h.pve.guest(100)["status"] == "stopped"
    assert h.pve.guest(102)["config"]["tags"] == "phaseb"
    assert not h.pve.has_guest(104) and not h.pve.has_guest(105)
    assert _types(h, 105) == ["vzstop", "vzdestroy"]
    audit = _audit(h)
    assert {a["op_id"] for a in audit} >= set(ids)
    assert {a["source"] for a in audit} == {"alice@ops"}
    # every mutation has its task id, except the synchronous LXC config write (PUT -> null)
    no_upid = {a["op_id"] for a in audit if a["op_id"] in ids and not a["upid"]}
    assert no_upid == {ids[7]}
    # the report's recent audit carries the same lines to the hub
    reported = {a["op_id"]: a["source"] for r in h.hub.reports() for a in r.body["audit"]}
    assert {reported[i] for i in ids} == {"alice@ops"}


def test_gate_and_verification_refusals_reach_the_hub(harness: Harness) -> None:
    """Each refused op is reported ``refused`` with its own reason, and nothing runs."""
    h = harness
    now = datetime.now(UTC).replace(microsecond=0)
    cases = {
        "not-irreversible": h.deliver(op_payload("guest.destroy", 104)),
        "protected": h.deliver(op_payload("guest.destroy", 103, irreversible=True)),
        "running": h.deliver(op_payload("guest.destroy", 100, irreversible=True)),
        "bad-params": h.deliver(op_payload("guest.rollback", 101, {"name": "initial"})),
        "no-snapshot": h.deliver(op_payload("guest.rollback", 101, {"snapname": "nope"})),
        "no-guest": h.deliver(op_payload("guest.start", 999)),
        "expired": h.deliver(op_payload("guest.start", 102,
                                        issued_at=now - timedelta(hours=1), lifetime_s=600)),
        "wrong-host": h.deliver(op_payload("guest.start", 102, host_id="pve2")),
        "namespace": h.deliver(op_payload("guest.start", 102), namespace="git"),
        "unknown-signer": h.deliver(op_payload("guest.start", 102), signer=h.stranger),
    }
    before = len(h.pve.tasks())
    h.start()
    found = h.wait_reported(list(cases.values()))
    assert h.stop() == 0
    reasons = {name: found[op_id]["reason"] for name, op_id in cases.items()}
    assert {found[i]["state"] for i in cases.values()} == {"refused"}, found
    assert "irreversible" in reasons["not-irreversible"]
    assert "protection: 1" in reasons["protected"]
    assert "is running" in reasons["running"] and "stop_first" in reasons["running"]
    assert "unknown key(s) name" in reasons["bad-params"]
    assert "does not exist" in reasons["no-snapshot"]
    assert "not a guest on node pve1" in reasons["no-guest"]
    assert reasons["expired"].startswith("expired:")
    assert reasons["wrong-host"].startswith("host-id:")
    assert reasons["namespace"].startswith("namespace:")
    assert reasons["unknown-signer"].startswith("untrusted-key:")
    assert len(h.pve.tasks()) == before
    assert h.pve.has_guest(103) and h.pve.has_guest(104)
    assert h.hub.pending_ops() == ()
    # verified-but-gated refusals are journalled and audited by principal; the others are not
    audited = {a["op_id"]: a for a in _audit(h)}
    for name in ("not-irreversible", "protected", "running", "bad-params", "no-snapshot"):
        assert audited[cases[name]]["outcome"] == "refused"
        assert audited[cases[name]]["source"] == "alice@ops"
    for name in ("expired", "wrong-host", "namespace", "unknown-signer"):
        assert cases[name] not in audited


def test_rollback_takes_safety_snapshot_first(harness: Harness) -> None:
    """A signed rollback runs only after its ``felhom-pre-<op id prefix>`` snapshot exists."""
    h = harness
    op_id = h.deliver(op_payload("guest.rollback", 101, {"snapname": "initial"}))
    h.start()
    assert h.wait_reported([op_id])[op_id]["state"] == "applied"
    assert h.stop() == 0
    name = safety_snapshot_name(op_id)
    assert name == "felhom-pre-" + op_id.replace("-", "")[:8]
    tasks = [t for t in h.pve.tasks() if t["id"] == "101"]
    assert [t["type"] for t in tasks] == ["qmsnapshot", "qmrollback"]
    assert tasks[0]["exitstatus"] == "OK"
    assert name in h.pve.guest(101)["snapshots"]
    journal = (h.tmp / "state" / "journal.log").read_text()
    assert f"{op_id}.safety-snapshot" in journal


def test_failing_safety_snapshot_blocks_the_op(harness: Harness) -> None:
    """When the safety snapshot task fails, the rollback is not sent and is reported failed."""
    h = harness
    h.pve.inject(Fault("task_fail", task_type="qmsnapshot", vmid=101,
                       message="snapshot feature is not available"))
    op_id = h.deliver(op_payload("guest.rollback", 101, {"snapname": "initial"}))
    cfg_id = h.deliver(op_payload("guest.set_config", 101, {"memory": 1024}))
    h.start()
    found = h.wait_reported([op_id, cfg_id])
    assert h.stop() == 0
    for entry in found.values():
        assert entry["state"] == "failed"
        assert "safety snapshot felhom-pre-" in entry["reason"]
        assert "snapshot feature is not available" in entry["reason"]
    assert [t["type"] for t in h.pve.tasks() if t["id"] == "101"] == ["qmsnapshot"] * 2
    assert h.pve.guest(101)["config"]["memory"] == "4096"


def test_replayed_op_reports_stored_result_and_runs_once(harness: Harness) -> None:
    """A re-delivered op (also after a restart) reports its stored outcome; PVE saw it once."""
    h = harness
    doc = op_payload("guest.start", 102)
    payload, sig = h.signer.sign(doc)
    op_id = doc["op_id"]
    h.hub.add_signed_op(payload, sig)
    h.start()
    assert h.wait_reported([op_id])[op_id]["state"] == "applied"
    assert h.hub.pending_ops() == ()
    n = len(h.hub.reports())
    h.hub.add_signed_op(payload, sig)  # the hub re-delivers it
    h.hub.wait_for_reports(n + 3, 10.0)
    assert h.hub.pending_ops() == ()
    assert h.stop() == 0
    h.hub.add_signed_op(payload, sig)  # and again to a restarted agent
    h.start()
    n = len(h.hub.reports())
    h.hub.wait_for_reports(n + 2, 10.0)
    assert h.hub.pending_ops() == ()
    assert h.stop() == 0
    latest = h.hub.reports()[-1].body["ops"]
    assert [o["state"] for o in latest if o["op_id"] == op_id] == ["applied"]
    assert [t["type"] for t in h.pve.tasks() if t["id"] == "102"] == ["vzstart"]


def test_hub_loop_keeps_polling_while_the_op_task_runs(harness: Harness) -> None:
    """The op is handed to the queue: reports keep flowing (op ``running``) until PVE finishes."""
    h = harness
    h.pve.set_task_duration("qmrollback", 3600)
    op_id = h.deliver(op_payload("guest.rollback", 101, {"snapname": "initial"}))
    h.start()

    def running_reports() -> int:
        return sum(1 for r in h.hub.reports() for o in r.body["ops"]
                   if o["op_id"] == op_id and o["state"] == "running"
                   and o.get("upid") is not None)

    while running_reports() < 2:
        h.hub.wait_for_reports(len(h.hub.reports()) + 1, 10.0)
    assert h.hub.pending_ops() != ()  # still re-delivered, and still skipped
    h.pve.release_tasks()
    assert h.wait_reported([op_id])[op_id]["state"] == "applied"
    assert h.stop() == 0
    assert [t["type"] for t in h.pve.tasks() if t["id"] == "101"] == ["qmsnapshot", "qmrollback"]
