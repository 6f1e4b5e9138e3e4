"""Actual-state reads (one listing + config only where desired names keys) and ``--plan``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from felhom_agent.cli._plan import plan_command
from felhom_agent.config import Config, load_config
from felhom_agent.core.desired import parse_desired
from felhom_agent.planning.actual import read_actual, read_budget
from felhom_agent.sim.pve import PveSimulator
from tests.configfiles import base_config, write_config
from tests.reconcile.crash_child import scenario
from tests.support.pve import sim_client


@pytest.fixture
def sim() -> Iterator[PveSimulator]:
    with PveSimulator(scenario(qemu=4)) as s:
        yield s


def _config(sim: PveSimulator, tmp: Path, **reconcile: Any) -> Config:
    data = base_config(tmp)
    data["proxmox"].update(api_url=sim.url, node=sim.node, token_id=sim.token_id,
                           token_secret=sim.token_secret, tls_fingerprint=sim.fingerprint)
    if reconcile:
        data["reconcile"] = reconcile
    return load_config(write_config(tmp, data), env={})


def _desired_file(tmp: Path, guests: dict[str, Any], name: str = "desired.json") -> Path:
    path = tmp / name
    path.write_text(json.dumps({"generation": 7, "guests": guests}))
    return path


def test_reads_are_one_listing_plus_configured_guests(sim: PveSimulator) -> None:
    """Config is read only for guests whose desired state names keys (read budget)."""
    desired = parse_desired({"generation": 1, "guests": {
        "200": {"type": "qemu", "state": "running"},
        "201": {"type": "qemu", "config": {"description": "x"}},
        "202": {"type": "lxc", "config": {"description": "type mismatch: not read"}},
        "999": {"type": "qemu", "config": {"description": "absent: not read"}},
    }})
    with sim_client(sim) as client:
        seen = sim.requests_seen
        actual = read_actual(client, sim.node, desired)
    assert actual.reads == 2 and actual.config_reads == 1
    assert sim.requests_seen - seen == 2 <= read_budget(desired)
    by_vmid = {g.vmid: g for g in actual.guests}
    assert by_vmid[201].config is not None and by_vmid[201].digest
    assert by_vmid[200].config is None and by_vmid[100].type == "lxc"


def test_nothing_desired_reads_nothing(sim: PveSimulator) -> None:
    """With no desired state a pass costs no API read."""
    with sim_client(sim) as client:
        seen = sim.requests_seen
        assert read_actual(client, sim.node, None).reads == 0
    assert sim.requests_seen == seen


def test_plan_text_reports_drift_with_exit_1(sim: PveSimulator, tmp_path: Path) -> None:
    """Drift prints one line per action and exits 1; nothing is mutated."""
    path = _desired_file(tmp_path, {"200": {"type": "qemu", "state": "running"},
                                    "201": {"type": "qemu", "config": {"memory": 2048}}})
    code, text = plan_command(_config(sim, tmp_path), path, as_json=False)
    assert code == 1
    assert "200  start" in text and "refused set_config: destructive key: memory" in text
    assert sim.tasks() == []


def test_plan_json_in_sync_exits_0(sim: PveSimulator, tmp_path: Path) -> None:
    """In sync: exit 0 and the ``--plan --json`` document with empty lists."""
    path = _desired_file(tmp_path, {"200": {"type": "qemu", "state": "stopped"}})
    code, text = plan_command(_config(sim, tmp_path), path, as_json=True)
    assert code == 0
    assert json.loads(text) == {"generation": 7, "actions": [], "blocked": [], "refused": []}


def test_plan_uses_the_configured_desired_file(sim: PveSimulator, tmp_path: Path) -> None:
    """Without --desired the reconcile.desired_file is planned."""
    path = _desired_file(tmp_path, {"201": {"type": "qemu", "state": "running"}})
    code, text = plan_command(_config(sim, tmp_path, desired_file=str(path)), None,
                              as_json=True)
    assert code == 1 and json.loads(text)["actions"] == [{"vmid": 201, "kind": "start"}]


def test_plan_without_any_desired_source_names_the_flag(sim: PveSimulator, tmp_path: Path
                                                        ) -> None:
    """No --desired and no configured file: exit 2 with a message naming --desired."""
    code, text = plan_command(_config(sim, tmp_path), None, as_json=False)
    assert code == 2 and "--desired" in text


def test_plan_with_pve_unreachable_is_one_line_exit_2(sim: PveSimulator, tmp_path: Path
                                                      ) -> None:
    """PVE down: exit 2 with a single clear line, no traceback."""
    config = _config(sim, tmp_path)
    path = _desired_file(tmp_path, {"200": {"type": "qemu", "state": "running"}})
    sim.stop()
    code, text = plan_command(config, path, as_json=False)
    assert code == 2 and "cannot read actual state" in text and "\n" not in text


def test_plan_with_a_bad_desired_file_exits_2(sim: PveSimulator, tmp_path: Path) -> None:
    """An invalid desired document is an error naming the file, not a crash."""
    bad = tmp_path / "bad.json"
    bad.write_text('{"generation": 1, "guests": {"x": {}}}')
    code, text = plan_command(_config(sim, tmp_path), bad, as_json=True)
    assert code == 2 and "bad.json" in json.loads(text)["error"]
    code, text = plan_command(_config(sim, tmp_path), tmp_path / "missing.json", as_json=False)
    assert code == 2 and "missing.json" in text
