"""The simulated hub: HTTP(S) on loopback, Bearer auth, faults.

See ``docs/architecture.md`` ("Simulators").
"""

from __future__ import annotations

from felhom_agent.sim.hub.faults import FAULT_KINDS, HubFault
from felhom_agent.sim.hub.scenario import HubScenario, ScenarioError, ScenarioOp
from felhom_agent.sim.hub.server import HubSimulator, RecordedReport

__all__ = [
    "FAULT_KINDS",
    "HubFault",
    "HubScenario",
    "HubSimulator",
    "RecordedReport",
    "ScenarioError",
    "ScenarioOp",
]
