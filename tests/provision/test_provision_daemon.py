"""Provisioning end to end: the daemon program as a child process, the hub and PVE simulators.

What an operator sees: the desired state the hub serves, the reports it receives, the tasks
PVE ran, the audit log, and for the golden image the argv the fake ``pct`` was started with
(the real program, the fake first on its PATH: the fenced runner finds programs there).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs
import pytest

from felhom_agent.sim.hub import HubScenario, HubSimulator
from felhom_agent.sim.pve import PveSimulator
from tests.authz.helpers import KeyPair
from tests.daemon.helpers import HUB_TOKEN, agent_config, write_agent_config
from tests.phaseb.signing import OpSigner, make_keys, op_payload
from tests.provision.helpers import LXC_TEMPLATE, QEMU_TEMPLATE, block, scenario
from tests.provision.test_golden import ARGV, PARAMS
from tests.support.daemon import REAL_CLI, DaemonChild, wait_report, wait_until
from tests.support.fake_pct import FakePct

TIMEOUT = 60.0
Body = Mapping[str, Any]


@attrs.define
class Run:
    """Simulators, the fake pct, a signer and the config; the daemon started by the test."""

    tmp: Path
    pve: PveSimulator
    hub: HubSimulator
    pct: FakePct
    signer: OpSigner
    config: Path
    runs: list[DaemonChild] = attrs.Factory(list)

    def start(self) -> DaemonChild:
        """The real program, the fake ``pct`` first on its PATH (where its fenced runner looks
        for programs)."""
        before = len(self.hub.reports())
        child = DaemonChild(self.config, self.tmp / f"daemon{len(self.runs) + 1}.log",
                            program=REAL_CLI, env={"PATH": self.pct.path})
        self.runs.append(child)
        wait_report(self.hub, lambda _b: True, TIMEOUT, after=before, child=child)
        return child

    def deliver(self, kind: str, vmid: int, params: dict[str, Any]) -> str:
        doc = op_payload(kind, vmid, params)
        payload, sig = self.signer.sign(doc)
        self.hub.add_signed_op(payload, sig)
        return str(doc["op_id"])

    def reported(self, op_id: str) -> dict[str, Any]:
        found: dict[str, Any] = {}

        def check() -> bool:
            for report in reversed(self.hub.reports()):
                for entry in report.body.get("ops", ()):
                    if entry.get("op_id") == op_id and entry.get("state") != "running":
                        found.update(entry)
                        return True
            return False

        wait_until(self.hub, check, TIMEOUT, child=self.runs[-1])
        return found

    def audit(self) -> list[dict[str, Any]]:
        path = self.tmp / "state" / "audit.log"
        return [json.loads(line) for line in path.read_text().splitlines()]

    def types(self, task_id: int) -> list[str]:
        return [t["type"] for t in self.pve.tasks() if t["id"] == str(task_id)]


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[KeyPair, KeyPair, Path]:
    return make_keys(tmp_path_factory.mktemp("provision-keys"))


@pytest.fixture
def run(tmp_path: Path, keys: tuple[KeyPair, KeyPair, Path]) -> Iterator[Run]:
    trusted, _stranger, signers = keys
    work = tmp_path / "ops"
    work.mkdir()
    hub_scenario = HubScenario.from_dict({"token": HUB_TOKEN, "poll_interval_s": 1})
    with PveSimulator(scenario(clone_s=0.3)) as pve, HubSimulator(hub_scenario) as hub, \
            FakePct(tmp_path / "bin", pve) as pct:
        cfg = agent_config(tmp_path, pve, hub_url=hub.url,
                           authz={"allowed_signers": str(signers)},
                           provision={"vmid_min": 1000, "vmid_max": 1099, "max_guests": 2,
                                      "allowed_sources": [{"template": LXC_TEMPLATE}],
                                      "pool": "felhom"})
        r = Run(tmp=tmp_path, pve=pve, hub=hub, pct=pct, signer=OpSigner(trusted, work),
                config=write_agent_config(tmp_path, cfg))
        try:
            yield r
        finally:
            for child in r.runs:
                if child.alive():
                    child.terminate()
        assert pve.internal_errors == []


def _refused(body: Body) -> dict[int, str]:
    return {r["vmid"]: r["reason"] for r in (body.get("reconcile") or {}).get("refused", [])
            if r["kind"] == "provision"}


def test_desired_guests_provisioned_inside_the_limits_refused_outside(run: Run) -> None:
    """No operator action: 1001 is cloned into pool ``felhom``, configured and started; each
    guest outside a limit is refused with its rule in the report, nothing created for it."""
    run.hub.set_desired({"generation": 1, "guests": {
        "1001": {"type": "lxc", "state": "running", "config": {"description": "customer 42"},
                 "provision": block(LXC_TEMPLATE, "c42-web")},
        "1002": {"type": "lxc", "provision": block(LXC_TEMPLATE, "c2")},
        "1500": {"type": "lxc", "provision": block(LXC_TEMPLATE, "out-of-range")},
        "1003": {"type": "qemu", "provision": block(QEMU_TEMPLATE, "not-allowed")},
        "1004": {"type": "lxc", "provision": block(LXC_TEMPLATE, "too-many")}}})
    child = run.start()
    body = wait_report(run.hub, lambda b: {g["vmid"]: g["status"] for g in b.get("guests", [])
                                           }.get(1001) == "running"
                       and (b.get("reconcile") or {}).get("actions") == 0, TIMEOUT,
                       child=child)
    assert _refused(body) == {
        1003: "provision.allowed_sources: template 9001 is not allowed",
        1004: "provision.max_guests: the node holds 2 guest(s) in 1000..1099 (limit 2)",
        1500: "provision.vmid_min/vmid_max: vmid 1500 is outside 1000..1099"}
    assert child.terminate() == 0
    g = run.pve.guest(1001)
    assert (g["status"], g["pool"], g["config"]["hostname"]) == ("running", "felhom", "c42-web")
    assert g["config"]["description"].rstrip("\n") == "customer 42"
    assert run.pve.has_guest(1002)
    assert not any(run.pve.has_guest(v) for v in (1003, 1004, 1500))
    assert run.types(LXC_TEMPLATE) == ["vzclone", "vzclone"]
    assert [(a["vmid"], a["kind"], a["outcome"]) for a in run.audit()
            if a["vmid"] == 1001] == [(1001, "provision", "applied"),
                                      (1001, "set_config", "applied"),
                                      (1001, "start", "applied")]
    assert run.pct.calls() == []


def test_signed_provision_and_collision(run: Run) -> None:
    """A signed guest.provision skips the allowed sources (a VM template here); one for a
    taken vmid is refused before anything is sent and the guest there is untouched."""
    run.start()
    ok = run.deliver("guest.provision", 1010, {"from": {"template": QEMU_TEMPLATE},
                                               "name": "signed-vm", "storage": "local-lvm"})
    taken = run.deliver("guest.provision", 102, {"from": {"template": LXC_TEMPLATE},
                                                 "name": "over", "storage": "local-lvm"})
    before = run.pve.guest(102)
    assert run.reported(ok)["state"] == "applied"
    refusal = run.reported(taken)
    assert refusal["state"] == "refused"
    assert refusal["reason"].startswith("vmid 102 is taken (collision)")
    assert run.pve.guest(1010)["config"]["name"] == "signed-vm"
    assert run.pve.guest(1010)["pool"] == "felhom"  # provision.pool
    assert run.pve.guest(102) == before
    assert run.types(QEMU_TEMPLATE) == ["qmclone"] and run.types(LXC_TEMPLATE) == []


def test_signed_create_golden_runs_pct_exactly(run: Run) -> None:
    """The signed golden op through the real program: the fake pct was started once with the
    exact argv, then the container became a template over the API; reported applied."""
    run.start()
    op = run.deliver("guest.create_golden", 9100, dict(PARAMS))
    assert run.reported(op)["state"] == "applied"
    assert run.pct.calls() == [ARGV]
    g = run.pve.guest(9100)
    assert g["config"]["template"] == 1 and g["config"]["features"] == "keyctl=1,nesting=1"
    audit = [(a["outcome"], a["reason"]) for a in run.audit() if a["op_id"] == op]
    assert audit[0] == ("root_cli", "root CLI: " + " ".join(ARGV))
    assert audit[1][0] == "applied"


def test_killed_during_the_clone_ends_applied_never_twice(run: Run) -> None:
    """SIGKILL while the clone task runs (desired state and a signed op): after the restart
    both end applied, re-attached to their tasks; no second clone was ever sent."""
    run.pve.set_task_duration("vzclone", 5.0)
    run.pve.set_task_duration("qmclone", 5.0)
    run.hub.set_desired({"generation": 1, "guests": {
        "1001": {"type": "lxc", "state": "running",
                 "provision": block(LXC_TEMPLATE, "c42")}}})
    child = run.start()
    op = run.deliver("guest.provision", 1010, {"from": {"template": QEMU_TEMPLATE},
                                               "name": "vm", "storage": "local-lvm"})
    # both targets exist, still being created: the clones run
    assert run.pve.wait_lock(1001, "create", TIMEOUT)
    assert run.pve.wait_lock(1010, "clone", TIMEOUT)
    child.sigkill()
    run.start()
    assert run.reported(op)["state"] == "applied"
    assert run.pve.wait_guest(1001, lambda g: g["status"] == "running", TIMEOUT)
    assert run.types(LXC_TEMPLATE) == ["vzclone"] and run.types(QEMU_TEMPLATE) == ["qmclone"]
    outcomes = [(a["vmid"], a["kind"], a["outcome"]) for a in run.audit()
                if a["kind"] == "provision"]
    assert sorted(outcomes) == [(1001, "provision", "applied"), (1010, "provision", "applied")]
