"""Signed ops end to end: hub simulator -> daemon (real engine, verifying sink) -> PVE simulator.

Every op is signed at test time by the real ``ssh-keygen -Y sign -n felhom-op``; outcomes and
rejection reasons are asserted as the hub received them in the reports' ``ops``.
"""

from __future__ import annotations

import json
from typing import Any

from felhom_agent.reconcile.gate import safety_snapshot_name
from tests.phaseb.harness import Harness
from tests.phaseb.signing import op_payload


def _audit(h: Harness) -> list[dict[str, Any]]:
    path = h.tmp / "state" / "audit.log"
    return [json.loads(line) for line in path.read_text().splitlines()]


def _types(h: Harness, vmid: int) -> list[str]:
    return [t["type"] for t in h.pve.tasks() if t["id"] == str(vmid)]


def test_every_kind_applied_end_to_end(harness: Harness) -> None:
    """All eight §8 kinds run on the simulator, are reported applied and audited by principal."""
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
