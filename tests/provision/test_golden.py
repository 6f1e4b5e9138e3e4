"""``guest.create_golden``: the fenced ``pct create`` exactly as specified, then the template
conversion over the API -- and nothing else in the agent can reach ``pct``.

``pct`` is a fake program on the fenced runner's PATH (:mod:`tests.support.fake_pct`): it
records its argv and runs it in the simulated node's root shell, so the real
:class:`~felhom_agent.privileged.runner.LocalRunner` starts a real process and the container
appears in the simulator as it would on a node.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from felhom_agent.execution.executor import JobSpec
from felhom_agent.kinds.registry import REGISTRY
from felhom_agent.privileged import LocalRunner
from felhom_agent.privileged.facade import Privileged
from felhom_agent.proxmox.models import GuestType
from felhom_agent.sim.pve import PveSimulator
from tests.provision.helpers import LXC_TEMPLATE, Rig, block, desired, rig_of, scenario
from tests.support.fake_pct import FakePct

WAIT = 30.0
ROOT = Path(__file__).resolve().parents[2] / "felhom_agent"
OSTEMPLATE = "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"
PARAMS: dict[str, Any] = {"ostemplate": OSTEMPLATE, "hostname": "golden-web",
                          "storage": "local-lvm", "features": ["keyctl", "nesting"],
                          "memory": 2048, "cores": 2,
                          "net0": "name=eth0,bridge=vmbr0,ip=dhcp"}
#: The exact command line ``guest.create_golden`` with :data:`PARAMS` runs on vmid 9100.
ARGV = ["pct", "create", "9100", OSTEMPLATE, "--hostname", "golden-web",
        "--rootfs", "local-lvm:8", "--memory", "2048", "--cores", "2",
        "--net0", "name=eth0,bridge=vmbr0,ip=dhcp", "--unprivileged", "1",
        "--features", "keyctl=1,nesting=1"]


@pytest.fixture
def sim() -> Iterator[PveSimulator]:
    with PveSimulator(scenario()) as s:
        yield s
        assert s.internal_errors == []


@pytest.fixture
def pct(sim: PveSimulator, tmp_path: Path) -> Iterator[FakePct]:
    with FakePct(tmp_path / "bin", sim) as fake:
        yield fake


@pytest.fixture
def rig(sim: PveSimulator, pct: FakePct, tmp_path: Path) -> Iterator[Rig]:
    root_cli = Privileged(LocalRunner(path=pct.path))
    yield from rig_of(sim, tmp_path / "state", privileged=root_cli)


def _golden(op_id: str = "op-golden", vmid: int = 9100, source: str = "alice@ops",
            **params: Any) -> JobSpec:
    return JobSpec(op_id, vmid, GuestType.LXC, "create_golden", {**PARAMS, **params}, source)


def test_create_golden_runs_pct_exactly_then_converts(rig: Rig, sim: PveSimulator,
                                                      pct: FakePct) -> None:
    """One ``pct create`` with exactly the specified argv (unprivileged, keyctl and nesting),
    then the container is a template; the command line is audited before the outcome."""
    out = rig.engine.submit_op(_golden()).result(WAIT)
    assert out.state == "applied", out
    assert pct.calls() == [ARGV]
    g = sim.guest(9100)
    assert g["config"]["template"] == 1 and g["lock"] is None
    assert g["config"]["features"] == "keyctl=1,nesting=1" and g["config"]["unprivileged"] == 1
    assert [t["type"] for t in sim.tasks() if t["id"] == "9100"] == ["vztemplate"]
    audit = [(a["outcome"], a["reason"]) for a in rig.audit_lines()]
    assert audit[0] == ("root_cli", "root CLI: " + " ".join(ARGV))
    assert audit[1][0] == "applied"


def test_without_net0_or_nesting(rig: Rig, pct: FakePct) -> None:
    """``net0`` is optional and ``features: ["keyctl"]`` gives keyctl alone."""
    params = {k: v for k, v in PARAMS.items() if k != "net0"}
    out = rig.engine.submit_op(JobSpec("op-2", 9101, GuestType.LXC, "create_golden",
                                       {**params, "features": ["keyctl"]}, "alice@ops")
                               ).result(WAIT)
    assert out.state == "applied", out
    assert pct.calls() == [["pct", "create", "9101", OSTEMPLATE, "--hostname", "golden-web",
                            "--rootfs", "local-lvm:8", "--memory", "2048", "--cores", "2",
                            "--unprivileged", "1", "--features", "keyctl=1"]]


def test_golden_of_a_taken_vmid_is_refused_before_pct(rig: Rig, pct: FakePct) -> None:
    """The vmid of an existing guest: refused, ``pct`` never started."""
    out = rig.engine.submit_op(_golden(vmid=LXC_TEMPLATE)).result(WAIT)
    assert out.state == "refused" and "collision" in out.reason
    assert pct.calls() == []


def test_golden_never_runs_from_a_plan_source(rig: Rig, pct: FakePct) -> None:
    """Defence in depth: a job with a plan source asking for a fenced kind is refused."""
    out = rig.engine.submit_op(_golden(source="plan:7")).result(WAIT)
    assert out.state == "refused"
    assert "only a signed op may ask for it" in out.reason
    assert pct.calls() == []


def test_pct_failing_fails_the_op_without_conversion(sim: PveSimulator,
                                                     tmp_path: Path) -> None:
    """``pct`` exiting non-zero: the op fails with its stderr; no template call is made."""
    with FakePct(tmp_path / "bin", None, {"returncode": 2, "stdout": "",
                                          "stderr": "unable to create CT 9100 - no space\n"}
                 ) as fake:
        for rig in rig_of(sim, tmp_path / "state",
                          privileged=Privileged(LocalRunner(path=fake.path))):
            out = rig.engine.submit_op(_golden()).result(WAIT)
            assert out.state == "failed"
            assert "pct create 9100 failed" in out.reason and "no space" in out.reason
            assert fake.calls() == [ARGV]
    assert not sim.has_guest(9100) and sim.tasks() == []


def test_nothing_else_reaches_pct(rig: Rig, sim: PveSimulator, pct: FakePct) -> None:
    """Runtime check: every other kind the agent runs -- a provisioning pass, its config and
    start, snapshots, a rollback, a backup, a destroy -- leaves ``pct`` unstarted; then the
    signed golden op starts it exactly once."""
    rig.provider.update(desired(1, {"1001": {"type": "lxc", "state": "running",
                                             "config": {"description": "x"},
                                             "provision": block(LXC_TEMPLATE, "c")}}))
    for h in rig.engine.run_pass().submitted:
        assert h.result(WAIT).state == "applied"
    for h in rig.engine.run_pass().submitted:
        assert h.result(WAIT).state == "applied"
    jobs = [("snapshot", {"snapname": "s1"}), ("rollback", {"snapname": "s1"}),
            ("stop", {}), ("backup", {"storage": "local"}), ("destroy", {})]
    for n, (kind, params) in enumerate(jobs):
        out = rig.engine.submit_op(JobSpec(f"op-{n}", 1001, GuestType.LXC, kind, params,
                                           "alice@ops")).result(WAIT)
        assert out.state == "applied", (kind, out)
    assert pct.calls() == []
    assert rig.engine.submit_op(_golden()).result(WAIT).state == "applied"
    assert pct.calls() == [ARGV]


# ---------------------------------------------------------------------- the static proof


def _references(name: str, *, calls_only: bool = False) -> list[str]:
    """``path:function`` of every use (a call, an attribute, a name; with ``calls_only`` only
    a call of that name) of ``name`` in the package, by the innermost enclosing function
    (``<module>`` outside any); imports and ``__all__`` strings are not uses."""
    found: set[str] = set()

    def hit(node: ast.AST) -> bool:
        if calls_only:
            if not isinstance(node, ast.Call):
                return False
            node = node.func
        return ((isinstance(node, ast.Attribute) and node.attr == name)
                or (isinstance(node, ast.Name) and node.id == name))

    def visit(node: ast.AST, where: str, path: Path) -> None:
        for child in ast.iter_child_nodes(node):
            inner = (child.name if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
                     else where)
            if hit(child):
                found.add(f"{path.relative_to(ROOT)}:{inner}")
            visit(child, inner, path)

    for path in sorted(ROOT.rglob("*.py")):
        visit(ast.parse(path.read_text(), str(path)), "<module>", path)
    return sorted(found)


def test_pct_create_is_reachable_only_through_the_signed_golden_kind() -> None:
    """Call-graph scan: ``Privileged.create_golden_ct`` is called only by the golden kind's
    fenced step, and ``PctCreate`` built only there; that step is the registry's only
    ``fenced`` hook, on a signed-only kind that is never planned; the executor is the only
    caller of a ``fenced`` hook and refuses it for a planned action; the one ``Privileged``
    object is built by the composition root, once."""
    assert _references("create_golden_ct") == [
        "kinds/provision_handlers.py:create_golden_ct",  # priv.create_golden_ct(args)
        "kinds/registry.py:<module>",                    # fenced=ph.create_golden_ct
    ]
    assert _references("PctCreate") == ["kinds/provision_handlers.py:golden_args",
                                        "privileged/facade.py:create_golden_ct"]
    fenced = [k for k in REGISTRY.values() if k.fenced is not None]
    assert [(k.name, k.signed, k.plan_action) for k in fenced] == [
        ("create_golden", "guest.create_golden", False)]
    assert _references("fenced", calls_only=True) == ["execution/executor.py:_run_fenced"]
    assert _references("Privileged", calls_only=True) == ["compose/root.py:privileged"]
    assert _references("privileged", calls_only=True) == ["compose/root.py:build_parts"]
