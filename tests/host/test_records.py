"""Host ops in the durable records and at the gate: ``vmid`` null for host kinds only."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from felhom_agent.authz.envelope import SignedOp
from felhom_agent.signedops.gate import GateRefused, check_op
from felhom_agent.state.audit import AuditLog, AuditRecord
from felhom_agent.state.journal import Journal, OpConflict, OpState, encode_line

LOG = logging.getLogger("test.host_records")
UUID = "0f3c6a2e-9d1b-4c55-8a0e-7e2b5d8c1f00"
GOOD = {"uuid": UUID, "name": "usb1", "fstype": "ext4", "content": "backup"}


def test_journal_keeps_a_null_vmid_for_host_kinds_only(tmp_path: Path) -> None:
    """A host op's records carry ``vmid: null`` and replay as such; a guest kind without a
    vmid is refused before anything is written."""
    with Journal.open(tmp_path, clock=lambda: 1000.0, logger=LOG) as journal:
        journal.begin("op-h", None, "host.mount_usb", GOOD, "alice@ops")
        journal.record_decided("op-r", vmid=None, kind="host.unmount_usb", source="alice@ops",
                               state=OpState.REFUSED, reason="in use")
        with pytest.raises(OpConflict, match="needs a vmid"):
            journal.begin("op-g", None, "start", {}, "alice@ops")
        with pytest.raises(OpConflict, match="needs a vmid"):
            journal.record_decided("op-g2", vmid=None, kind="guest.start", source="a",
                                   state=OpState.REFUSED, reason="x")
    with Journal.open(tmp_path, clock=lambda: 1001.0, logger=LOG) as journal:
        pending = journal.get("op-h")
        refused = journal.get("op-r")
        assert journal.replay_report.clean
    assert pending is not None and pending.vmid is None and pending.pending
    assert refused is not None and refused.vmid is None and refused.outcome is not None
    lines = [json.loads(line.split(" ", 1)[1]) for line in
             (tmp_path / "journal.log").read_text().splitlines()]
    assert [(r["t"], r["vmid"]) for r in lines] == [("begin", None), ("outcome", None)]


def test_a_null_vmid_of_a_guest_kind_is_a_damaged_line(tmp_path: Path) -> None:
    """A record claiming no vmid for a guest kind does not parse: it is reported and
    skipped, never read as a host op."""
    with Journal.open(tmp_path, clock=lambda: 1000.0, logger=LOG) as journal:
        journal.begin("op-h", None, "host.mount_usb", GOOD, "alice@ops")
    path = tmp_path / "journal.log"
    line = path.read_text().splitlines()[0].split(" ", 1)[1].replace(
        '"kind":"host.mount_usb"', '"kind":"start"')
    path.write_bytes(encode_line(json.loads(line)))
    with Journal.open(tmp_path, clock=lambda: 1001.0, logger=LOG) as journal:
        assert journal.get("op-h") is None
        assert journal.replay_report.corrupt_lines == (1,)


def test_audit_records_carry_vmid_null(tmp_path: Path) -> None:
    """An audit line of a host op has ``vmid: null`` and reads back."""
    with AuditLog.open(tmp_path, clock=lambda: 1000.0, logger=LOG) as audit:
        audit.append(op_id="op-h", source="alice@ops", kind="host.mount_usb", vmid=None,
                     upid=None, outcome="applied", reason="mounted")
        assert [r.vmid for r in audit.recent(5)] == [None]
    line = json.loads((tmp_path / "audit.log").read_text())
    assert line["vmid"] is None
    assert AuditRecord.from_dict(line) is not None
    assert AuditRecord.from_dict({**line, "vmid": "101"}) is None


def _op(kind: str, params: dict[str, Any]) -> SignedOp:
    now = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
    return SignedOp(op_id="0b9f0a5e-1111-4222-8333-444455556666", host_id="pve1", kind=kind,
                    vmid=None, params=params, irreversible=False, nonce="0" * 32,
                    issued_at=now, expires_at=now)


@pytest.mark.parametrize(
    ("kind", "params", "fragment"),
    [
        ("host.mount_usb", {**GOOD, "uuid": "nope"}, "is not a file system UUID"),
        ("host.mount_usb", {**GOOD, "name": "Bad_Name"}, "[a-z][a-z0-9-]{0,31}"),
        ("host.mount_usb", {**GOOD, "fstype": "btrfs"}, "is not one of ext4, xfs"),
        ("host.mount_usb", {**GOOD, "content": "iso"}, "is not one of backup"),
        ("host.mount_usb", {**GOOD, "uuid": 5}, "uuid must be a string"),
        ("host.mount_usb", {k: v for k, v in GOOD.items() if k != "content"},
         "content is required"),
        ("host.mount_usb", {**GOOD, "options": "rw"}, "unknown key(s) options"),
        ("host.unmount_usb", {"name": "-x"}, "[a-z][a-z0-9-]{0,31}"),
        ("host.unmount_usb", {}, "name is required"),
    ],
)
def test_the_gate_refuses_every_bad_host_param(kind: str, params: dict[str, Any],
                                               fragment: str) -> None:
    """Types from the registry entry, then the values from the kind's own check."""
    with pytest.raises(GateRefused) as info:
        check_op(_op(kind, params))
    assert f"invalid params for {kind}" in str(info.value)
    assert fragment in str(info.value)


def test_the_gate_passes_good_host_ops() -> None:
    """Mount is benign; unmount is destructive but undone by mounting again (no flag)."""
    assert check_op(_op("host.mount_usb", GOOD)).benign
    verdict = check_op(_op("host.unmount_usb", {"name": "usb1"}))
    assert not verdict.benign
