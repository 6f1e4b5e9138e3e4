"""``--selftest=hub``: one collect + report round trip against the real simulators."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from felhom_agent.cli._selftest_hub import selftest_hub_command
from felhom_agent.config import Config, load_config
from felhom_agent.sim.hub import HubFault, HubScenario, HubSimulator
from felhom_agent.sim.pve import Fault, PveSimulator
from tests.daemon.helpers import (
    HUB_TOKEN,
    PVE_SECRET,
    agent_config,
    pve_scenario,
    write_agent_config,
)

DESIRED = {"generation": 4, "guests": {"102": {"type": "lxc", "state": "running"}}}


@pytest.fixture
def sims() -> Iterator[tuple[PveSimulator, HubSimulator]]:
    scenario = HubScenario.from_dict({"token": HUB_TOKEN, "poll_interval_s": 9,
                                      "desired": DESIRED})
    with PveSimulator(pve_scenario()) as pve, HubSimulator(scenario) as hub:
        yield pve, hub


def _config(tmp: Path, pve: PveSimulator, hub_url: str | None, **hub: Any) -> Config:
    cfg = agent_config(tmp, pve, hub_url=hub_url)
    if hub:
        cfg["hub"].update(hub)
    return load_config(write_agent_config(tmp, cfg), env={})


def test_all_checks_pass(tmp_path: Path, sims: tuple[PveSimulator, HubSimulator]) -> None:
    """A healthy round trip prints one OK line per check and a summary; exit 0."""
    pve, hub = sims
    code, text = selftest_hub_command(_config(tmp_path, pve, hub.url), as_json=False)
    assert code == 0, text
    lines = text.splitlines()
    assert [line.split()[0] for line in lines[:-1]] == ["OK"] * 5
    assert "generation 4, 1 guest(s)" in text and "poll interval 9 s" in text
    assert lines[-1] == "selftest hub: all 5 checks passed"
    assert len(hub.reports()) == 1 and hub.reports()[0].body["host_id"] == "pve1"


def test_json_output(tmp_path: Path, sims: tuple[PveSimulator, HubSimulator]) -> None:
    """--json prints {"mode": "hub", "ok": ..., "checks": [...]} as one document."""
    pve, hub = sims
    code, text = selftest_hub_command(_config(tmp_path, pve, hub.url), as_json=True)
    doc = json.loads(text)
    assert code == 0 and doc["mode"] == "hub" and doc["ok"] is True
    assert [c["name"] for c in doc["checks"]] == [
        "hub configured", "collect", "report", "envelope", "desired state"]


def test_wrong_token_fails_report(tmp_path: Path, sims: tuple[PveSimulator, HubSimulator]) -> None:
    """A 401 fails the report check (exit 1) and never prints either token."""
    pve, hub = sims
    wrong = "wrong-token-0123456789abc"
    code, text = selftest_hub_command(_config(tmp_path, pve, hub.url, token=wrong),
                                      as_json=False)
    assert code == 1
    assert "FAIL report" in text and "401" in text
    assert wrong not in text and HUB_TOKEN not in text and PVE_SECRET not in text


def test_hub_down_fails(tmp_path: Path, sims: tuple[PveSimulator, HubSimulator]) -> None:
    """An unreachable hub fails the report check with the reason."""
    pve, hub = sims
    config = _config(tmp_path, pve, hub.url)
    hub.go_down()
    code, text = selftest_hub_command(config, as_json=False)
    assert code == 1 and "FAIL report" in text and "cannot reach the hub" in text


def test_garbage_answer_fails_envelope(
    tmp_path: Path, sims: tuple[PveSimulator, HubSimulator]
) -> None:
    """An answer with wrong field types fails the envelope check."""
    pve, hub = sims
    hub.inject(HubFault(kind="wrong_types", count=1))
    code, text = selftest_hub_command(_config(tmp_path, pve, hub.url), as_json=False)
    assert code == 1 and "OK   report" in text and "FAIL envelope" in text


def test_bad_desired_state_fails(tmp_path: Path, sims: tuple[PveSimulator, HubSimulator]) -> None:
    """A desired state that does not parse fails its check, naming the field."""
    pve, hub = sims
    hub.set_desired({"generation": -1})
    code, text = selftest_hub_command(_config(tmp_path, pve, hub.url), as_json=False)
    assert code == 1 and "FAIL desired state" in text and "desired.generation" in text


def test_unreadable_part_fails_collect_but_reports(
    tmp_path: Path, sims: tuple[PveSimulator, HubSimulator]
) -> None:
    """A PVE part that cannot be read fails ``collect`` while the report is still sent."""
    pve, hub = sims
    pve.inject(Fault("http_error", path="/nodes/*/storage", status=500))
    code, text = selftest_hub_command(_config(tmp_path, pve, hub.url), as_json=False)
    assert code == 1 and "FAIL collect" in text and "storage" in text
    assert "OK   report" in text
    assert hub.reports()[0].body["errors"][0]["source"] == "storage"


def test_no_hub_configured_is_exit_2(
    tmp_path: Path, sims: tuple[PveSimulator, HubSimulator]
) -> None:
    """Without hub.url the mode is a configuration error (exit 2)."""
    pve, _hub = sims
    code, text = selftest_hub_command(_config(tmp_path, pve, None), as_json=False)
    assert code == 2 and "hub.url is not set" in text
