"""Fault injection: latency, 5xx, dropped connections, failing and hanging tasks."""

from __future__ import annotations

import threading

import pytest
import requests

from felhom_agent.sim.pve import Fault, PveSimulator
from tests.sim.helpers import TIMEOUT, Api, make_scenario


def test_latency_fault_holds_request_until_cleared(api: Api) -> None:
    """A latency fault holds matching requests; clear_faults releases them at once."""
    sim = api.sim
    sim.inject(Fault("latency", path="/nodes/*/qemu", delay_s=60))
    results: list[int] = []
    t = threading.Thread(target=lambda: results.append(api.get("/nodes/pve1/qemu").status_code))
    t.start()
    assert sim.wait_requests(in_flight=1, timeout=TIMEOUT)
    assert Api(sim).get("/version").status_code == 200  # other paths are not delayed
    assert results == []
    sim.clear_faults()
    t.join(timeout=TIMEOUT)
    assert results == [200]


def test_http_error_fault_fires_count_times_on_method_and_path(api: Api) -> None:
    """An http_error fault answers its status and message for `count` matching requests."""
    api.sim.inject(Fault("http_error", path="/nodes/pve1/qemu/101/status/start", method="POST",
                         status=503, message="Service Unavailable", count=1))
    assert api.get("/nodes/pve1/qemu/101/status/current").status_code == 200
    r = api.post("/nodes/pve1/qemu/101/status/start")
    assert (r.status_code, r.reason) == (503, "Service Unavailable")
    assert api.post("/nodes/pve1/qemu/101/status/start").status_code == 200


def test_drop_fault_closes_connection_without_response(api: Api) -> None:
    """A drop fault closes the connection with no response; the next request succeeds."""
    api.sim.inject(Fault("drop", path="/version", count=1))
    with pytest.raises(requests.exceptions.ConnectionError):
        api.get("/version")
    assert api.get("/version").status_code == 200


def test_drop_after_runs_the_mutation_but_sends_no_response(api: Api) -> None:
    """A drop_after fault forks the task and then closes the connection: the caller sees a
    transport error, the node's task list shows the task (the 'outcome unknown' case)."""
    api.sim.inject(Fault("drop_after", path="/nodes/*/qemu/101/status/start", count=1))
    with pytest.raises(requests.exceptions.ConnectionError):
        api.post("/nodes/pve1/qemu/101/status/start")
    tasks = api.data("GET", "/nodes/pve1/tasks", params={"source": "all", "vmid": 101})
    assert [t["type"] for t in tasks] == ["qmstart"]
    api.sim.wait_task(tasks[0]["upid"], TIMEOUT)
    assert api.sim.guest(101)["status"] == "running"


def test_no_such_task_fault_answers_like_a_fresh_upid(api: Api) -> None:
    """A no_such_task fault makes the next status reads answer 400 'no such task'."""
    api.sim.inject(Fault("no_such_task", path="/nodes/pve1/tasks/*/status", count=2))
    upid = api.data("POST", "/nodes/pve1/lxc/100/status/stop")
    for _ in range(2):
        r = api.get(f"/nodes/pve1/tasks/{upid}/status")
        assert r.status_code == 400 and r.json()["errors"] == {"upid": "no such task"}
    api.sim.wait_task(upid, TIMEOUT)
    assert api.data("GET", f"/nodes/pve1/tasks/{upid}/status")["exitstatus"] == "OK"


def test_task_hang_never_finishes_until_deleted(api: Api) -> None:
    """A task_hang task ignores release_tasks and ends only when stopped via DELETE,
    with 'received interrupt'."""
    sim = api.sim
    sim.inject(Fault("task_hang", task_type="qmstart"))
    upid = api.data("POST", "/nodes/pve1/qemu/101/status/start")
    sim.release_tasks()
    with pytest.raises(TimeoutError):
        sim.wait_task(upid, timeout=0.2)
    assert api.data("GET", f"/nodes/pve1/tasks/{upid}/status")["status"] == "running"
    assert api.data("DELETE", f"/nodes/pve1/tasks/{upid}") is None
    assert sim.wait_task(upid, TIMEOUT)["exitstatus"] == "received interrupt"
    assert sim.guest(101)["status"] == "stopped"


def test_hanging_task_does_not_block_shutdown() -> None:
    """Stopping the simulator ends a hanging task's thread promptly (no leaked thread)."""
    before = set(threading.enumerate())
    with PveSimulator(make_scenario()) as sim:
        sim.inject(Fault("task_hang"))
        Api(sim).data("POST", "/nodes/pve1/lxc/100/status/stop")
    leaked = [t for t in threading.enumerate() if t not in before and t.is_alive()]
    assert not leaked


def test_faults_from_the_scenario_are_active_at_start() -> None:
    """Faults listed in the scenario file behave like injected ones."""
    scen = make_scenario(faults=[{"kind": "http_error", "path": "/version", "status": 502,
                                  "message": "Bad Gateway"}])
    with PveSimulator(scen) as sim:
        r = Api(sim).get("/version")
        assert (r.status_code, r.reason) == (502, "Bad Gateway")


def test_fault_validation_rejects_unknown_kind() -> None:
    """Fault kinds are validated."""
    with pytest.raises(ValueError, match="fault kind"):
        Fault("explode")
