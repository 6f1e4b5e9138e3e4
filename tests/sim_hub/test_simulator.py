"""The hub simulator over real loopback HTTP(S), driven with plain requests."""

from __future__ import annotations

import hashlib
import json
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from felhom_agent.sim.hub import HubFault, HubScenario, HubSimulator

TOKEN = "sim-token-4f8a1c"
PATH = "/v1/hosts/pve1/report"


@pytest.fixture
def hub() -> Iterator[HubSimulator]:
    """A plain-HTTP simulator with a fixed token and a desired state."""
    scenario = HubScenario.from_dict(
        {"token": TOKEN, "poll_interval_s": 5, "desired": {"generation": 1, "guests": {}}}
    )
    with HubSimulator(scenario) as sim:
        yield sim


def _post(hub: HubSimulator, body: Any, *, token: str | None = TOKEN,
          path: str = PATH, timeout: float = 5.0) -> requests.Response:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    with requests.Session() as session:
        session.trust_env = False
        return session.post(hub.url + path, data=json.dumps(body), headers=headers,
                            timeout=timeout)


def test_report_recorded_and_envelope_served(hub: HubSimulator) -> None:
    """An authorised report is recorded and answered with the envelope."""
    resp = _post(hub, {"schema": 1, "host_id": "pve1"})
    assert resp.status_code == 200
    assert resp.json() == {"schema": 1, "desired": {"generation": 1, "guests": {}},
                           "signed_ops": [], "poll_interval_s": 5}
    (recorded,) = hub.reports()
    assert recorded.host_id == "pve1" and recorded.body == {"schema": 1, "host_id": "pve1"}
    assert recorded.answered_with == "envelope"


@pytest.mark.parametrize("token", [None, "wrong", TOKEN + "x", ""])
def test_missing_or_wrong_token_is_401(hub: HubSimulator, token: str | None) -> None:
    """No bearer token or a wrong one gets 401 with WWW-Authenticate, and nothing is recorded."""
    resp = _post(hub, {"schema": 1}, token=token)
    assert resp.status_code == 401
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert hub.reports() == () and hub.unauthorized_count() == 1


def test_wrong_path_method_and_body(hub: HubSimulator) -> None:
    """Unknown paths are 404, GET is 405, a non-object body is 400."""
    assert _post(hub, {}, path="/v1/hosts/pve1/other").status_code == 404
    with requests.Session() as session:
        session.trust_env = False
        assert session.get(hub.url + PATH, timeout=5).status_code == 405
    assert _post(hub, [1, 2]).status_code == 400
    assert hub.reports() == ()


def test_host_ids_restrict_reports() -> None:
    """With host_ids set, reports for other hosts get 404."""
    with HubSimulator(HubScenario.from_dict({"token": TOKEN, "host_ids": ["pve2"]})) as sim:
        assert _post(sim, {}).status_code == 404
        assert _post(sim, {}, path="/v1/hosts/pve2/report").status_code == 200


def test_desired_state_settable_at_run_time(hub: HubSimulator) -> None:
    """set_desired changes what the next envelope carries (None gives null)."""
    hub.set_desired({"generation": 2, "guests": {"101": {"state": "running"}}})
    assert _post(hub, {}).json()["desired"]["generation"] == 2
    hub.set_desired(None)
    assert _post(hub, {}).json()["desired"] is None


def test_signed_ops_redelivered_until_outcome(hub: HubSimulator) -> None:
    """An op is re-sent on every poll until a report shows a non-running state for its op_id."""
    payload = '{"v": 1, "op_id": "op-7",   "kind": "guest.stop"}'
    hub.add_signed_op(payload, "SIG")
    hub.add_signed_op("not json at all", "SIG2")
    first = _post(hub, {"ops": []}).json()["signed_ops"]
    assert first == [{"payload": payload, "signature": "SIG"},
                     {"payload": "not json at all", "signature": "SIG2"}]
    running = _post(hub, {"ops": [{"op_id": "op-7", "state": "running"}]}).json()
    assert len(running["signed_ops"]) == 2
    done = _post(hub, {"ops": [{"op_id": "op-7", "state": "failed", "reason": "x"}]}).json()
    assert done["signed_ops"] == [{"payload": "not json at all", "signature": "SIG2"}]
    hub.clear_signed_ops()
    assert _post(hub, {}).json()["signed_ops"] == []


def test_scenario_ops_are_served() -> None:
    """Signed ops from the scenario are delivered verbatim from the first poll."""
    scenario = HubScenario.from_dict(
        {"token": TOKEN, "signed_ops": [{"payload": '{"op_id":"a"}', "signature": "s"}]}
    )
    with HubSimulator(scenario) as sim:
        assert _post(sim, {}).json()["signed_ops"] == [{"payload": '{"op_id":"a"}',
                                                        "signature": "s"}]


def test_fault_counts_and_order(hub: HubSimulator) -> None:
    """Faults fire in order, each `count` times, then the hub answers normally."""
    hub.inject(HubFault(kind="http_error", status=503, count=2))
    hub.inject(HubFault(kind="garbage", count=1))
    hub.inject(HubFault(kind="wrong_types", count=1))
    statuses = [_post(hub, {}) for _ in range(5)]
    assert [r.status_code for r in statuses] == [503, 503, 200, 200, 200]
    assert statuses[2].content == b"<html>this is not JSON{"
    assert statuses[3].json()["poll_interval_s"] == "soon"
    assert statuses[4].json()["schema"] == 1
    assert [r.answered_with for r in hub.reports()] == ["garbage", "wrong_types", "envelope"]
    assert hub.faults.armed() == ()
    assert hub.faults.fired() == 4  # two 503s, the garbage and the wrong types


def test_fault_without_count_fires_until_cleared(hub: HubSimulator) -> None:
    """A fault without count keeps firing until the book is cleared."""
    hub.inject(HubFault(kind="http_error", status=500))
    assert [_post(hub, {}).status_code for _ in range(3)] == [500, 500, 500]
    hub.faults.clear()
    assert _post(hub, {}).status_code == 200
    assert hub.faults.fired() == 3


def test_drop_closes_without_answer(hub: HubSimulator) -> None:
    """A drop fault closes the connection without any HTTP answer."""
    hub.inject(HubFault(kind="drop", count=1))
    with pytest.raises(requests.ConnectionError):
        _post(hub, {})
    assert _post(hub, {}).status_code == 200


def test_slow_fault_is_released_by_close() -> None:
    """A held (slow) request is woken when the simulator closes, not after delay_s."""
    sim = HubSimulator(HubScenario.from_dict({"token": TOKEN}))
    sim.start()
    sim.inject(HubFault(kind="slow", delay_s=3600, count=1))
    with pytest.raises(requests.Timeout):
        _post(sim, {}, timeout=0.2)
    done = threading.Event()

    def close() -> None:
        sim.close()
        done.set()

    threading.Thread(target=close).start()
    assert done.wait(timeout=10)


def test_go_down_refuses_connections_and_come_up_reuses_port(hub: HubSimulator) -> None:
    """Down means connection refused; up again listens on the same port."""
    port = hub.port
    hub.go_down()
    assert not hub.is_up()
    with pytest.raises(ConnectionRefusedError), socket.create_connection(
        ("127.0.0.1", port), timeout=5
    ):
        pass
    hub.come_up()
    assert hub.is_up() and hub.port == port
    assert _post(hub, {}).status_code == 200


def test_wait_for_reports_blocks_until_n_or_times_out(hub: HubSimulator) -> None:
    """wait_for_reports returns once n reports exist and raises TimeoutError otherwise."""
    with pytest.raises(TimeoutError, match="0 of 1"):
        hub.wait_for_reports(1, timeout=0.05)
    poster = threading.Thread(target=lambda: [_post(hub, {"n": i}) for i in range(3)])
    poster.start()
    reports = hub.wait_for_reports(3, timeout=10)
    poster.join(timeout=10)
    assert [r.body["n"] for r in reports] == [0, 1, 2]


def test_tls_serves_a_certificate_with_the_announced_fingerprint(tmp_path: Path) -> None:
    """With tls the hub serves HTTPS and its fingerprint is the SHA-256 of the served leaf."""
    with HubSimulator(HubScenario.from_dict({"tls": True})) as sim:
        assert sim.url.startswith("https://127.0.0.1:")
        pem = ssl.get_server_certificate(("127.0.0.1", sim.port), timeout=5)
        digest = hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest().upper()
        assert sim.fingerprint == ":".join(digest[i:i + 2] for i in range(0, 64, 2))
        # a client that rejects the certificate does not break the server
        with pytest.raises(requests.exceptions.SSLError), requests.Session() as s:
            s.trust_env = False
            s.post(sim.url + PATH, timeout=5)
        assert sim.certificate is not None
        ca = tmp_path / "hub.pem"
        ca.write_bytes(sim.certificate.cert_pem)
        with requests.Session() as s:
            s.trust_env = False
            s.verify = str(ca)
            resp = s.post(sim.url + PATH, data="{}", timeout=5,
                          headers={"Authorization": f"Bearer {sim.token}"})
        assert resp.status_code == 200


def test_generated_token_when_scenario_has_none() -> None:
    """Without a scenario token one is generated (injectable factory) and accepted."""
    sim = HubSimulator(HubScenario.from_dict({}), token_factory=lambda: "made-up-token")
    with sim:
        assert sim.token_generated and sim.token == "made-up-token"
        assert _post(sim, {}, token="made-up-token").status_code == 200
