"""Waiting for convergence through the hub simulator's recorded reports (no sleeping)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from felhom_agent.sim.hub import HubSimulator
from felhom_agent.sim.pve import PveSimulator

__all__ = ["DESIRED", "converged", "sim_converged", "wait_report", "wait_until"]

#: Start 102, stop 100, change 101's description (the default PVE scenario's guests).
DESIRED: dict[str, Any] = {
    "generation": 1,
    "guests": {
        "100": {"type": "lxc", "state": "stopped"},
        "101": {"type": "qemu", "config": {"description": "database server"}},
        "102": {"type": "lxc", "state": "running"},
    },
}

Body = Mapping[str, Any]


def wait_report(hub: HubSimulator, pred: Callable[[Body], bool], timeout: float) -> Body:
    """Block until a recorded report satisfies ``pred``; return it (TimeoutError if none)."""
    deadline = time.monotonic() + timeout
    seen = 0
    while True:
        reports = hub.reports()
        for r in reports[seen:]:
            if pred(r.body):
                return r.body
        seen = len(reports)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"no matching report among {seen} in {timeout:g} s")
        try:
            hub.wait_for_reports(seen + 1, remaining)
        except TimeoutError:
            continue


def wait_until(hub: HubSimulator, cond: Callable[[], bool], timeout: float) -> None:
    """Check ``cond`` after every report the hub receives, until true (TimeoutError)."""
    wait_report(hub, lambda _body: cond(), timeout)


def converged(body: Body) -> bool:
    """The report shows :data:`DESIRED` reached, its plan empty and three applied actions."""
    status = {g["vmid"]: g["status"] for g in body.get("guests", [])}
    rec = body.get("reconcile") or {}
    applied = {(a["vmid"], a["kind"]) for a in body.get("audit", [])
               if a["outcome"] == "applied"}
    return (status.get(100) == "stopped" and status.get(102) == "running"
            and rec.get("generation") == 1 and rec.get("actions") == 0
            and {(100, "stop"), (101, "set_config"), (102, "start")} <= applied)


def sim_converged(sim: PveSimulator) -> bool:
    """The simulator's own state matches :data:`DESIRED`."""
    description: object = sim.guest(101)["config"].get("description")
    return (sim.guest(100)["status"] == "stopped" and sim.guest(102)["status"] == "running"
            and description == "database server")
