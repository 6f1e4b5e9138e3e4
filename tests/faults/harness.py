"""The fault harness: the daemon as a real child process against in-process simulators.

Shared by the trimmed pytest suite (``tests/faults/test_*.py``), the full crash sweep
(``scripts/test-faults`` -> :mod:`tests.faults.sweep`) and the soak (``scripts/soak`` ->
:mod:`tests.faults.soak`). Everything here waits on simulator events with a deadline: the
PVE simulator's request counter (:meth:`PveSimulator.wait_requests`) and the hub simulator's
report condition (:meth:`HubSimulator.wait_for_reports`); nothing sleeps to synchronise.

The child and the report waits are :mod:`tests.support.daemon` (shared with the daemon and
signed-op tests): ``tests/daemon/run_daemon.py``, the CLI's no-mode path with a short stop
grace, its output in a log file so a failure can show the daemon's side of the story.
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import attrs

from felhom_agent.sim.hub import HubScenario, HubSimulator
from felhom_agent.sim.pve import PveScenario, PveSimulator
from felhom_agent.sim.pve.defaults import default_scenario_dict
from tests.daemon.helpers import HUB_TOKEN, PVE_SECRET, agent_config, write_agent_config
from tests.support.daemon import RUNNER, DaemonChild, HarnessError, wait_report

__all__ = [
    "RUNNER",
    "DaemonChild",
    "HarnessError",
    "Want",
    "cpu_seconds",
    "daemon_config",
    "desired_doc",
    "hub_sim",
    "open_fds",
    "proc_status",
    "pve_sim",
    "report_matches",
    "rss_kib",
    "sim_matches",
    "wait_pve",
    "wait_report",
]

#: Longest single wait on a simulator event: a loop re-checks its predicate at least this often.
_TICK_S = 0.25


@attrs.frozen
class Want:
    """One guest's desired state for a scenario: run state and (optional) description."""

    vmid: int
    type: str
    state: str | None = None
    description: str | None = None

    def to_desired(self) -> dict[str, Any]:
        """The guest's entry in the hub's desired-state document."""
        entry: dict[str, Any] = {"type": self.type}
        if self.state is not None:
            entry["state"] = self.state
        if self.description is not None:
            entry["config"] = {"description": self.description}
        return entry


def desired_doc(generation: int, wants: Iterable[Want]) -> dict[str, Any]:
    """A desired-state document for ``wants``.

    Its schema: ``docs/architecture.md`` ("Desired state and the plan").
    """
    return {"generation": generation,
            "guests": {str(w.vmid): w.to_desired() for w in wants}}


def pve_sim(guests: list[dict[str, Any]], *, task_s: float = 0.2,
            lock_wait_s: float = 2.0) -> PveSimulator:
    """A (not yet started) PVE simulator holding exactly ``guests``; tasks take ``task_s``."""
    data: dict[str, Any] = copy.deepcopy(default_scenario_dict(token_secret=PVE_SECRET))
    data["auth_failure_delay_s"] = 0
    data["guests"] = copy.deepcopy(guests)
    data["task_durations"] = {"default": task_s}
    data["lock_wait_s"] = lock_wait_s
    return PveSimulator(PveScenario.from_dict(data))


def hub_sim(desired: Mapping[str, Any] | None) -> HubSimulator:
    """A (not yet started) hub simulator for host ``pve1`` serving ``desired``."""
    return HubSimulator(HubScenario.from_dict({
        "token": HUB_TOKEN, "host_ids": ["pve1"], "poll_interval_s": 1,
        "desired": None if desired is None else dict(desired)}))


def daemon_config(tmp: Path, pve: PveSimulator, hub: HubSimulator, **extra: Any) -> Path:
    """Write the child's config (state under ``tmp/state``, info logging) and return it."""
    cfg = agent_config(tmp, pve, hub_url=hub.url, **{"log": {"level": "info"}, **extra})
    return write_agent_config(tmp, cfg)


def wait_pve(pve: PveSimulator, pred: Callable[[], bool], timeout: float, *,
             child: DaemonChild | None = None) -> bool:
    """Re-check ``pred`` after every request the PVE simulator receives, until it holds.

    Returns False when ``timeout`` runs out; raises :class:`HarnessError` if ``child`` exits.
    """
    deadline = time.monotonic() + timeout
    while True:
        seen = pve.requests_seen
        if pred():
            return True
        if child is not None and not child.alive():
            raise HarnessError(f"daemon exited early with {child.proc.returncode}")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        pve.wait_requests(seen=seen + 1, timeout=min(remaining, _TICK_S))


Body = Mapping[str, Any]


def report_matches(body: Body, generation: int, wants: Iterable[Want]) -> bool:
    """The report shows ``generation`` planned with nothing left to do and every run state."""
    rec = body.get("reconcile") or {}
    if rec.get("generation") != generation or rec.get("actions") != 0 or rec.get("blocked"):
        return False
    status = {g["vmid"]: g["status"] for g in body.get("guests", [])}
    return all(w.state is None or status.get(w.vmid) == w.state for w in wants)


def sim_matches(pve: PveSimulator, wants: Iterable[Want]) -> bool:
    """The simulator's own guests are in the wanted state (run state and description)."""
    for w in wants:
        g = pve.guest(w.vmid)
        if w.state is not None and g["status"] != w.state:
            return False
        if w.description is not None and \
                str(g["config"].get("description", "")).rstrip("\n") != w.description:
            return False
    return True


def proc_status(pid: int, field: str) -> int | None:
    """The first number of ``field`` (``VmRSS``, ``Threads``) in ``/proc/<pid>/status``."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    return None


def rss_kib(pid: int) -> int | None:
    """``VmRSS`` of ``pid`` in KiB from ``/proc/<pid>/status`` (None once it is gone)."""
    return proc_status(pid, "VmRSS")


def open_fds(pid: int) -> int | None:
    """How many file descriptors ``pid`` holds (None once it is gone)."""
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of ``pid`` from ``/proc/<pid>/stat`` (None once gone)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15 of stat(5))
    return ticks / os.sysconf("SC_CLK_TCK")
