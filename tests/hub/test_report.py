"""HostReport: the wire shape, nothing invented, JSON-only numbers.

The shape is the one of ``docs/architecture.md`` ("Hub protocol").
"""

from __future__ import annotations

import json
import math

import pytest

from felhom_agent.hub.report import (
    BlockedGuest,
    HostReport,
    NodeFacts,
    OpResult,
    ReconcileStatus,
    RefusedAction,
    ReportError,
)
from felhom_agent.utc import format_utc
from tests.hub.conftest import sample_report

TOP_KEYS = ["schema", "host_id", "agent_version", "collected_at", "node", "guests",
            "reconcile", "ops", "storage", "disks", "sensors", "backup", "restore", "pbs",
            "audit", "guestapi", "errors"]


def test_wire_form_has_every_section_10_key_in_order() -> None:
    """to_json carries schema 1 and exactly the documented top-level keys."""
    data = json.loads(sample_report().to_json())
    assert list(data) == TOP_KEYS
    assert data["schema"] == 1
    assert data["guests"] == [{"vmid": 101, "type": "lxc", "name": "web", "status": "running",
                               "lock": None, "template": False}]
    assert data["node"]["pve_version"] == "9.2.2"


def test_unknown_sections_are_empty_lists_not_invented() -> None:
    """Sections the agent knows nothing about are empty lists; unknown facts are null."""
    report = HostReport(host_id="h", agent_version="1", collected_at="t",
                        node=NodeFacts(name="pve1"))
    data = report.to_dict()
    for key in ("guests", "ops", "storage", "disks", "sensors", "backup", "restore", "pbs",
                "audit", "guestapi", "errors"):
        assert data[key] == []
    assert data["reconcile"] is None
    assert data["node"] == {"name": "pve1", "pve_version": None, "uptime_s": None, "cpu": None,
                            "mem_used": None, "mem_total": None}


def test_reconcile_and_ops_shapes() -> None:
    """Reconcile status and op results serialise to the documented shapes."""
    report = HostReport(
        host_id="h", agent_version="1", collected_at="t",
        reconcile=ReconcileStatus(
            generation=7, last_plan_at="2026-11-26T10:00:00Z", actions=2,
            blocked=(BlockedGuest(vmid=103, reason="locked: backup"),),
            refused=(RefusedAction(vmid=104, kind="set_config",
                                   reason="destructive key: memory"),),
            errors=("plan failed once",),
        ),
        ops=(OpResult(op_id="abc", state="applied", upid="UPID:x", finished_at="t2"),),
    )
    data = json.loads(report.to_json())
    assert data["reconcile"] == {
        "generation": 7, "last_plan_at": "2026-11-26T10:00:00Z", "actions": 2,
        "blocked": [{"vmid": 103, "reason": "locked: backup"}],
        "refused": [{"vmid": 104, "kind": "set_config", "reason": "destructive key: memory"}],
        "errors": ["plan failed once"],
    }
    assert data["ops"] == [{"op_id": "abc", "state": "applied", "reason": None,
                            "upid": "UPID:x", "finished_at": "t2", "vmid": None}]


def test_op_state_must_be_a_protocol_state() -> None:
    """An op state outside applied/failed/refused/unknown/running is refused at build time."""
    with pytest.raises(ValueError, match="op state"):
        OpResult(op_id="x", state="done")


def test_non_finite_numbers_are_refused() -> None:
    """NaN is not JSON: a NaN cpu is refused when the node facts are built."""
    with pytest.raises(ValueError, match="finite"):
        NodeFacts(name="n", cpu=math.nan)


def test_non_finite_number_in_free_form_section_fails_serialisation() -> None:
    """A NaN hidden in a free-form section makes to_json raise instead of emitting bad JSON."""
    report = HostReport(host_id="h", agent_version="1", collected_at="t",
                        storage=({"used": math.inf},))
    with pytest.raises(ValueError):
        report.to_json()


def test_failed_collection_report_carries_only_identity_and_error() -> None:
    """A failed collection still yields a report: identity plus the error entry."""
    report = HostReport.failed_collection(
        host_id="pve1", agent_version="0.1.0", collected_at="t",
        error=ReportError(source="collect", message="boom"),
    )
    data = report.to_dict()
    assert data["errors"] == [{"source": "collect", "message": "boom"}]
    assert data["node"] is None and data["guests"] == []


def test_with_errors_appends() -> None:
    """with_errors returns a copy with the new errors after the existing ones."""
    first = ReportError(source="a", message="1")
    second = ReportError(source="b", message="2")
    report = sample_report().with_errors(first).with_errors(second)
    assert report.errors == (first, second)
    assert sample_report().errors == ()


def test_utf8_text_is_sent_as_is() -> None:
    """Non-ASCII guest names are UTF-8 on the wire, not escaped."""
    report = HostReport(host_id="h", agent_version="1", collected_at="t",
                        errors=(ReportError(source="x", message="árvíztűrő"),))
    assert "árvíztűrő".encode() in report.to_json()


def test_format_utc() -> None:
    """Timestamps are UTC with a Z suffix and second precision."""
    assert format_utc(0) == "1970-01-01T00:00:00Z"
    assert format_utc(1795687200.7) == "2026-11-26T10:00:00Z"
