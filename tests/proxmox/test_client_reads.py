"""Typed reads: PVE's loose JSON becomes attrs models.

See ``docs/pve-facts.md`` ("Config round trip").
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import pytest

from felhom_agent.proxmox import (
    REQUIRED_PRIVILEGES,
    GuestType,
    ParameterError,
    ProxmoxClient,
    read_checks,
)
from tests.support.pve import loopback_client

from .loopback_tls import Answer, LoopbackPve

UPID = "UPID:pve:00001234:00005678:6650A1B2:qmconfig:100:agent@pve!host:"


def _data(value: object, total: int | None = None) -> Answer:
    doc: dict[str, object] = {"data": value}
    if total is not None:
        doc["total"] = total
    return Answer(body=json.dumps(doc).encode())


@pytest.fixture
def server() -> Iterator[LoopbackPve]:
    with LoopbackPve() as srv:
        yield srv


@pytest.fixture
def client(server: LoopbackPve) -> Iterator[ProxmoxClient]:
    with loopback_client(server) as c:
        yield c


def test_guests_are_filtered_to_our_node_and_coerced(
    server: LoopbackPve, client: ProxmoxClient
) -> None:
    """Cluster resources are filtered to our node, qemu+lxc only; string vmids become ints."""
    server.routes["GET /api2/json/cluster/resources"] = _data(
        [
            {
                "id": "lxc/101",
                "vmid": "101",
                "type": "lxc",
                "node": "pve",
                "status": "running",
                "name": "web",
                "tags": "b;a",
                "lock": "backup",
            },
            {
                "id": "qemu/100",
                "vmid": 100,
                "type": "qemu",
                "node": "pve",
                "status": "stopped",
                "name": "db",
                "template": 1,
            },
            {"id": "qemu/200", "vmid": 200, "type": "qemu", "node": "other", "status": "running"},
            {"id": "storage/pve/local", "type": "storage", "node": "pve"},
        ]
    )
    guests = client.guests()
    assert [(g.vmid, g.type, g.lock, g.template) for g in guests] == [
        (100, GuestType.QEMU, None, True),
        (101, GuestType.LXC, "backup", False),
    ]
    assert guests[1].tags == ("b", "a")
    assert server.seen[0].path == "/api2/json/cluster/resources?type=vm"


def test_status_config_and_snapshots(server: LoopbackPve, client: ProxmoxClient) -> None:
    """status/current, config (digest split off) and snapshots (no 'current') are parsed."""
    base = "GET /api2/json/nodes/pve/qemu/100"
    server.routes[f"{base}/status/current"] = _data(
        {"status": "running", "qmpstatus": "paused", "ha": {"managed": 1}, "uptime": "42"}
    )
    server.routes[f"{base}/config"] = _data(
        {"description": "hi", "memory": "2048", "digest": "abc123"}
    )
    server.routes[f"{base}/snapshot"] = _data(
        [
            {"name": "current", "digest": "abc123", "running": 1, "description": "You are here!"},
            {"name": "b", "snaptime": 20, "parent": "a"},
            {"name": "a", "snaptime": 10, "vmstate": 1, "description": "first"},
        ]
    )
    st = client.guest_status(100, GuestType.QEMU)
    assert (st.running, st.qmpstatus, st.ha_managed, st.uptime_s) == (True, "paused", True, 42)
    cfg = client.guest_config(100, GuestType.QEMU)
    assert cfg.digest == "abc123"
    assert dict(cfg.values) == {"description": "hi", "memory": "2048"}
    snaps = client.snapshots(100, GuestType.QEMU)
    assert [s.name for s in snaps] == ["a", "b"]
    assert snaps[0].vmstate and snaps[1].parent == "a"


def test_config_write_is_dual_mode(server: LoopbackPve, client: ProxmoxClient) -> None:
    """qemu config writes POST (a UPID to wait on); lxc PUT answers null (synchronous)."""
    server.routes["POST /api2/json/nodes/pve/qemu/100/config"] = _data(UPID)
    server.routes["PUT /api2/json/nodes/pve/lxc/101/config"] = _data(None)
    q = client.set_guest_config(100, GuestType.QEMU, {"onboot": True}, digest="d1")
    lx = client.set_guest_config(101, GuestType.LXC, {"description": "x"}, delete=["tags"])
    assert q.upid is not None and q.upid.type == "qmconfig"
    assert lx.synchronous
    assert server.seen[0].body == b"onboot=1&digest=d1"
    assert server.seen[1].body == b"description=x&delete=tags"


def test_tasks_and_log_pages(server: LoopbackPve, client: ProxmoxClient) -> None:
    """The task list and log keep PVE's total; the status is read on the UPID's node."""
    server.routes["GET /api2/json/nodes/pve/tasks"] = _data(
        [
            {
                "upid": UPID,
                "node": "pve",
                "type": "qmconfig",
                "id": "100",
                "user": "agent@pve!host",
                "starttime": 1716560306,
                "status": "RUNNING",
            }
        ],
        total=7,
    )
    server.routes[f"GET /api2/json/nodes/pve/tasks/{UPID}/log"] = _data(
        [{"n": 1, "t": "starting"}, {"n": 2, "t": "TASK OK"}], total=2
    )
    listing = client.tasks(source="active", vmid=100)
    assert listing.total == 7
    assert listing.entries[0].parsed_upid.vmid == 100
    assert "source=active" in server.seen[0].path and "vmid=100" in server.seen[0].path
    log = client.task_log(UPID)
    assert (log.text, log.total) == ("starting\nTASK OK", 2)
    with pytest.raises(ParameterError):
        client.tasks(source="everything")


def test_local_validation_before_sending(server: LoopbackPve, client: ProxmoxClient) -> None:
    """Bad vmids, snapshot names and config keys are refused before any request."""
    with pytest.raises(ParameterError):
        client.start(99, GuestType.QEMU)
    with pytest.raises(ParameterError):
        client.create_snapshot(100, GuestType.LXC, "current")
    with pytest.raises(ParameterError):
        client.create_snapshot(100, GuestType.LXC, "../x")
    with pytest.raises(ParameterError):
        client.set_guest_config(100, GuestType.LXC, {"digest": "x"})
    assert server.seen == []


def test_concurrent_calls_are_bounded_by_max_connections(server: LoopbackPve) -> None:
    """With max_connections=2, four concurrent calls never put more than two on the server."""
    server.routes["GET /api2/json/version"] = Answer(
        action="hold", body=b'{"data":{"version":"9.2.2","release":"9.2"}}'
    )
    results: list[str] = []
    with loopback_client(server, timeout_s=10, max_connections=2) as client:
        threads = [
            threading.Thread(target=lambda: results.append(client.version().version))
            for _ in range(4)
        ]
        for t in threads:
            t.start()
        with server.changed:
            assert server.changed.wait_for(lambda: server.active == 2, timeout=5)
            # Give a (wrongly) unbounded client the chance to put a third call on the wire.
            assert not server.changed.wait_for(lambda: server.active > 2, timeout=0.3)
        server.release.set()
        for t in threads:
            t.join(10)
    assert results == ["9.2.2"] * 4
    assert server.max_active == 2


def test_read_checks_name_every_missing_privilege(
    server: LoopbackPve, client: ProxmoxClient
) -> None:
    """The read selftest passes every check but permissions, which names each missing one."""
    server.routes["GET /api2/json/version"] = _data({"version": "9.2.2", "release": "9.2"})
    server.routes["GET /api2/json/access/permissions"] = lambda: _perm_answer(server)
    server.routes["GET /api2/json/nodes/pve/status"] = _data({"pveversion": "pve-manager/9.2.2"})
    server.routes["GET /api2/json/cluster/resources"] = _data([])
    server.routes["GET /api2/json/nodes/pve/tasks"] = _data([], total=0)
    checks = read_checks(client, REQUIRED_PRIVILEGES)
    assert [c.name for c in checks] == [
        "api-reachable",
        "tls-pin",
        "token",
        "permissions",
        "node",
        "guests",
        "tasks",
    ]
    assert [c.name for c in checks if not c.ok] == ["permissions"]
    detail = checks[3].detail
    assert "VM.Snapshot on /vms" in detail and "Datastore.Audit on /storage" in detail
    assert "VM.Audit" not in detail
    assert "intersection" in detail


def _perm_answer(server: LoopbackPve) -> Answer:
    path = server.seen[-1].path
    granted = {
        "/vms": {"VM.Audit": 1, "VM.PowerMgmt": 1, "VM.Config.Options": 1},
        "/nodes": {"Sys.Audit": 1},
    }
    # The server evaluates the asked path; /nodes/pve inherits from /nodes (propagate=1).
    return _data(granted if "path=" in path else {})
