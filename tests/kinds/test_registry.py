"""The kind registry is the one source of truth every consumer reads (docs/architecture.md)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from felhom_agent.authz.envelope import parse_payload
from felhom_agent.authz.errors import OpRejected, Reason
from felhom_agent.compose.root import verify_policy
from felhom_agent.config import load_config
from felhom_agent.kinds.classify import classify
from felhom_agent.kinds.model import GateRefused, Reversibility, Safety, UnknownKind
from felhom_agent.kinds.registry import (
    HOST_KINDS,
    PLAN_ACTIONS,
    REGISTRY,
    SIGNED_KINDS,
    lookup,
    task_types,
)
from felhom_agent.state.journal import JournalEntry
from felhom_agent.state.recovery import Reattach, decide_recovery


def _payload(kind: str, vmid: int | None = 101) -> bytes:
    return json.dumps({
        "v": 1, "op_id": "0b9f0a5e-1111-4222-8333-444455556666", "host_id": "pve1",
        "kind": kind, "vmid": vmid, "params": {}, "irreversible": False,
        "nonce": "0" * 32, "issued_at": "2026-11-26T10:00:00Z",
        "expires_at": "2026-11-26T10:10:00Z",
    }).encode()


def test_entries_are_consistent() -> None:
    """Names spell each other, destructive kinds say how they are made safe, every kind
    names the PVE worker types recovery looks for."""
    for name, kind in REGISTRY.items():
        assert kind.name == name
        # backup.protect is synchronous (a PUT) and host kinds run no PVE task: no task to
        # recover (a host kind is run again instead).
        assert kind.task_types or name == "backup.protect" or kind.is_host, name
        if kind.signed is not None:
            assert lookup(kind.signed) is kind
        if kind.safety is Safety.DESTRUCTIVE:
            assert kind.reversibility is not Reversibility.NONE_NEEDED, name
        if kind.reversibility is Reversibility.SAFETY_BACKUP:
            # the kind's gate hook names the safety backup's storage (Prepared.safety_backup)
            assert kind.prepare is not None and kind.signed is not None, name
        if kind.plan_action:
            assert kind.safety is Safety.BENIGN, name


def test_allow_list_is_the_registry(tmp_path: Path) -> None:
    """The verifier's allow-list, built by the composition root, is exactly the registry's
    signed names: a kind the classifier does not know cannot be signed for."""
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({
        "host_id": "pve1", "state_dir": str(tmp_path / "state"),
        "proxmox": {"api_url": "https://127.0.0.1:8006", "node": "pve1",
                    "tls_fingerprint": ":".join(["AB"] * 32),
                    "token_id": "felhom@pve!agent", "token_secret": "secret-secret-1"}}))
    cfg.chmod(0o600)
    policy = verify_policy(load_config(cfg, env={}))
    assert policy.kinds == SIGNED_KINDS
    assert policy.host_kinds == HOST_KINDS == {"host.mount_usb", "host.unmount_usb"}
    for name in SIGNED_KINDS:
        vmid = None if name in HOST_KINDS else 101
        parsed = parse_payload(_payload(name, vmid), kinds=policy.kinds,
                               host_kinds=policy.host_kinds)
        assert parsed.kind == name and parsed.vmid == vmid
        assert classify(name).reason != f"unknown kind: {name}"
    with pytest.raises(OpRejected) as err:
        parse_payload(_payload("guest.frobnicate"), kinds=policy.kinds)
    assert err.value.reason is Reason.KIND


def test_lookup_takes_both_spellings_and_refuses_others() -> None:
    """``start`` and ``guest.start`` are one entry; a made-up spelling is unknown."""
    assert lookup("start") is lookup("guest.start")
    for bad in ("guest.frobnicate", "guest.", "frobnicate", "host.start"):
        with pytest.raises(UnknownKind):
            lookup(bad)
    assert classify("guest.frobnicate").safety is Safety.DESTRUCTIVE


def test_plan_actions_are_the_benign_six() -> None:
    """The reconciler may plan start, stop, set_config, backup, prune and provision, nothing
    else."""
    assert frozenset({"start", "stop", "set_config", "backup", "prune", "provision"}
                     ) == PLAN_ACTIONS


def test_recovery_reads_the_registrys_task_types() -> None:
    """A pending rollback without a UPID is matched to a ``vzrollback`` task by the
    registry's recovery rule (and never to a task type of another kind)."""
    entry = JournalEntry(op_id="op1", vmid=105, kind="rollback", params={}, source="alice",
                         began_at=1000.0)
    tasks = [{"upid": "UPID:pve1:1:1:1:vzstart:105:felhom@pve!agent:", "type": "vzstart",
              "id": "105", "user": "felhom@pve!agent", "starttime": 1001},
             {"upid": "UPID:pve1:2:2:2:vzrollback:105:felhom@pve!agent:", "type": "vzrollback",
              "id": "105", "user": "felhom@pve!agent", "starttime": 1002}]
    decision = decide_recovery(entry, tasks, token_user="felhom@pve!agent", now=1003.0)
    assert isinstance(decision, Reattach)
    assert "vzrollback" in decision.upid
    assert "vzrollback" in task_types("guest.rollback")
    assert task_types("guest.frobnicate") == frozenset()


def test_a_kinds_gate_hook_runs_from_its_entry() -> None:
    """Destroy's own checks live in its entry's ``prepare`` hook, not in the gate."""
    from felhom_agent.kinds.model import GuestFacts
    from felhom_agent.proxmox.models import GuestType

    prepare = lookup("guest.destroy").prepare
    assert prepare is not None
    with pytest.raises(GateRefused, match="protected"):
        prepare("op", {}, GuestFacts(101, GuestType.QEMU, running=False, protected=True))


def test_host_kinds_need_a_null_vmid_and_guest_kinds_a_vmid() -> None:
    """``"vmid": null`` only for ``host.*`` kinds; a host kind with a vmid and a guest kind
    without one are refused (``field-invalid``)."""
    kinds, hosts = SIGNED_KINDS, HOST_KINDS
    for name, vmid in (("host.mount_usb", 101), ("guest.start", None), ("backup.delete", None)):
        with pytest.raises(OpRejected) as err:
            parse_payload(_payload(name, vmid), kinds=kinds, host_kinds=hosts)
        assert err.value.reason is Reason.FIELD_INVALID
        assert "vmid" in str(err.value)
    with pytest.raises(OpRejected, match="acts on the host"):
        parse_payload(_payload("host.unmount_usb", 101), kinds=kinds, host_kinds=hosts)
    # without the host list (an older policy) a null vmid is never accepted
    with pytest.raises(OpRejected):
        parse_payload(_payload("host.mount_usb", None), kinds=kinds)


def test_host_kinds_have_no_guest_parts() -> None:
    """A host kind is signed only, has host handlers, no dispatch, no task types, no guest
    reads; recovery runs a pending one again instead of looking for a task."""
    from felhom_agent.state.recovery import Rerun

    for name in HOST_KINDS:
        kind = lookup(name)
        assert kind.is_host and kind.dispatch is None and not kind.plan_action
        assert kind.task_types == frozenset() and not kind.reads_status
        entry = JournalEntry(op_id="op-h", vmid=None, kind=name, params={}, source="alice",
                             began_at=1000.0)
        assert isinstance(decide_recovery(entry, [], token_user="a@pve!b", now=2000.0), Rerun)
    assert lookup("host.mount_usb").safety is Safety.BENIGN
    assert lookup("host.unmount_usb").reversibility is Reversibility.INVERTIBLE
