"""The backup tests' rig: the PVE simulator (real HTTPS) and the agent's engine in this process.

One clock is shared by the simulator (backup ``ctime``, task start times) and the agent
(journal, due computation): real time plus an offset the test moves forward, so "a period
later" costs nothing and the executor's in-flight grace still runs on real time.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import logging
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from felhom_agent.compose.root import build_executor
from felhom_agent.core.desired import DesiredState, parse_desired
from felhom_agent.execution.backup_tracker import BackupSettings
from felhom_agent.execution.engine import Engine, PassResult
from felhom_agent.execution.executor import ExecResult, JobSpec
from felhom_agent.execution.queue import SerializerQueue
from felhom_agent.kinds.model import Settings
from felhom_agent.planning.providers import HubProvider
from felhom_agent.proxmox.client import ProxmoxClient
from felhom_agent.proxmox.models import GuestType
from felhom_agent.secret import Secret
from felhom_agent.sim.pve import PveScenario, PveSimulator
from felhom_agent.sim.pve.defaults import default_scenario_dict, default_storages
from felhom_agent.state.audit import AuditLog
from felhom_agent.state.journal import Journal
from tests.support.pve import sim_client

__all__ = ["DAY", "HIDING_TOKEN", "LOG", "BackupRig", "ShiftedClock", "backup_scenario", "desired",
           "on_other_node", "policy_guests", "vzdumps"]

LOG = logging.getLogger("test.backups")
DAY = 86_400.0


#: A token that sees every backup except guest 102's: no ``Datastore.Allocate`` on ``local``
#: and no ``VM.Backup`` on ``/vms/102`` (PVE leaves 102's backups out of the listing).
HIDING_TOKEN = ("felhom@pve!narrow", "narrow-secret-1")
_HIDING = {"id": HIDING_TOKEN[0], "secret": HIDING_TOKEN[1], "privsep": True,
           "user_privileges": {"/": ["Administrator"]},
           "token_privileges": {"/": ["Administrator"],
                                "/storage/local": ["Datastore.AllocateSpace", "Datastore.Audit"],
                                "/vms/102": ["VM.Audit", "VM.PowerMgmt"]}}


class ShiftedClock:
    """Wall-clock seconds plus an offset that only ever grows (``advance``)."""

    def __init__(self) -> None:
        self.offset = 0.0
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds``."""
        with self._lock:
            self.offset += seconds


def backup_scenario(*, vzdump_s: float = 0.05, task_s: float = 0.02,
                    guests: list[dict[str, Any]] | None = None,
                    local_backups: list[dict[str, Any]] | None = None,
                    **extra: Any) -> PveScenario:
    """The default node (100 lxc running, 101 qemu stopped, 102 lxc stopped; storages
    ``local``, ``local-lvm``, ``pbs1``) with short tasks, UTC, and extra guests/backups."""
    data: dict[str, Any] = copy.deepcopy(default_scenario_dict())
    data["auth_failure_delay_s"] = 0
    data["timezone"] = "UTC"
    data["task_durations"] = {"default": task_s, "vzdump": vzdump_s}
    data["guests"].extend(copy.deepcopy(guests or []))
    data["tokens"].append(dict(_HIDING))
    storages = default_storages()
    storages[0]["backups"] = copy.deepcopy(local_backups or [])
    data["storages"] = storages
    data.update(extra)
    return PveScenario.from_dict(data)


def desired(generation: int, guests: Mapping[str, Any]) -> DesiredState:
    """A parsed desired state."""
    return parse_desired({"generation": generation, "guests": dict(guests)})


def policy_guests(vmids: Mapping[int, str], **policy: Any) -> dict[str, Any]:
    """``{vmid: {"type": t, "backup": policy}}`` (storage ``local``, every 24 h by default)."""
    pol = {"storage": "local", "every_h": 24, **policy}
    return {str(v): {"type": t, "backup": dict(pol)} for v, t in vmids.items()}


def vzdumps(sim: PveSimulator, vmid: int | None = None) -> list[dict[str, Any]]:
    """The simulator's vzdump tasks (of ``vmid``), oldest first."""
    return [t for t in sim.tasks() if t["type"] == "vzdump"
            and (vmid is None or t["id"] == str(vmid))]


def on_other_node(sim: PveSimulator, vmid: int, node: str) -> None:
    """Make vzdump treat local guest ``vmid`` as one on ``node`` (it migrated between the
    agent's re-read and its call; the simulator models no migration, so its node state is
    changed directly): vzdump of it answers the plain ``OK``."""
    state = sim._rt.state
    with state.cond:
        state.other_node_guests[vmid] = node


class BackupRig:
    """Simulator client, queue (with the ``backup`` group limit), journal, audit, engine."""

    def __init__(self, sim: PveSimulator, state: Path, clock: ShiftedClock, *,
                 max_concurrent: int = 1, min_keep: int = 2, margin_pct: int = 20,
                 stale_lock_s: float = 0.0, task_timeout_s: float = 10.0,
                 lookup_grace_s: float = 0.5, workers: int = 4,
                 token: tuple[str, str] | None = None) -> None:
        self.sim = sim
        self.state = state
        self.clock = clock
        self.client: ProxmoxClient = (
            sim_client(sim) if token is None
            else sim_client(sim, token_id=token[0], token_secret=Secret(token[1])))
        self.provider = HubProvider(logger=LOG)
        self.stop = threading.Event()
        self.queue = SerializerQueue(workers=workers, limits={"backup": max_concurrent},
                                     logger=LOG)
        self.queue.start()
        self.journal = Journal.open(state, clock=clock, logger=LOG)
        self.audit = AuditLog.open(state, clock=clock, logger=LOG)
        watcher, self.executor = build_executor(
            client=self.client, journal=self.journal, audit=self.audit,
            task_timeout_s=task_timeout_s, stop_event=self.stop, clock=clock, logger=LOG,
            lookup_grace_s=lookup_grace_s,
            settings=Settings(min_keep=min_keep, space_margin_pct=margin_pct))
        self.engine = Engine(
            client=self.client, node=sim.node, provider=self.provider, queue=self.queue,
            journal=self.journal, audit=self.audit, executor=self.executor, watcher=watcher,
            interval_s=30.0, stop_event=self.stop, clock=clock, logger=LOG,
            lookup_grace_s=lookup_grace_s,
            backups=BackupSettings(tz=dt.UTC, min_keep=min_keep, margin_pct=margin_pct,
                                   stale_lock_s=stale_lock_s))
        self.engine.watcher.start()

    def want(self, generation: int, guests: Mapping[str, Any]) -> None:
        """Hand the engine a desired state."""
        self.provider.update(desired(generation, guests))

    def run_pass(self) -> PassResult:
        """One pass, and every job it submitted to its end (or its wait deadline)."""
        result = self.engine.run_pass()
        for handle in result.submitted:
            handle.result(60)
        return result

    def results(self, result: PassResult) -> list[ExecResult]:
        """The results of a pass's jobs."""
        return [h.result(60) for h in result.submitted]

    def run(self, vmid: int, kind: str, params: Mapping[str, Any], *,
            op_id: str, guest_type: GuestType = GuestType.LXC,
            source: str = "alice@ops") -> ExecResult:
        """One job through the engine's queue (as a signed op would be)."""
        job = JobSpec(op_id, vmid, guest_type, kind, dict(params), source)
        return self.engine.submit_op(job).result(60)

    def audit_lines(self) -> list[dict[str, Any]]:
        """Every audit record written so far."""
        path = self.state / "audit.log"
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def close(self) -> None:
        """Stop everything this rig started."""
        self.stop.set()
        self.engine.watcher.stop()
        self.queue.shutdown(5)
        self.journal.close()
        self.audit.close()
        self.client.close()
