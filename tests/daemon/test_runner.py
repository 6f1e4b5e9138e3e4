"""The daemon's wiring in-process: real PVE and hub simulators, a fake engine, real sd_notify."""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from felhom_agent.compose.engine_seam import EngineLike
from felhom_agent.config import Config, load_config
from felhom_agent.daemon.runner import Daemon
from felhom_agent.durable import DurabilityError
from felhom_agent.sim.hub import HubScenario, HubSimulator
from felhom_agent.sim.pve import Fault, PveSimulator
from tests.daemon.helpers import (
    ENGINE_STATUS,
    HUB_TOKEN,
    PVE_SECRET,
    FakeEngine,
    LogRecords,
    agent_config,
    pve_scenario,
    write_agent_config,
)

DESIRED = {"generation": 7, "guests": {"102": {"type": "lxc", "state": "running"}}}
TIMEOUT = 10.0


@attrs.define
class Harness:
    """A daemon running on a thread with its simulators, notify socket and captured logs."""

    tmp: Path
    pve: PveSimulator
    hub: HubSimulator
    config_path: Path
    notify: socket.socket
    records: LogRecords
    engines: list[FakeEngine] = attrs.Factory(list)
    daemon: Daemon | None = None
    thread: threading.Thread | None = None
    stop_event: threading.Event = attrs.Factory(threading.Event)
    exit_code: list[int] = attrs.Factory(list)

    def start(self, config: Config, **kw: Any) -> Daemon:
        def factory(**parts: Any) -> EngineLike:
            engine = FakeEngine(**parts)
            self.engines.append(engine)
            return engine

        logger = logging.getLogger(f"felhom_agent.test.{id(self)}")
        logger.setLevel(logging.DEBUG)
        logger.addHandler(self.records)
        env = {"NOTIFY_SOCKET": self.notify.getsockname()}
        daemon = Daemon(config, env=env, stop_event=self.stop_event, engine_factory=factory,
                        install_signals=False, logger=logger,
                        reload_config=lambda: load_config(self.config_path, env={}), **kw)
        self.daemon = daemon
        self.thread = threading.Thread(target=lambda: self.exit_code.append(daemon.run()),
                                       daemon=True)
        self.thread.start()
        return daemon

    def stop(self) -> int:
        self.stop_event.set()
        assert self.thread is not None
        self.thread.join(TIMEOUT)
        assert not self.thread.is_alive()
        return self.exit_code[0]

    def datagrams(self) -> list[str]:
        out = []
        self.notify.setblocking(False)
        try:
            while True:
                out.append(self.notify.recv(4096).decode())
        except BlockingIOError:
            pass
        return out


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    scenario = HubScenario.from_dict({"token": HUB_TOKEN, "poll_interval_s": 1,
                                      "desired": DESIRED})
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    with PveSimulator(pve_scenario()) as pve, HubSimulator(scenario) as hub:
        # No fenced CLI in these wiring tests: disks are PVE's data only, which is no error
        # (SMART through fake tools: tests/host).
        cfg = agent_config(tmp_path, pve, hub_url=hub.url,
                           proxmox={"privileged": {"mode": "off"}})
        path = write_agent_config(tmp_path, cfg)
        h = Harness(tmp=tmp_path, pve=pve, hub=hub, config_path=path, notify=notify,
                    records=LogRecords())
        yield h
        if h.thread is not None and h.thread.is_alive():
            h.stop()
    notify.close()


def _config(h: Harness) -> Config:
    return load_config(h.config_path, env={})


def test_ready_then_desired_state_wakes_engine(harness: Harness) -> None:
    """READY=1 follows the first PVE read; hub desired state reaches the provider and wakes."""
    daemon = harness.start(_config(harness))
    assert daemon.ready.wait(TIMEOUT)
    engine = harness.engines[0]
    assert engine.recovered == 1 and engine.started.is_set()
    assert engine.woken.wait(TIMEOUT)
    provider = engine.parts["provider"]
    assert provider.current().generation == 7
    harness.hub.wait_for_reports(2, TIMEOUT)
    assert harness.stop() == 0
    grams = harness.datagrams()
    assert any(g.startswith("READY=1\nSTATUS=") for g in grams)
    assert any(g.startswith("WATCHDOG=1\nSTATUS=hub: ") for g in grams)
    assert any(g.startswith("STOPPING=1\nSTATUS=draining") for g in grams)
    assert (harness.tmp / "state").stat().st_mode & 0o777 == 0o700


def test_report_carries_engine_status_and_guests(harness: Harness) -> None:
    """Reports the hub receives hold the engine's reconcile status and the node's guests."""
    harness.start(_config(harness))
    reports = harness.hub.wait_for_reports(1, TIMEOUT)
    body = reports[0].body
    # the engine's own status, whole -- not the hub's desired generation (7)
    assert ENGINE_STATUS.generation != DESIRED["generation"]
    assert body["reconcile"] == ENGINE_STATUS.to_dict()
    assert [g["vmid"] for g in body["guests"]] == [100, 101, 102]
    assert body["errors"] == []
    # the disks (once read) are PVE's only, and say so
    assert all(d["smart"] == "off" for d in body["disks"]) and body["sensors"] == []
    assert harness.stop() == 0


def test_unverifiable_signed_op_is_refused_and_reported(harness: Harness) -> None:
    """A signed op that cannot be verified is reported refused with its reason, never run."""
    payload = json.dumps({"v": 1, "op_id": "op-abc", "host_id": "pve1"})
    harness.hub.add_signed_op(payload, "-----BEGIN SSH SIGNATURE-----\nx")
    harness.start(_config(harness))

    def refused() -> list[dict[str, Any]]:
        return [o for r in harness.hub.reports() for o in r.body["ops"]
                if o.get("op_id") == "op-abc" and o.get("state") == "refused"]

    n = len(harness.hub.reports())
    harness.hub.wait_for_reports(n + 2, TIMEOUT)
    assert refused()
    # No allowed_signers file exists in this harness: nothing can verify, and the report says so.
    assert "allowed" in refused()[-1]["reason"] or "signature" in refused()[-1]["reason"]
    assert harness.hub.pending_ops() == ()
    assert harness.stop() == 0


def test_bad_desired_state_is_reported_and_old_kept(harness: Harness) -> None:
    """A desired state that does not parse is an ``errors`` entry; the last good one stays."""
    harness.start(_config(harness))
    engine_ready = harness.daemon is not None and harness.daemon.ready.wait(TIMEOUT)
    assert engine_ready
    assert harness.engines[0].woken.wait(TIMEOUT)
    harness.hub.set_desired({"generation": "eight", "guests": {}})
    n = len(harness.hub.reports())
    reports = harness.hub.wait_for_reports(n + 2, TIMEOUT)
    assert any(e["source"] == "desired" for e in reports[-1].body["errors"])
    assert harness.engines[0].parts["provider"].current().generation == 7
    assert harness.stop() == 0


def test_pve_down_at_start_retries_until_it_answers(harness: Harness) -> None:
    """Start-up retries PVE with backoff and becomes ready once it answers."""
    harness.pve.inject(Fault("http_error", path="/version", status=503))
    daemon = harness.start(_config(harness))
    assert harness.records.wait_for("PVE not ready (attempt 1)")
    assert not daemon.ready.is_set()
    harness.pve.clear_faults()
    assert daemon.ready.wait(TIMEOUT)
    assert harness.stop() == 0


def test_stop_before_pve_answers_exits_zero(harness: Harness) -> None:
    """SIGTERM while still waiting for PVE ends the daemon cleanly without READY."""
    harness.pve.inject(Fault("http_error", path="/version", status=503))
    harness.start(_config(harness))
    assert harness.records.wait_for("PVE not ready")
    assert harness.stop() == 0
    assert not any(g.startswith("READY=1") for g in harness.datagrams())


def test_durability_failure_exits_one(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failed journal fsync on a worker stops the daemon with exit status 1."""
    daemon = harness.start(_config(harness))
    assert daemon.ready.wait(TIMEOUT)
    import felhom_agent.state.journal as journal_module

    def broken_fsync(fd: int, path: Path) -> None:
        raise DurabilityError("fsync failed (EIO)", path=path)

    monkeypatch.setattr(journal_module, "fsync_file", broken_fsync)
    journal = harness.engines[0].parts["journal"]
    with pytest.raises(DurabilityError):
        journal.begin("op-1", 102, "start", {}, "plan:7")
    assert harness.thread is not None
    harness.thread.join(TIMEOUT)
    assert harness.exit_code == [1]
    assert harness.records.wait_for("durability failure")


def test_locked_journal_exits_one(harness: Harness) -> None:
    """A second daemon on the same state dir exits 1 (the journal is locked)."""
    daemon = harness.start(_config(harness))
    assert daemon.ready.wait(TIMEOUT)
    second = Daemon(_config(harness), env={}, stop_event=threading.Event(),
                    engine_factory=FakeEngine, install_signals=False)
    assert second.run() == 1
    assert harness.stop() == 0


def test_sighup_reload_applies_log_level_and_keeps_old_on_error(harness: Harness) -> None:
    """A reload applies the new log level; a broken file is logged and the old config kept."""
    applied: list[str] = []
    daemon = harness.start(_config(harness), reconfigure_logging=lambda c: applied.append(
        c.log.level))
    assert daemon.ready.wait(TIMEOUT)
    cfg = json.loads(harness.config_path.read_text())
    cfg["log"] = {"level": "warning"}
    cfg["hub"]["interval_s"] = 2
    write_agent_config(harness.tmp, cfg)
    daemon.request_reload()
    assert harness.records.wait_for("configuration reloaded (log level warning, hub interval 2")
    assert applied == ["warning"]
    harness.config_path.write_text("{not json")
    daemon.request_reload()
    assert harness.records.wait_for("new configuration rejected, keeping the old one")
    n = len(harness.hub.reports())
    harness.hub.wait_for_reports(n + 1, TIMEOUT)
    assert any(g == "RELOADING=1" for g in harness.datagrams())
    assert harness.stop() == 0


def test_no_secret_in_logs_or_reports(harness: Harness) -> None:
    """Neither the PVE token secret nor the hub token appears in a log line or a report."""
    harness.pve.inject(Fault("http_error", path="/nodes/*/storage", status=500))
    harness.start(_config(harness))
    harness.hub.wait_for_reports(2, TIMEOUT)
    assert harness.stop() == 0
    blob = "\n".join(harness.records.lines) + json.dumps(
        [r.body for r in harness.hub.reports()])
    assert PVE_SECRET not in blob and HUB_TOKEN not in blob


def test_watchdog_pings_during_long_waits(harness: Harness) -> None:
    """With WATCHDOG_USEC set, waits are cut into half-interval chunks that each ping."""
    harness.notify.settimeout(TIMEOUT)
    config = _config(harness)
    config = attrs.evolve(config, hub=attrs.evolve(config.hub, interval_s=30.0))
    harness.hub.scenario = attrs.evolve(harness.hub.scenario, poll_interval_s=None)
    daemon = Daemon(config, env={"NOTIFY_SOCKET": harness.notify.getsockname(),
                                 "WATCHDOG_USEC": "200000"},
                    stop_event=harness.stop_event, engine_factory=FakeEngine,
                    install_signals=False)
    harness.daemon = daemon
    harness.thread = threading.Thread(target=lambda: harness.exit_code.append(daemon.run()),
                                      daemon=True)
    harness.thread.start()
    pings = 0
    while pings < 5:
        if harness.notify.recv(4096) == b"WATCHDOG=1":
            pings += 1
    assert len(harness.hub.reports()) == 1  # five pings, all inside one 30 s poll interval
    assert harness.stop() == 0
