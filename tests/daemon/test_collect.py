"""The HostReport collector against the real PVE simulator (pinned HTTPS)."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from felhom_agent.host.health import DiskEntry, SensorEntry
from felhom_agent.host.monitor import HealthProblem, HealthSnapshot
from felhom_agent.hub.collect import Collector
from felhom_agent.hub.report import OpResult, ReportError
from felhom_agent.sim.pve import Fault, PveSimulator
from felhom_agent.state.audit import AuditLog
from tests.daemon.helpers import ENGINE_STATUS, PVE_SECRET, FakeEngine, pve_scenario
from tests.support.pve import no_sleep, sim_client

CLOCK = 1_795_000_000.0  # 2026-11-18T11:06:40Z


@pytest.fixture
def sim() -> Iterator[PveSimulator]:
    with PveSimulator(pve_scenario()) as s:
        yield s


@pytest.fixture
def audit(tmp_path: Path) -> Iterator[AuditLog]:
    log = AuditLog.open(tmp_path / "state", clock=lambda: CLOCK,
                        logger=logging.getLogger("test"))
    log.append(op_id="op-1", source="plan:7", kind="start", vmid=102,
               upid="UPID:pve1:1:2:3:vzstart:102:x:", outcome="applied")
    with log:
        yield log


def _engine() -> FakeEngine:
    engine = FakeEngine(stop_event=threading.Event())
    engine.results = [OpResult(op_id="op-1", state="applied", upid="UPID:x")]
    return engine


def test_full_report_from_simulator(sim: PveSimulator, audit: AuditLog) -> None:
    """A report carries node facts, our guests, reconcile status, ops, storage and audit."""
    with sim_client(sim, sleep=no_sleep) as client:
        report = Collector(client=client, node="pve1", host_id="pve1", engine=_engine(),
                           audit=audit, clock=lambda: CLOCK).collect()
    assert report.errors == ()
    assert report.node is not None
    assert report.node.pve_version == "9.2.11"
    assert report.node.mem_total is not None and report.node.mem_total > 0
    assert [(g.vmid, g.type, g.status) for g in report.guests] == [
        (100, "lxc", "running"), (101, "qemu", "stopped"), (102, "lxc", "stopped")]
    assert report.reconcile == ENGINE_STATUS
    assert [o.op_id for o in report.ops] == ["op-1"]
    assert {s["storage"] for s in report.storage} == {"local", "local-lvm", "pbs1"}
    assert all(s["kind"] == "storage" for s in report.storage)
    assert [a["op_id"] for a in report.audit] == ["op-1"]
    assert report.backup == report.restore == report.pbs == ()
    assert report.collected_at == "2026-11-18T11:06:40Z"


def test_one_failing_endpoint_is_an_error_entry(sim: PveSimulator, audit: AuditLog) -> None:
    """A failing storage endpoint becomes an ``errors`` entry; every other part is present."""
    sim.inject(Fault("http_error", path="/nodes/*/storage", status=500))
    with sim_client(sim, sleep=no_sleep) as client:
        report = Collector(client=client, node="pve1", host_id="pve1", engine=_engine(),
                           audit=audit).collect()
    assert [e.source for e in report.errors] == ["storage"]
    assert "500" in report.errors[0].message
    assert report.storage == ()
    assert len(report.guests) == 3 and report.node is not None


def test_pve_down_still_yields_a_report(tmp_path: Path) -> None:
    """With PVE unreachable every PVE part is an error and the report is still complete JSON."""
    with PveSimulator(pve_scenario()) as gone:
        url, fingerprint = gone.url, gone.fingerprint
        client = sim_client(gone, sleep=no_sleep, api_url=url, tls_fingerprint=fingerprint,
                            timeout_s=1.0)
    with client:
        report = Collector(client=client, node="pve1", host_id="pve1", engine=None,
                           audit=None).collect()
    assert {e.source for e in report.errors} == {"node.version", "node.status", "guests",
                                                 "storage"}
    assert report.node is None and report.guests == () and report.reconcile is None
    doc = json.loads(report.to_json())
    assert doc["host_id"] == "pve1" and doc["storage"] == [] and doc["audit"] == []


def test_failing_engine_is_an_error_entry(sim: PveSimulator) -> None:
    """An engine whose status raises costs the report its reconcile part only."""

    class Broken(FakeEngine):
        def status(self) -> Any:
            raise RuntimeError("engine broke")

    with sim_client(sim, sleep=no_sleep) as client:
        report = Collector(client=client, node="pve1", host_id="pve1",
                           engine=Broken(stop_event=threading.Event()), audit=None).collect()
    assert [(e.source, e.message) for e in report.errors] == [
        ("reconcile", "RuntimeError: engine broke")]
    assert report.reconcile is None and len(report.guests) == 3


class _Health:
    """A fixed health cache (the monitor itself is tested in ``tests/host``)."""

    def __init__(self, snapshot: HealthSnapshot) -> None:
        self.value = snapshot

    def snapshot(self) -> HealthSnapshot:
        return self.value


def test_disks_and_sensors_are_their_own_members(sim: PveSimulator) -> None:
    """The health cache's disks and sensors are the report's ``disks``/``sensors``; its
    problems are ``errors`` entries; without a cache both lists are empty."""
    disk = DiskEntry(devpath="/dev/sda", model="WD", serial="S1", size=4_000_787_030_016,
                     type="usb", health="PASSED", wearout=None, temperature_c=36, smart="ok")
    snapshot = HealthSnapshot(disks=(disk,), sensors=(SensorEntry("coretemp-isa-0000",
                                                                  "Core 0", 43.0),),
                              problems=(HealthProblem("sensors", "sensors -j: no sensors"),))
    with sim_client(sim, sleep=no_sleep) as client:
        without = Collector(client=client, node="pve1", host_id="pve1", engine=None,
                            audit=None).collect()
        report = Collector(client=client, node="pve1", host_id="pve1", engine=None,
                           audit=None, health=_Health(snapshot)).collect()
    assert without.disks == without.sensors == ()
    assert all(s["kind"] == "storage" for s in report.storage)
    doc = json.loads(report.to_json())
    assert doc["disks"] == [{"devpath": "/dev/sda", "model": "WD", "serial": "S1",
                             "size": 4_000_787_030_016, "type": "usb", "health": "PASSED",
                             "wearout": None, "temperature_c": 36, "smart": "ok"}]
    assert doc["sensors"] == [{"chip": "coretemp-isa-0000", "label": "Core 0",
                               "celsius": 43.0}]
    assert [(e["source"], e["message"]) for e in doc["errors"]] == [
        ("sensors", "sensors -j: no sensors")]
    assert doc["schema"] == 1
    assert list(doc)[list(doc).index("storage"):][:3] == ["storage", "disks", "sensors"]


def test_storage_usage_and_alerts(tmp_path: Path) -> None:
    """Each storage entry has ``usage_pct`` and ``alert`` at the configured thresholds; an
    unreachable one has neither a percentage nor an alert."""
    storages = [
        {"storage": "calm", "type": "dir", "content": "backup", "total": 1000, "used": 849,
         "config": {"path": "/srv/calm"}},
        {"storage": "warm", "type": "dir", "content": "backup", "total": 1000, "used": 850,
         "config": {"path": "/srv/warm"}},
        {"storage": "full", "type": "dir", "content": "backup", "total": 1000, "used": 950,
         "config": {"path": "/srv/full"}},
        {"storage": "gone", "type": "nfs", "content": "backup", "active": False,
         "config": {"server": "192.0.2.7"}},
    ]
    with PveSimulator(pve_scenario(storages=storages)) as sim, \
            sim_client(sim, sleep=no_sleep) as client:
        report = Collector(client=client, node="pve1", host_id="pve1", engine=None,
                           audit=None, warn_pct=85, crit_pct=95).collect()
    got = {s["storage"]: (s["usage_pct"], s["alert"]) for s in report.storage}
    assert got == {"calm": (84.9, None), "warm": (85.0, "warn"), "full": (95.0, "crit"),
                   "gone": (None, None)}


def test_extra_ops_and_errors_are_reported(sim: PveSimulator) -> None:
    """Ops and errors from other parts of the daemon (the signed-op sink) join the report."""
    refused = OpResult(op_id="op-9", state="refused", reason="signed ops arrive with Phase B")
    with sim_client(sim, sleep=no_sleep) as client:
        report = Collector(
            client=client, node="pve1", host_id="pve1", engine=_engine(), audit=None,
            extra_ops=lambda: [refused],
            extra_errors=lambda: [ReportError("desired", "bad desired state")],
        ).collect()
    assert [o.op_id for o in report.ops] == ["op-9", "op-1"]
    assert [e.source for e in report.errors] == ["desired"]


def test_no_secret_in_report(sim: PveSimulator, audit: AuditLog) -> None:
    """The serialised report never contains the PVE token secret."""
    sim.inject(Fault("http_error", path="/nodes/*/storage", status=503))
    with sim_client(sim, sleep=no_sleep) as client:
        body = Collector(client=client, node="pve1", host_id="pve1", engine=_engine(),
                         audit=audit).collect().to_json()
    assert PVE_SECRET.encode() not in body
