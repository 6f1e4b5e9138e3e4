"""Waiting for convergence through the hub simulator's recorded reports (no sleeping).

The waits themselves are :func:`tests.support.daemon.wait_report` and ``wait_until``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from felhom_agent.sim.pve import PveSimulator
from tests.support.daemon import wait_report, wait_until

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
