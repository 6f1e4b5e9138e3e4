"""Pinning data, authentication (401) and privilege (403) behaviour of the PVE simulator."""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading

import pytest
import requests

from felhom_agent.fingerprint import Sha256Fingerprint
from felhom_agent.sim.pve import PveSimulator
from tests.sim.helpers import TIMEOUT, Api, make_scenario, pinned_session


def _served_der(sim: PveSimulator) -> bytes:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", sim.port), timeout=TIMEOUT) as raw, \
            ctx.wrap_socket(raw) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return der


def test_fingerprint_matches_served_certificate(sim: PveSimulator) -> None:
    """The advertised fingerprint is the SHA-256 of the served DER leaf, in PVE's format."""
    assert Sha256Fingerprint.of_der(_served_der(sim)).colon == sim.fingerprint
    parts = sim.fingerprint.split(":")
    assert len(parts) == 32 and all(len(p) == 2 and p == p.upper() for p in parts)


def test_nodes_listing_reports_the_same_fingerprint(api: Api) -> None:
    """GET /nodes carries ssl_fingerprint equal to the pin, like PVE's node index."""
    nodes = api.data("GET", "/nodes")
    assert nodes[0]["ssl_fingerprint"] == api.sim.fingerprint


def test_wrong_pin_fails_before_any_request_is_parsed(sim: PveSimulator) -> None:
    """A client with a wrong pin aborts after the handshake; the server never sees a request."""
    wrong = ":".join(["00"] * 32)
    session = pinned_session(wrong, sim.auth_header)
    with pytest.raises(requests.exceptions.SSLError):
        session.get(f"{sim.url}/api2/json/version", timeout=TIMEOUT)
    assert sim.requests_seen == 0
    Api(sim).data("GET", "/version")
    assert sim.requests_seen == 1


def test_each_simulator_start_has_a_fresh_certificate() -> None:
    """Two simulators never share a key pair, so a stale pin cannot pass by accident."""
    with PveSimulator(make_scenario()) as a, PveSimulator(make_scenario()) as b:
        assert a.fingerprint != b.fingerprint


def test_bad_token_secret_is_401_authentication_failed(sim: PveSimulator) -> None:
    """A wrong secret answers 401 'Authentication failed!' with an empty body, no type."""
    r = Api(sim, auth=f"PVEAPIToken={sim.token_id}=wrong").get("/version")
    assert (r.status_code, r.reason, r.content) == (401, "Authentication failed!", b"")
    assert "Content-Type" not in r.headers


def test_unknown_token_and_malformed_header_are_401(sim: PveSimulator) -> None:
    """Unknown token ids and unparseable token values are 'Authentication failed!'."""
    for header in ("PVEAPIToken=nobody@pve!agent=x", "PVEAPIToken=garbage",
                   f"PVEAPIToken {sim.token_id}=wrong"):
        r = Api(sim, auth=header).get("/version")
        assert (r.status_code, r.reason) == (401, "Authentication failed!"), header


def test_token_header_with_space_separator_is_accepted(sim: PveSimulator) -> None:
    """pveproxy accepts 'PVEAPIToken ' (space) as well as 'PVEAPIToken='."""
    r = Api(sim, auth=f"PVEAPIToken {sim.token_id}={sim.token_secret}").get("/version")
    assert r.status_code == 200


def test_missing_credentials_is_401_no_ticket(sim: PveSimulator) -> None:
    """No Authorization header answers 401 'No ticket'."""
    r = Api(sim, auth="").get("/version")
    assert (r.status_code, r.reason, r.content) == (401, "No ticket", b"")


def test_auth_failure_is_delayed_by_the_scenario_delay() -> None:
    """A failed login is held for auth_failure_delay_s (PVE: 3 s) before the 401 is sent."""
    with PveSimulator(make_scenario(auth_failure_delay_s=30)) as sim:
        done = threading.Event()

        def attempt() -> None:
            with contextlib.suppress(requests.RequestException):
                Api(sim, auth="PVEAPIToken=x@pve!nope=bad").get("/version")
            done.set()

        t = threading.Thread(target=attempt)
        t.start()
        assert sim.wait_requests(seen=1, timeout=TIMEOUT)
        # The request was parsed but its 401 is still being held back.
        assert not done.wait(timeout=0.3)
    # stop() interrupts the delay, so the thread ends promptly.
    t.join(timeout=TIMEOUT)
    assert done.is_set()


def test_missing_privilege_is_403_naming_path_and_privilege(sim: PveSimulator) -> None:
    """An auditor token gets 403 'Permission check failed (/vms/101, VM.PowerMgmt)'."""
    r = Api(sim, auth="PVEAPIToken=auditor@pve!ro=ro-secret-1").post(
        "/nodes/pve1/qemu/101/status/start")
    assert r.status_code == 403
    assert r.reason == "Permission check failed (/vms/101, VM.PowerMgmt)"
    assert r.json() == {"data": None,
                        "message": "Permission check failed (/vms/101, VM.PowerMgmt)\n"}


def test_privsep_token_gets_the_intersection_of_user_and_token_acls(sim: PveSimulator) -> None:
    """A privsep token whose own ACL lacks VM.PowerMgmt on /vms/101 is refused there even
    though its user has it, and allowed on /vms/100 where both grant it."""
    split = Api(sim, auth="PVEAPIToken=ops@pve!split=split-secret-1")
    r = split.post("/nodes/pve1/qemu/101/status/start")
    assert r.status_code == 403 and "VM.PowerMgmt" in r.reason
    assert split.post("/nodes/pve1/lxc/100/status/stop").status_code == 200
    perms = split.data("GET", "/access/permissions", params={"path": "/vms/101"})
    assert perms == {"/vms/101": {"VM.Audit": 1}}


def test_non_privsep_token_has_exactly_the_user_privileges(sim: PveSimulator) -> None:
    """With privsep 0 the token's rights are the user's (no token ACL needed)."""
    full = Api(sim, auth="PVEAPIToken=ops@pve!full=full-secret-1")
    assert full.post("/nodes/pve1/qemu/101/status/start").status_code == 200
    r = full.put("/nodes/pve1/qemu/101/config", data={"memory": "2048"})
    assert r.status_code == 403
    assert r.reason.startswith("Permission check failed (/vms/101, VM.Config.Disk|")


def test_permission_is_checked_before_existence(sim: PveSimulator) -> None:
    """Without VM.Audit a missing guest is 403; with it, PVE's 500 'does not exist'."""
    r = Api(sim, auth="PVEAPIToken=ops@pve!split=split-secret-1").get(
        "/nodes/pve1/qemu/100/config")
    assert r.status_code == 500 and "qemu-server/100.conf' does not exist" in r.reason
    r = Api(sim, auth="PVEAPIToken=ops@pve!split=split-secret-1").post(
        "/nodes/pve1/qemu/999/status/start")
    assert r.status_code == 403


def test_lists_hide_guests_without_vm_audit(sim: PveSimulator) -> None:
    """Lists silently drop guests the caller cannot audit (the no-access token sees none)."""
    split = Api(sim, auth="PVEAPIToken=ops@pve!split=split-secret-1")
    assert [g["vmid"] for g in split.data("GET", "/nodes/pve1/lxc")] == [100, 102]
    resources = Api(sim).data("GET", "/cluster/resources", params={"type": "vm"})
    assert sorted(r["vmid"] for r in resources) == [100, 101, 102]
