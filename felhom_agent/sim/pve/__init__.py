"""A faithful simulated Proxmox VE node on 127.0.0.1 (see ``SCENARIO.md``)."""

from __future__ import annotations

from felhom_agent.sim.pve.faults import Fault
from felhom_agent.sim.pve.scenario import PveScenario, ScenarioError
from felhom_agent.sim.pve.simulator import PveSimulator

__all__ = ["Fault", "PveScenario", "PveSimulator", "ScenarioError"]
