"""Hub scenario parsing: strict keys and types, errors naming the key and the value."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from felhom_agent.errors import AgentError
from felhom_agent.sim.hub import HubFault, HubScenario, ScenarioError, ScenarioOp


def test_full_scenario_parses() -> None:
    """Every documented key is read into the model."""
    scenario = HubScenario.from_dict({
        "token": "t", "host_ids": ["pve1"], "poll_interval_s": 0.5, "tls": True,
        "desired": {"generation": 1, "guests": {}},
        "signed_ops": [{"payload": "p", "signature": "s"}],
        "faults": [{"kind": "slow", "delay_s": 2, "count": 1}, {"kind": "http_error"}],
    })
    assert scenario.token == "t" and scenario.host_ids == ("pve1",)
    assert scenario.poll_interval_s == 0.5 and scenario.tls
    assert scenario.signed_ops == (ScenarioOp("p", "s"),)
    assert scenario.faults == (HubFault(kind="slow", delay_s=2.0, count=1),
                               HubFault(kind="http_error"))


def test_empty_scenario_has_safe_defaults() -> None:
    """An empty object means: generated token, any host, no desired state, no faults, HTTP."""
    scenario = HubScenario.from_dict({})
    assert scenario == HubScenario()
    assert "token" not in repr(HubScenario(token="secret-ish"))


@pytest.mark.parametrize(
    ("data", "key", "value_text"),
    [
        ([], "(scenario)", "[]"),
        ({"tokn": "x"}, "tokn", "tokn"),
        ({"token": 5}, "token", "token"),
        ({"token": " "}, "token", "token"),
        ({"host_ids": "pve1"}, "host_ids", '"pve1"'),
        ({"poll_interval_s": "5"}, "poll_interval_s", '"5"'),
        ({"poll_interval_s": True}, "poll_interval_s", "true"),
        ({"desired": [1]}, "desired", "[1]"),
        ({"tls": "yes"}, "tls", '"yes"'),
        ({"signed_ops": {}}, "signed_ops", "{}"),
        ({"signed_ops": [{"payload": "p"}]}, "signed_ops[0]", '"payload"'),
        ({"signed_ops": [{"payload": 1, "signature": "s"}]}, "signed_ops[0].payload", "1"),
        ({"faults": [{"kind": "boom"}]}, "faults[0]", "'boom'"),
        ({"faults": [{"kind": "slow", "delay_s": -1}]}, "faults[0]", "-1"),
        ({"faults": [{"kind": "http_error", "status": 200}]}, "faults[0]", "200"),
        ({"faults": [{"kind": "drop", "count": 0}]}, "faults[0]", "0"),
        ({"faults": [{"kind": "drop", "extra": 1}]}, "faults[0]", "'extra'"),
        ({"faults": ["drop"]}, "faults[0]", '"drop"'),
    ],
)
def test_bad_scenarios_name_key_and_value(data: Any, key: str, value_text: str) -> None:
    """Each malformed scenario is a ScenarioError naming the key and showing the value."""
    with pytest.raises(ScenarioError) as info:
        HubScenario.from_dict(data)
    assert info.value.key == key
    assert key in str(info.value) and value_text in str(info.value)
    assert isinstance(info.value, AgentError) and isinstance(info.value, ValueError)


def test_from_file_names_the_file(tmp_path: Path) -> None:
    """File errors (missing, not JSON, invalid) name the file."""
    missing = tmp_path / "missing.json"
    with pytest.raises(ScenarioError, match=r"missing\.json"):
        HubScenario.from_file(missing)
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{nope")
    with pytest.raises(ScenarioError, match=r"garbage\.json: scenario is not JSON"):
        HubScenario.from_file(garbage)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"tls": 1}))
    with pytest.raises(ScenarioError, match=r"bad\.json: scenario key 'tls': 1") as info:
        HubScenario.from_file(bad)
    assert info.value.key == "tls"
