"""The vmid range: one definition, and every checker in the agent agrees with it."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from felhom_agent.authz.envelope import parse_payload
from felhom_agent.authz.errors import OpRejected
from felhom_agent.cli import _check_flag_combinations
from felhom_agent.cli._parser import build_parser
from felhom_agent.core.desired import DesiredStateError, parse_desired
from felhom_agent.errors import AgentError, UsageError
from felhom_agent.kinds.registry import SIGNED_KINDS
from felhom_agent.privileged.ops import NetSpec, PctCreate
from felhom_agent.proxmox.client import _check_vmid
from felhom_agent.sim.pve.defaults import default_scenario_dict
from felhom_agent.sim.pve.scenario import PveScenario, ScenarioError
from felhom_agent.vmids import VMID_MAX, VMID_MIN, VMID_RANGE, VMID_TEXT, is_vmid

EDGES = (-101, 0, 1, 99, 100, 101, 999_999_998, 999_999_999, 1_000_000_000, 2**63)


def test_the_range_is_pves() -> None:
    """100..999999999, as PVE's schema types ``vmid``; shown the same way everywhere."""
    assert (VMID_MIN, VMID_MAX, VMID_RANGE) == (100, 999_999_999, "100..999999999")


@given(st.integers())
def test_is_vmid_is_the_closed_range(value: int) -> None:
    """Any integer is a vmid exactly when it lies within the closed range."""
    assert is_vmid(value) == (VMID_MIN <= value <= VMID_MAX)


@pytest.mark.parametrize("value", [True, False, 101.0, "101", None])
def test_only_ints_are_vmids(value: object) -> None:
    """Booleans (an ``int`` subclass), floats and strings are not vmids."""
    assert not is_vmid(value)


@given(st.integers(min_value=0, max_value=10**12))
def test_canonical_text_is_str_of_int(value: int) -> None:
    """The canonical spelling is exactly ``str(n)`` for n > 0; zero-padding is refused."""
    assert bool(VMID_TEXT.fullmatch(str(value))) == (value > 0)
    assert not VMID_TEXT.fullmatch("0" + str(value))
    assert not VMID_TEXT.fullmatch("+" + str(value))


def _payload(vmid: int) -> bytes:
    return json.dumps({
        "v": 1, "op_id": str(uuid.uuid4()), "host_id": "pve1", "kind": "guest.start",
        "vmid": vmid, "params": {}, "irreversible": False, "nonce": "0" * 32,
        "issued_at": "2026-01-01T00:00:00Z", "expires_at": "2026-01-01T00:05:00Z",
    }).encode()


def _accepts(check: Callable[[int], object], error: type[Exception]) -> Callable[[int], bool]:
    def run(vmid: int) -> bool:
        try:
            check(vmid)
        except error:
            return False
        return True
    return run


CHECKERS: dict[str, Callable[[int], bool]] = {
    "signed-op payload": _accepts(
        lambda v: parse_payload(_payload(v), kinds=SIGNED_KINDS), OpRejected),
    "desired state": _accepts(lambda v: parse_desired(
        {"generation": 1, "guests": {str(v): {"type": "qemu", "state": "running"}}}),
        DesiredStateError),
    "client": _accepts(_check_vmid, AgentError),
    "fenced CLI": _accepts(lambda v: PctCreate(
        vmid=v, ostemplate="local:vztmpl/debian-12.tar.zst", hostname="ct",
        storage="local-lvm", net0=NetSpec(bridge="vmbr0")), AgentError),
    "command line": _accepts(lambda v: _check_flag_combinations(build_parser().parse_args(
        ["--selftest=task", "--vmid", str(v)])), UsageError),
    "PVE simulator": _accepts(lambda v: PveScenario.from_dict(
        {**default_scenario_dict(), "guests": [{"vmid": v, "type": "qemu"}]}),
        ScenarioError),
}


@pytest.mark.parametrize("where", sorted(CHECKERS))
@pytest.mark.parametrize("vmid", [v for v in EDGES if v >= 0])
def test_every_checker_agrees_with_the_range(where: str, vmid: int) -> None:
    """At and around both edges, each place that validates a vmid says what is_vmid says."""
    assert CHECKERS[where](vmid) == is_vmid(vmid)
