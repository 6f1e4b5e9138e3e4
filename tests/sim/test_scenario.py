"""Scenario parsing: defaults, strictness, and secrets kept out of reprs."""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path

import pytest

from felhom_agent.sim.pve import PveScenario, ScenarioError
from felhom_agent.sim.pve.privileges import ALL_PRIVILEGES
from tests.sim.helpers import SECRET, scenario_dict


def test_default_scenario_shape() -> None:
    """The default scenario is node pve1 with 100 lxc running, 101 qemu stopped, 102 lxc
    stopped, and a first token holding every privilege."""
    scen = PveScenario.default()
    guests = {g.vmid: (g.type, g.status) for g in scen.guests}
    assert scen.node == "pve1"
    assert guests == {100: ("lxc", "running"), 101: ("qemu", "stopped"),
                      102: ("lxc", "stopped")}
    tok = scen.tokens[0]
    assert tok.user_grants.on("/vms/100") == ALL_PRIVILEGES
    assert tok.token_grants.on("/storage/local") == ALL_PRIVILEGES
    assert scen.auth_failure_delay_s == 3 and scen.workers == 3


def test_default_secret_is_random_per_call() -> None:
    """Each default scenario gets a fresh token secret (nothing fixed is ever committed)."""
    a = PveScenario.default().tokens[0].secret
    b = PveScenario.default().tokens[0].secret
    assert a != b


def test_secret_never_appears_in_repr() -> None:
    """The scenario repr does not contain a token secret."""
    scen = PveScenario.from_dict(scenario_dict())
    assert SECRET not in repr(scen)


def test_scenario_error_names_key_and_value_and_is_a_value_error() -> None:
    """ScenarioError is an AgentError and ValueError carrying key and value."""
    d = scenario_dict()
    d["guests"][1]["vmid"] = 5
    with pytest.raises(ValueError, match=r"guests\[1\]\.vmid") as info:
        PveScenario.from_dict(d)
    assert isinstance(info.value, ScenarioError)
    assert info.value.key == "guests[1].vmid" and info.value.value == 5
    clone = pickle.loads(pickle.dumps(info.value))  # noqa: S301 - our own object
    assert (str(clone), clone.key, clone.value) == (str(info.value), info.value.key, 5)


@pytest.mark.parametrize(
    ("patch", "key"),
    [
        ({"node": "bad node"}, "node"),
        ({"tokens": []}, "tokens"),
        ({"auth_failure_delay_s": -1}, "auth_failure_delay_s"),
        ({"task_durations": {"qmstart": "slow"}}, "task_durations.qmstart"),
        ({"faults": [{"kind": "latency", "delay_s": "x"}]}, "faults[0]"),
        ({"guests": [{"vmid": 100, "type": "lxc"}, {"vmid": 100, "type": "qemu"}]},
         "guests[1].vmid"),
        ({"guests": [{"vmid": 100, "type": "lxc", "lock": "suspended"}]}, "guests[0].lock"),
    ],
)
def test_invalid_scenarios_are_rejected_with_key(patch: dict[str, object], key: str) -> None:
    """Bad values are refused and the error names the key path."""
    d = scenario_dict()
    d.update(patch)
    with pytest.raises(ScenarioError) as info:
        PveScenario.from_dict(d)
    assert info.value.key == key, str(info.value)


def test_documented_example_scenario_parses() -> None:
    """The JSON example in SCENARIO.md is a valid scenario (the docs cannot rot silently)."""
    import felhom_agent.sim.pve as pkg

    doc = (Path(pkg.__file__).parent / "SCENARIO.md").read_text(encoding="utf-8")
    block = re.search(r"```json\n(.*?)```", doc, re.S)
    assert block is not None
    scen = PveScenario.from_dict(json.loads(block.group(1)))
    assert [g.vmid for g in scen.guests] == [101, 102]
    assert scen.tokens[0].token_grants.on("/vms/101") == frozenset(
        {"VM.Audit", "VM.PowerMgmt", "VM.Snapshot"})
