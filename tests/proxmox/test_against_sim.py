"""The client end to end against the PVE simulator: real HTTPS, real pin, real tasks."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import certifi
import pytest

from felhom_agent.proxmox import (
    REQUIRED_PRIVILEGES,
    AuthError,
    GuestType,
    ParameterError,
    PermissionDenied,
    PinMismatch,
    ProxmoxClient,
    ResponseTimeout,
    ServerError,
    TaskFailed,
    TaskOutcome,
    TaskTimeout,
    TransportError,
    UpidError,
    read_checks,
)
from felhom_agent.secret import Secret
from felhom_agent.sim.pve import Fault, PveScenario, PveSimulator
from felhom_agent.sim.pve.defaults import default_scenario_dict
from tests.support.pve import no_sleep, sim_client

LIMITED_TOKEN = "limited@pve!agent"
LIMITED_SECRET = "5f0c5a8e-limited-secret"


def _scenario() -> PveScenario:
    data: dict[str, Any] = copy.deepcopy(default_scenario_dict())
    data["auth_failure_delay_s"] = 0.05
    data["tokens"].append(
        {
            "id": LIMITED_TOKEN,
            "secret": LIMITED_SECRET,
            "privsep": True,
            "user_privileges": {"/": ["Administrator"]},
            # The token's own ACL lacks VM.Snapshot: the privsep intersection drops it.
            "token_privileges": {"/": ["PVEAuditor", "VM.PowerMgmt", "VM.Config.Options"]},
        }
    )
    return PveScenario.from_dict(data)


@pytest.fixture
def sim() -> Iterator[PveSimulator]:
    with PveSimulator(_scenario()) as s:
        yield s


@pytest.fixture
def client(sim: PveSimulator) -> Iterator[ProxmoxClient]:
    with sim_client(sim) as c:
        yield c


def test_read_selftest_passes_with_a_full_token(client: ProxmoxClient) -> None:
    """Every read check passes for a token holding all required privileges."""
    checks = read_checks(client, REQUIRED_PRIVILEGES)
    assert [(c.name, c.ok) for c in checks if not c.ok] == []
    assert len(checks) == 7


def test_read_selftest_names_the_missing_privilege(sim: PveSimulator) -> None:
    """A privsep token lacking VM.Snapshot fails the permissions check, naming it."""
    with sim_client(sim, token_id=LIMITED_TOKEN, token_secret=Secret(LIMITED_SECRET)) as c:
        checks = {ch.name: ch for ch in read_checks(c)}
    assert not checks["permissions"].ok
    assert "VM.Snapshot on /vms" in checks["permissions"].detail
    assert "intersection" in checks["permissions"].detail
    assert checks["guests"].ok and checks["tasks"].ok


def test_wrong_pin_sends_nothing(sim: PveSimulator) -> None:
    """With a wrong pin the call fails and the simulator receives no request at all."""
    wrong = "00:" * 31 + "00"
    with sim_client(sim, tls_fingerprint=wrong) as c, pytest.raises(PinMismatch) as info:
        c.version()
    assert sim.requests_seen == 0
    assert info.value.served == sim.fingerprint
    with sim_client(sim, tls_fingerprint="00:" * 31 + "00") as c:
        checks = read_checks(c)
    assert [(ch.name, ch.ok) for ch in checks[:2]] == [("api-reachable", True), ("tls-pin", False)]
    assert sim.fingerprint in checks[1].detail
    assert sim.requests_seen == 0


def test_pin_works_with_ca_bundle_variables(
    sim: PveSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """REQUESTS_CA_BUNDLE/CURL_CA_BUNDLE set in the environment do not break the pin."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", certifi.where())
    monkeypatch.setenv("CURL_CA_BUNDLE", certifi.where())
    with sim_client(sim) as c:
        assert c.version().version


def test_wrong_secret_is_auth_error(sim: PveSimulator) -> None:
    """A wrong secret gives AuthError (401) and the read selftest fails the token check."""
    with sim_client(sim, token_secret=Secret("wrong-secret")) as c:
        with pytest.raises(AuthError):
            c.version()
        checks = {ch.name: ch.ok for ch in read_checks(c)}
    assert checks["tls-pin"] and not checks["token"]


def test_403_keeps_privilege_and_hint(sim: PveSimulator) -> None:
    """A snapshot without VM.Snapshot is a 403 naming the privilege, with the privsep hint."""
    limited = sim_client(sim, token_id=LIMITED_TOKEN, token_secret=Secret(LIMITED_SECRET))
    with limited as c, pytest.raises(PermissionDenied) as info:
        c.create_snapshot(101, GuestType.QEMU, "s1")
    assert "VM.Snapshot" in info.value.privileges
    assert info.value.acl_path == "/vms/101"
    assert "intersection" in str(info.value)


def test_400_field_errors(client: ProxmoxClient) -> None:
    """A bad value gives ParameterError with PVE's per-field text."""
    with pytest.raises(ParameterError) as info:
        client.set_guest_config(100, GuestType.LXC, {"onboot": "maybe"})
    assert "onboot" in info.value.errors


def test_5xx_is_server_error(sim: PveSimulator, client: ProxmoxClient) -> None:
    """An injected 503 gives ServerError carrying the status and message."""
    sim.inject(Fault("http_error", path="/version", status=503, message="proxy gone", count=1))
    with pytest.raises(ServerError) as info:
        client.version()
    assert info.value.status == 503 and "proxy gone" in str(info.value)


def test_dropped_connection(sim: PveSimulator) -> None:
    """A dropped GET is retried transparently; a dropped POST is a TransportError."""
    with sim_client(sim, sleep=no_sleep) as c:
        sim.inject(Fault("drop", path="/version", count=1))
        assert c.version().version
        sim.inject(Fault("drop", method="POST", count=1))
        with pytest.raises(TransportError):
            c.start(102, GuestType.LXC)


def test_slow_response_times_out(sim: PveSimulator) -> None:
    """An answer slower than timeout_s raises ResponseTimeout."""
    sim.inject(Fault("latency", path="/version", delay_s=10))
    try:
        with sim_client(sim, timeout_s=0.3) as c, pytest.raises(ResponseTimeout):
            c.version()
    finally:
        sim.clear_faults()


def test_wait_ok_and_state_changed(sim: PveSimulator, client: ProxmoxClient) -> None:
    """start -> UPID -> wait gives OK, and the guest is then running."""
    dispatch = client.start(102, GuestType.LXC)
    assert dispatch.upid is not None and dispatch.upid.type == "vzstart"
    result = client.wait(dispatch)
    assert result.outcome is TaskOutcome.OK
    assert client.guest_status(102, GuestType.LXC).running
    assert sim.guest(102)["status"] == "running"


def test_wait_warnings(sim: PveSimulator, client: ProxmoxClient) -> None:
    """A task ending 'WARNINGS: 2' is success with two warnings."""
    sim.inject(Fault("task_fail", task_type="vzstart", message="WARNINGS: 2", count=1))
    result = client.wait(client.start(102, GuestType.LXC))
    assert (result.outcome, result.warnings) == (TaskOutcome.WARNINGS, 2)


def test_post_200_then_task_fails(client: ProxmoxClient) -> None:
    """Starting a running qemu VM answers 200 + UPID; the task fails with PVE's text."""
    client.wait(client.start(101, GuestType.QEMU))
    again = client.start(101, GuestType.QEMU)
    with pytest.raises(TaskFailed) as info:
        client.wait(again)
    assert "already running" in info.value.exitstatus
    assert info.value.upid == str(again.upid)


def test_injected_task_failure_text(sim: PveSimulator, client: ProxmoxClient) -> None:
    """An injected task failure surfaces its exitstatus text verbatim."""
    sim.inject(
        Fault("task_fail", task_type="qmsnapshot", message="snapshot feature is not available")
    )
    with pytest.raises(TaskFailed, match="snapshot feature is not available"):
        client.wait(client.create_snapshot(101, GuestType.QEMU, "s1"))


def test_status_is_read_on_the_upids_node(sim: PveSimulator, client: ProxmoxClient) -> None:
    """A client configured for another node still waits via the node named in the UPID."""
    dispatch = client.start(102, GuestType.LXC)
    with sim_client(sim, node="elsewhere") as other:
        with pytest.raises(ServerError, match="elsewhere"):
            other.tasks()
        assert other.wait(dispatch).outcome is TaskOutcome.OK


def test_wait_timeout_reports_still_running(sim: PveSimulator, client: ProxmoxClient) -> None:
    """A task that outlives the wait deadline raises TaskTimeout and keeps running."""
    sim.inject(Fault("task_hang", task_type="vzstart", count=1))
    dispatch = client.start(102, GuestType.LXC)
    with pytest.raises(TaskTimeout) as info:
        client.wait(dispatch, timeout_s=0.4)
    assert info.value.upid == str(dispatch.upid)
    active = client.tasks(source="active")
    assert str(dispatch.upid) in [e.upid for e in active.entries]
    assert all(e.status == "RUNNING" for e in active.entries)


def test_malformed_upid_is_refused(sim: PveSimulator, client: ProxmoxClient) -> None:
    """A malformed UPID is an error before any request is made."""
    before = sim.requests_seen
    with pytest.raises(UpidError):
        client.wait("UPID:pve1:123:bad")
    assert sim.requests_seen == before


def test_config_dual_mode_and_digest(sim: PveSimulator, client: ProxmoxClient) -> None:
    """lxc PUT is synchronous, qemu POST is a task; a stale digest is refused."""
    cfg = client.guest_config(100, GuestType.LXC)
    res = client.wait(
        client.set_guest_config(100, GuestType.LXC, {"description": "hello"}, digest=cfg.digest)
    )
    assert res.outcome is TaskOutcome.SYNCHRONOUS
    assert client.guest_config(100, GuestType.LXC).values["description"] == "hello\n"
    with pytest.raises(ServerError, match="modified configuration"):
        client.set_guest_config(100, GuestType.LXC, {"description": "x"}, digest=cfg.digest)
    qcfg = client.guest_config(101, GuestType.QEMU)
    dispatch = client.set_guest_config(101, GuestType.QEMU, {"onboot": True}, digest=qcfg.digest)
    assert dispatch.upid is not None
    assert client.wait(dispatch).outcome is TaskOutcome.OK
    assert int(client.guest_config(101, GuestType.QEMU).values["onboot"]) == 1


def test_snapshot_create_rollback_delete(client: ProxmoxClient) -> None:
    """Snapshot create, rollback and delete are tasks that all end OK."""
    client.wait(client.create_snapshot(101, GuestType.QEMU, "felhom-t1", description="t"))
    assert "felhom-t1" in [s.name for s in client.snapshots(101, GuestType.QEMU)]
    client.wait(client.rollback_snapshot(101, GuestType.QEMU, "felhom-t1"))
    client.wait(client.delete_snapshot(101, GuestType.QEMU, "felhom-t1"))
    assert "felhom-t1" not in [s.name for s in client.snapshots(101, GuestType.QEMU)]
    finished = client.tasks(vmid=101)
    assert {"qmsnapshot", "qmrollback", "qmdelsnapshot"} <= {e.type for e in finished.entries}


def test_other_reads(client: ProxmoxClient) -> None:
    """Node status, storage and disks parse from the simulator's answers."""
    assert client.node_status().mem_total > 0
    names = [s.storage for s in client.storages()]
    assert "local" in names
    local = client.storage_status("local")
    assert local.reachable and (local.total or 0) > 0
    assert any(v.content == "vztmpl" for v in client.storage_content("local"))
    assert any(d.devpath == "/dev/nvme0n1" for d in client.disks())
    assert "/vms" in client.permissions().paths
