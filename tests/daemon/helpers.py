"""Shared helpers for the daemon tests: simulator scenarios, clients, configs, fakes."""

from __future__ import annotations

import copy
import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

from felhom_agent.execution.backup_tracker import BackupView
from felhom_agent.execution.executor import ExecResult, HostJob, JobSpec
from felhom_agent.execution.job import JobHandle
from felhom_agent.execution.status import RestoreEntry
from felhom_agent.hub.report import BlockedGuest, OpResult, ReconcileStatus, RefusedAction
from felhom_agent.sim.pve import PveScenario, PveSimulator
from felhom_agent.sim.pve.defaults import default_scenario_dict

__all__ = [
    "ENGINE_STATUS",
    "HUB_TOKEN",
    "PVE_SECRET",
    "FakeEngine",
    "LogRecords",
    "agent_config",
    "pve_scenario",
    "write_agent_config",
]

PVE_SECRET = "d5a1c7e2-9b4f-4c11-8e3a-secretpve0042"
HUB_TOKEN = "hub-token-Xk2pQ9wL7mN4vB8cR1tY"

#: What :class:`FakeEngine` reports as its last pass: a generation no desired state in these
#: tests uses, so a report showing it can only have come from the engine.
ENGINE_STATUS = ReconcileStatus(
    generation=41, last_plan_at="2026-11-26T10:00:00Z", actions=3,
    blocked=(BlockedGuest(vmid=101, reason="locked: backup"),),
    refused=(RefusedAction(vmid=100, kind="set_config", reason="destructive key: memory"),),
    errors=("plan: one guest skipped",),
)


def pve_scenario(**overrides: Any) -> PveScenario:
    """The simulator's default scenario with a known secret and no 401 delay."""
    data: dict[str, Any] = copy.deepcopy(default_scenario_dict(token_secret=PVE_SECRET))
    data["auth_failure_delay_s"] = 0
    data.update(overrides)
    return PveScenario.from_dict(data)


def agent_config(
    tmp: Path, sim: PveSimulator, *, hub_url: str | None = None, **extra: Any
) -> dict[str, Any]:
    """A daemon config for ``sim`` (and a hub) with its state under ``tmp``."""
    cfg: dict[str, Any] = {
        "host_id": "pve1",
        "state_dir": str(tmp / "state"),
        "log": {"level": "debug"},
        "proxmox": {
            "api_url": sim.url, "node": sim.node, "token_id": sim.token_id,
            "token_secret": sim.token_secret, "tls_fingerprint": sim.fingerprint,
            "timeout_s": 15, "task_timeout_s": 60,
        },
        "reconcile": {"workers": 2, "interval_s": 1},
    }
    if hub_url is not None:
        cfg["hub"] = {"url": hub_url, "token": HUB_TOKEN, "interval_s": 1}
    for key, value in extra.items():
        cfg[key] = {**cfg.get(key, {}), **value} if isinstance(value, dict) else value
    return cfg


def write_agent_config(tmp: Path, cfg: dict[str, Any], name: str = "config.json") -> Path:
    """Write ``cfg`` owner-only (it holds secrets) and return its path."""
    path = tmp / name
    path.write_text(json.dumps(cfg))
    os.chmod(path, 0o600)
    return path


class LogRecords(logging.Handler):
    """Collects formatted log lines and lets a test wait for one."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.cond = threading.Condition()
        self.setFormatter(logging.Formatter("%(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        line = self.format(record)
        with self.cond:
            self.lines.append(line)
            self.cond.notify_all()

    def wait_for(self, text: str, timeout: float = 10.0, *, count: int = 1) -> bool:
        """Block until ``count`` lines contain ``text``; False on timeout."""
        with self.cond:
            return self.cond.wait_for(
                lambda: sum(text in x for x in self.lines) >= count, timeout)


class FakeEngine:
    """Records the daemon's calls; stands in for the engine in wiring tests."""

    def __init__(self, *, recover_error: BaseException | None = None, **parts: Any) -> None:
        self.parts = parts
        self.recover_error = recover_error
        self.recovered = 0
        self.started = threading.Event()
        self.woken = threading.Event()
        self.wakes = 0
        self.stop_event: threading.Event = parts["stop_event"]
        self.results: list[OpResult] = []

    @property
    def fatal(self) -> BaseException | None:
        """Never fatal."""
        return None

    def recover(self) -> object:
        """Count the call; raise the configured error once."""
        self.recovered += 1
        if self.recover_error is not None:
            err, self.recover_error = self.recover_error, None
            raise err
        return "nothing pending"

    def start(self) -> None:
        """Mark started."""
        self.started.set()

    def wake(self) -> None:
        """Count a wake-up."""
        self.wakes += 1
        self.woken.set()

    def status(self) -> ReconcileStatus:
        """The fixed :data:`ENGINE_STATUS`."""
        return ENGINE_STATUS

    def op_results(self, limit: int = 100) -> list[OpResult]:
        """The configured results."""
        return self.results[-limit:]

    def join(self, timeout: float) -> bool:
        """Nothing to join."""
        return True

    def backup_view(self) -> BackupView:
        """No backups seen."""
        return BackupView()

    def restore_results(self, limit: int = 50) -> list[RestoreEntry]:
        """No restores."""
        return []

    def submit_op(self, job: JobSpec) -> JobHandle[ExecResult]:
        """Signed ops never reach the fake engine in wiring tests."""
        raise AssertionError(f"unexpected signed-op job {job.op_id}")

    def submit_host(self, job: HostJob) -> JobHandle[ExecResult]:
        """Host ops never reach the fake engine in wiring tests."""
        raise AssertionError(f"unexpected host job {job.op_id}")
