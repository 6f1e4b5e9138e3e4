"""The per-guest API's kind: signed ``guestapi.enable`` (a VM's serial socket, through the
reversibility gate), on the PVE simulator."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from felhom_agent.authz.envelope import SignedOp
from felhom_agent.execution.executor import Executor, JobSpec
from felhom_agent.kinds.classify import classify_op
from felhom_agent.kinds.model import Reversibility, Safety
from felhom_agent.proxmox.client import ProxmoxClient
from felhom_agent.proxmox.models import GuestType
from felhom_agent.proxmox.taskwatch import TaskWatcher
from felhom_agent.signedops.gate import GateRefused, GuestFacts, check_op, plan_steps
from felhom_agent.sim.pve import PveSimulator
from tests.reconcile.crash_child import mutations, open_state, scenario
from tests.support.pve import sim_client

LOG = logging.getLogger("test.guestapi.kinds")
OP_ID = "7c1e2f30-0000-4000-8000-00000000abcd"
T0 = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)


def _op(kind: str, vmid: int, params: dict[str, object] | None = None) -> SignedOp:
    return SignedOp(op_id=OP_ID, host_id="pve1", kind=kind, vmid=vmid, params=params or {},
                    irreversible=False, nonce="0" * 32, issued_at=T0,
                    expires_at=T0 + timedelta(minutes=10))


def test_guestapi_enable_is_gated_like_a_hardware_change() -> None:
    """Destructive with a safety snapshot first; VMs only; it takes no params."""
    verdict = classify_op("guestapi.enable")
    assert (verdict.safety, verdict.reversibility) == (Safety.DESTRUCTIVE, Reversibility.SNAPSHOT)
    vm = GuestFacts(201, GuestType.QEMU, running=True, protected=False)
    op = _op("guestapi.enable", 201)
    steps = plan_steps(op, check_op(op), vm)
    assert [(s.purpose, s.kind) for s in steps] == [("safety-snapshot", "snapshot"),
                                                     ("op", "guestapi.enable")]
    ct = GuestFacts(100, GuestType.LXC, running=True, protected=False)
    with pytest.raises(GateRefused, match="for VMs"):
        plan_steps(_op("guestapi.enable", 100), check_op(_op("guestapi.enable", 100)), ct)
    with pytest.raises(GateRefused, match="unknown key"):
        check_op(_op("guestapi.enable", 201, {"serial": 2}))


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[PveSimulator, ProxmoxClient, Executor]]:
    with PveSimulator(scenario(qemu=2, lxc=1)) as sim, sim_client(sim) as client:
        journal, audit = open_state(tmp_path / "state", LOG)
        watcher = TaskWatcher(client, logger=LOG)
        watcher.start()
        try:
            yield sim, client, Executor(client=client, journal=journal, audit=audit,
                                        task_timeout_s=10.0, waiter=watcher, logger=LOG)
        finally:
            watcher.stop()
            journal.close()
            audit.close()


def test_enable_writes_serial1_socket_once(
        world: tuple[PveSimulator, ProxmoxClient, Executor]) -> None:
    """The op sets ``serial1: socket``; run again (another op id) it is already satisfied."""
    sim, client, executor = world
    result = executor.run(JobSpec("op-1", 200, GuestType.QEMU, "guestapi.enable", {}, "alice"))
    assert result.state == "applied", result.reason
    assert client.guest_config(200, GuestType.QEMU).values["serial1"] == "socket"
    assert mutations(sim, 200) == ["qmconfig"]
    again = executor.run(JobSpec("op-2", 200, GuestType.QEMU, "guestapi.enable", {}, "alice"))
    assert again.state == "applied" and not again.mutated


def test_a_serial1_in_use_is_never_overwritten(
        world: tuple[PveSimulator, ProxmoxClient, Executor]) -> None:
    """serial1 set to a real device: refused with the reason, nothing sent."""
    _sim, client, executor = world
    written = client.set_guest_config(201, GuestType.QEMU, {"serial1": "/dev/ttyS1"})
    if written.upid is not None:
        client.wait(written.upid, timeout_s=10)
    result = executor.run(JobSpec("op-3", 201, GuestType.QEMU, "guestapi.enable", {}, "alice"))
    assert result.state == "refused" and "/dev/ttyS1" in result.reason
    assert client.guest_config(201, GuestType.QEMU).values["serial1"] == "/dev/ttyS1"
