"""The per-request latency knob (``request_latency_s`` / ``--request-latency``).

Every authenticated request holds its worker slot at least the latency, measured by the
simulator's own monotonic clock (``min_service_s``); the hold occupies only that request's
slot, so the bounded pool still serves ``workers`` requests at once and queues the rest.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
import requests

from felhom_agent.sim.pve import PveScenario, PveSimulator, ScenarioError
from tests.sim.helpers import (
    SECRET,
    TIMEOUT,
    Api,
    make_scenario,
    pinned_session,
    scenario_dict,
)
from tests.sim.test_program import _ready_line, _spawn, _stop

LATENCY_S = 0.03


def test_every_request_holds_its_slot_at_least_the_latency() -> None:
    """Reads, a task-forking POST and an error answer all take >= the latency in the
    simulator; the task the POST forks still runs normally."""
    with PveSimulator(make_scenario(request_latency_s=LATENCY_S)) as sim:
        api = Api(sim)
        assert api.data("GET", "/version")["release"]
        upid = api.data("POST", "/nodes/pve1/qemu/101/status/start")
        assert sim.wait_task(upid, timeout=TIMEOUT)["exitstatus"] == "OK"
        assert api.data("GET", "/nodes/pve1/qemu/101/status/current")["status"] == "running"
        assert api.get("/nodes/pve1/qemu/999/status/current").status_code >= 400
        api.session.close()
        assert sim.served == 4
        assert sim.min_service_s >= LATENCY_S
        assert sim.internal_errors == []


def test_zero_latency_is_the_default() -> None:
    """Without the key the simulator answers as fast as its handlers run."""
    assert PveScenario.from_dict(scenario_dict()).request_latency_s == 0.0


def test_the_hold_occupies_one_slot_only_and_the_pool_bound_stays() -> None:
    """With 3 workers, 4 concurrent requests: 3 are held in their slots at the same time
    (the latency does not serialise them) and the 4th queues for a slot."""
    sim = PveSimulator(make_scenario(workers=3, request_latency_s=600)).start()
    failures: list[BaseException] = []

    def call() -> None:
        session = pinned_session(sim.fingerprint, sim.auth_header)
        try:
            session.get(f"{sim.url}/api2/json/version", timeout=TIMEOUT * 3)
        except requests.RequestException as err:  # cut off by stop below
            failures.append(err)
        finally:
            session.close()

    threads = [threading.Thread(target=call) for _ in range(4)]
    try:
        for t in threads:
            t.start()
        assert sim.wait_requests(in_flight=3, queued=1, timeout=TIMEOUT)
        assert sim.peak_in_flight == 3 and sim.served == 0
    finally:
        sim.stop()  # interrupts the held requests: they are dropped, not answered
        for t in threads:
            t.join(TIMEOUT)
    assert sim.served == 0 and sim.internal_errors == []


@pytest.mark.parametrize("value", [-0.01, "0.1", float("nan"), float("inf")])
def test_invalid_latency_is_rejected_with_its_key(value: object) -> None:
    """Negative, non-numeric and non-finite values name the key."""
    with pytest.raises(ScenarioError) as info:
        PveScenario.from_dict(scenario_dict(request_latency_s=value))
    assert info.value.key == "request_latency_s"


def test_program_flag_overrides_the_scenario(tmp_path: Path) -> None:
    """``--request-latency`` applies over the scenario file: a request answered by the
    program cannot come back sooner than the latency (a lower bound, not a time limit)."""
    path = tmp_path / "scen.json"
    path.write_text(json.dumps(scenario_dict()), encoding="utf-8")
    proc = _spawn("pve", "--scenario", str(path), "--request-latency", "0.25")
    try:
        ready = _ready_line(proc)
        token = scenario_dict()["tokens"][0]["id"]
        session = pinned_session(ready["fingerprint"], f"PVEAPIToken={token}={SECRET}")
        session.get(ready["url"] + "/api2/json/version", timeout=TIMEOUT)  # connect first
        t0 = time.monotonic()
        r = session.get(ready["url"] + "/api2/json/version", timeout=TIMEOUT)
        elapsed = time.monotonic() - t0
        session.close()
        assert r.status_code == 200 and elapsed >= 0.25
    finally:
        code, _ = _stop(proc)
    assert code == 0


@pytest.mark.parametrize("value", ["-1", "nan", "soon"])
def test_program_rejects_a_bad_latency_flag(value: str) -> None:
    """A bad ``--request-latency`` exits 2 naming the option."""
    proc = _spawn("pve", "--request-latency", value)
    out, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 2 and out == "" and "--request-latency" in err
