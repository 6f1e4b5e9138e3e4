"""The reversibility gate as a pure function: params, classification, steps.

See ``docs/architecture.md`` ("Classes and the reversibility gate").
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from felhom_agent.authz.envelope import SignedOp
from felhom_agent.proxmox.models import GuestType
from felhom_agent.signedops.gate import (
    GateRefused,
    GuestFacts,
    check_op,
    plan_steps,
    safety_snapshot_name,
)

OP_ID = "0b9f3c2a-1d4e-4f00-8a6b-123456789abc"
T0 = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
STOPPED = GuestFacts(101, GuestType.QEMU, running=False, protected=False,
                     snapshots=frozenset({"initial"}))


def op(kind: str, params: dict[str, Any] | None = None, *, irreversible: bool = False,
       vmid: int = 101) -> SignedOp:
    return SignedOp(op_id=OP_ID, host_id="pve1", kind=kind, vmid=vmid, params=params or {},
                    irreversible=irreversible, nonce="0" * 32, issued_at=T0,
                    expires_at=T0 + timedelta(minutes=10))


def steps(o: SignedOp, guest: GuestFacts = STOPPED) -> list[tuple[str, str]]:
    return [(s.purpose, s.kind) for s in plan_steps(o, check_op(o), guest)]


def test_safety_snapshot_name_is_a_valid_pve_name() -> None:
    """The name is ``felhom-pre-`` + 8 hex of the op id: letter first, charset, <= 40 chars."""
    name = safety_snapshot_name(OP_ID)
    assert name == "felhom-pre-0b9f3c2a"
    assert re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]{1,39}", name)


@pytest.mark.parametrize(("kind", "params"), [
    ("guest.start", {}), ("guest.stop", {"timeout": 5}), ("guest.shutdown", {"force_stop": True}),
    ("guest.snapshot", {"snapname": "pre-upgrade"}),
    ("guest.set_config", {"description": "x", "tags": "a;b", "onboot": 1}),
])
def test_benign_kinds_are_the_op_alone(kind: str, params: dict[str, Any]) -> None:
    """Benign ops (and config writes of benign keys only) need no pre-step."""
    assert steps(op(kind, params)) == [("op", kind.removeprefix("guest."))]


@pytest.mark.parametrize(("kind", "params"), [
    ("guest.rollback", {"snapname": "initial"}),
    ("guest.set_config", {"memory": 2048, "description": "x"}),
])
def test_reversible_destructive_ops_get_a_safety_snapshot_first(
        kind: str, params: dict[str, Any]) -> None:
    """Rollback and a non-benign config write are preceded by the safety snapshot step."""
    planned = plan_steps(op(kind, params), check_op(op(kind, params)), STOPPED)
    assert [s.purpose for s in planned] == ["safety-snapshot", "op"]
    assert planned[0].params["snapname"] == safety_snapshot_name(OP_ID)
    assert planned[0].op_id == OP_ID + ".safety-snapshot" and planned[1].op_id == OP_ID


@pytest.mark.parametrize("kind", ["guest.destroy", "guest.delete_snapshot"])
def test_irreversible_ops_need_the_flag(kind: str) -> None:
    """Destroy and snapshot delete are refused without ``"irreversible": true``."""
    params = {"snapname": "initial"} if kind == "guest.delete_snapshot" else {}
    with pytest.raises(GateRefused, match="irreversible"):
        check_op(op(kind, params))
    assert steps(op(kind, params, irreversible=True))[-1][0] == "op"


def test_protected_guest_is_never_destroyed() -> None:
    """``protection: 1`` refuses destroy even with the flag and stop_first."""
    guest = GuestFacts(103, GuestType.QEMU, running=False, protected=True)
    with pytest.raises(GateRefused, match="protection: 1"):
        steps(op("guest.destroy", {"stop_first": True}, irreversible=True, vmid=103), guest)


def test_running_guest_is_stopped_first_only_when_asked() -> None:
    """A running guest: refused without ``stop_first``; with it a stop step comes first."""
    running = GuestFacts(105, GuestType.LXC, running=True, protected=False)
    with pytest.raises(GateRefused, match="is running"):
        steps(op("guest.destroy", irreversible=True, vmid=105), running)
    planned = plan_steps(op("guest.destroy", {"stop_first": True, "purge": True},
                            irreversible=True, vmid=105),
                         check_op(op("guest.destroy", irreversible=True)), running)
    assert [(s.purpose, s.kind) for s in planned] == [("stop-first", "stop"), ("op", "destroy")]
    assert planned[1].params == {"purge": True}


@pytest.mark.parametrize(("kind", "params", "text"), [
    ("guest.start", {"force": True}, "unknown key"),
    ("guest.rollback", {}, "snapname is required"),
    ("guest.snapshot", {"snapname": "current"}, "not a PVE snapshot name"),
    ("guest.snapshot", {"snapname": "9lives"}, "not a PVE snapshot name"),
    ("guest.stop", {"timeout": True}, "must be an integer"),
    ("guest.set_config", {}, "no config key"),
    ("guest.set_config", {"digest": "abc"}, "key 'digest'"),
    ("guest.set_config", {"memory": [1]}, "must be a string"),
    ("guest.set_config", {"onboot": "maybe"}, "invalid params"),
])
def test_invalid_params_are_refused(kind: str, params: dict[str, Any], text: str) -> None:
    """Params are checked strictly per kind; anything unexpected refuses the op."""
    with pytest.raises(GateRefused, match=text):
        check_op(op(kind, params))


def test_rollback_to_missing_snapshot_and_taken_name_are_refused() -> None:
    """A rollback target must exist, and an existing safety-snapshot name is not reused."""
    with pytest.raises(GateRefused, match="does not exist"):
        steps(op("guest.rollback", {"snapname": "gone"}))
    taken = GuestFacts(101, GuestType.QEMU, running=False, protected=False,
                       snapshots=frozenset({"initial", safety_snapshot_name(OP_ID)}))
    with pytest.raises(GateRefused, match="already taken"):
        steps(op("guest.rollback", {"snapname": "initial"}), taken)


def test_journalled_pre_steps_are_resumed_not_refused() -> None:
    """After a restart the op's own safety snapshot is not "a name taken by someone else"."""
    rollback = op("guest.rollback", {"snapname": "initial"})
    ours = GuestFacts(101, GuestType.QEMU, running=False, protected=False,
                      snapshots=frozenset({"initial", safety_snapshot_name(OP_ID)}))
    planned = plan_steps(rollback, check_op(rollback), ours,
                         frozenset({OP_ID + ".safety-snapshot"}))
    assert [(s.op_id, s.kind) for s in planned] == [
        (OP_ID + ".safety-snapshot", "snapshot"), (OP_ID, "rollback")]
    # a journalled step with another op id does not lift the refusal
    with pytest.raises(GateRefused, match="already taken"):
        plan_steps(rollback, check_op(rollback), ours, frozenset({"other.safety-snapshot"}))


def test_journalled_stop_first_is_kept_once_the_guest_is_stopped() -> None:
    """A stop step begun before a restart is kept (its outcome is awaited), never re-planned."""
    destroy = op("guest.destroy", {"stop_first": True}, irreversible=True, vmid=105)
    stopped = GuestFacts(105, GuestType.LXC, running=False, protected=False)
    assert [s.purpose for s in plan_steps(destroy, check_op(destroy), stopped)] == ["op"]
    resumed = plan_steps(destroy, check_op(destroy), stopped,
                         frozenset({OP_ID + ".stop-first"}))
    assert [(s.op_id, s.purpose) for s in resumed] == [
        (OP_ID + ".stop-first", "stop-first"), (OP_ID, "op")]
