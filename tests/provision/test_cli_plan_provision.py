"""``--plan`` and ``--plan --json`` show provision actions and refusals (the configured
``provision.*`` limits), and mutate nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from felhom_agent.sim.pve import PveSimulator
from tests.provision.helpers import LXC_TEMPLATE, QEMU_TEMPLATE, block, scenario
from tests.support.cli import run_cli


@pytest.fixture(scope="module")
def sim() -> Iterator[PveSimulator]:
    with PveSimulator(scenario()) as s:
        yield s


def _files(tmp_path: Path, sim: PveSimulator) -> tuple[Path, Path]:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({
        "host_id": "pve1", "state_dir": str(tmp_path / "state"),
        "proxmox": {"api_url": sim.url, "node": sim.node, "token_id": sim.token_id,
                    "token_secret": sim.token_secret, "tls_fingerprint": sim.fingerprint},
        "provision": {"allowed_sources": [{"template": LXC_TEMPLATE}], "pool": "felhom"}}))
    config.chmod(0o600)
    desired = tmp_path / "desired.json"
    desired.write_text(json.dumps({"generation": 4, "guests": {
        "1001": {"type": "lxc", "state": "running", "provision": block(LXC_TEMPLATE, "web")},
        "1002": {"type": "qemu", "provision": block(QEMU_TEMPLATE, "vm")},
        "5000": {"type": "lxc", "provision": block(LXC_TEMPLATE, "far")}}}))
    return config, desired


def test_plan_json_shows_provision_and_refusals(tmp_path: Path, sim: PveSimulator) -> None:
    """The action carries the flat params (default pool filled in); each refusal its rule."""
    config, desired = _files(tmp_path, sim)
    code, out, err = run_cli(["--config", str(config), "--plan", "--desired", str(desired),
                              "--json"])
    assert code == 1, out + err
    assert json.loads(out) == {
        "generation": 4,
        "actions": [{"vmid": 1001, "kind": "provision", "params": {
            "name": "web", "pool": "felhom", "storage": "local-lvm", "template": 9000}}],
        "blocked": [],
        "refused": [
            {"vmid": 1002, "kind": "provision",
             "reason": "provision.allowed_sources: template 9001 is not allowed"},
            {"vmid": 5000, "kind": "provision",
             "reason": "provision.vmid_min/vmid_max: vmid 5000 is outside 1000..1999"}]}
    assert sim.tasks() == []


def test_plan_text_shows_provision(tmp_path: Path, sim: PveSimulator) -> None:
    """The text form names the action with its params and each refusal."""
    config, desired = _files(tmp_path, sim)
    code, out, _ = run_cli(["--config", str(config), "--plan", "--desired", str(desired)])
    assert code == 1
    assert "plan for generation 4: 1 action(s), 0 blocked, 2 refused" in out
    assert '1001  provision  name="web", pool="felhom", storage="local-lvm", template=9000' in out
    assert "1002  refused provision: provision.allowed_sources: template 9001 is not allowed" in out
