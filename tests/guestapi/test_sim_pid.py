"""The PVE simulator reports a configurable ``pid`` for a running guest; the client reads it."""

from __future__ import annotations

import pytest

from felhom_agent.proxmox.models import GuestType
from felhom_agent.sim.pve import PveSimulator
from felhom_agent.sim.pve.scenario import PveScenario, ScenarioError
from tests.sim.helpers import make_scenario, scenario_dict
from tests.support.pve import sim_client


def test_status_current_reports_the_configured_pid() -> None:
    """Default 100000 + vmid; set_pid changes it; a stopped guest has none."""
    with PveSimulator(make_scenario()) as sim, sim_client(sim) as client:
        assert client.guest_status(100, GuestType.LXC).pid == 100_100
        sim.set_pid(100, 4242)
        assert client.guest_status(100, GuestType.LXC).pid == 4242
        assert client.guest_status(102, GuestType.LXC).pid is None  # stopped


def test_the_scenario_may_name_the_pid() -> None:
    """A guest's ``pid`` in the scenario is what it reports; a bad one is refused."""
    data = scenario_dict()
    data["guests"][0]["pid"] = 777
    with PveSimulator(PveScenario.from_dict(data)) as sim, sim_client(sim) as client:
        assert client.guest_status(100, GuestType.LXC).pid == 777
    data["guests"][0]["pid"] = 0
    with pytest.raises(ScenarioError):
        PveScenario.from_dict(data)
