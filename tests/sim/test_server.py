"""The HTTP layer: worker-pool limits, malformed requests, envelopes, scale and speed."""

from __future__ import annotations

import socket
import ssl
import threading

from felhom_agent.sim.pve import Fault, PveSimulator
from tests.sim.helpers import TIMEOUT, Api, make_scenario


def test_concurrent_requests_beyond_workers_queue(api: Api) -> None:
    """With 3 workers (pveproxy's default), a 5th concurrent request waits for a slot."""
    sim = api.sim
    sim.inject(Fault("latency", path="/nodes/pve1/status", delay_s=60))
    codes: list[int] = []
    lock = threading.Lock()

    def call() -> None:
        code = Api(sim).get("/nodes/pve1/status").status_code
        with lock:
            codes.append(code)

    threads = [threading.Thread(target=call) for _ in range(5)]
    for t in threads:
        t.start()
    assert sim.wait_requests(in_flight=3, queued=2, timeout=TIMEOUT)
    assert sim.peak_in_flight == 3
    sim.clear_faults()
    for t in threads:
        t.join(timeout=TIMEOUT)
    assert codes == [200] * 5 and sim.peak_in_flight == 3


def test_envelope_and_content_type(api: Api) -> None:
    """Success is {"data": ...} as application/json;charset=UTF-8."""
    r = api.get("/version")
    assert r.headers["Content-Type"] == "application/json;charset=UTF-8"
    assert set(r.json()) == {"data"} and r.json()["data"]["release"] == "9.2"


def test_unknown_path_and_method_are_501(api: Api) -> None:
    """Unknown paths/methods answer 501 "Method 'X /p' not implemented" as plain text."""
    r = api.get("/nodes/pve1/nonsense")
    assert (r.status_code, r.reason) == (501, "Method 'GET /nodes/pve1/nonsense' not implemented")
    assert r.text == "Method 'GET /nodes/pve1/nonsense' not implemented"
    assert "Content-Type" not in r.headers
    r = api.request("PATCH", "/version")
    assert (r.status_code, r.reason) == (501, "Method 'PATCH /version' not implemented")
    r = api.session.get(f"{api.sim.url}/api2/xml/version", timeout=TIMEOUT)
    assert (r.status_code, r.reason) == (501, "no such uri")


def test_unknown_and_invalid_parameters_are_400_with_errors(api: Api) -> None:
    """Unknown names, bad integers and bounds produce per-parameter 400 errors."""
    r = api.post("/nodes/pve1/qemu/101/status/start", data={"bogus": "1", "timeout": "x"})
    assert (r.status_code, r.reason) == (400, "Parameter verification failed.")
    assert r.json() == {"data": None, "message": "Parameter verification failed.\n", "errors": {
        "bogus": "property is not defined in schema and the schema does not allow additional "
                 "properties",
        "timeout": "type check ('integer') failed - got 'x'"}}
    r = api.get("/nodes/pve1/qemu/99/status/current")
    assert r.json()["errors"] == {"vmid": "value must have a minimum value of 100"}
    r = api.post("/nodes/pve1/qemu/101/snapshot")
    assert r.json()["errors"] == {"snapname": "property is missing and it is not optional"}
    r = api.post("/nodes/pve1/qemu/101/status/start", data={"skiplock": "1"})
    assert r.json()["errors"] == {"skiplock": "Only root may use this option."}


def test_malformed_bodies_are_answered_not_crashed(api: Api) -> None:
    """Bad JSON, a non-object JSON body, a bad form body and a body on GET all get PVE-style
    answers, and the server keeps serving."""
    hdr = {"Content-Type": "application/json"}
    r = api.put("/nodes/pve1/lxc/100/config", data=b"{not json", headers=hdr)
    assert r.status_code == 400 and "body" in r.json()["errors"]
    r = api.put("/nodes/pve1/lxc/100/config", data=b"[1,2]", headers=hdr)
    assert r.status_code == 400
    r = api.put("/nodes/pve1/lxc/100/config", data=b"a=1&&=%zz&\xff",
                headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 400 and "body" in r.json()["errors"]
    r = api.request("GET", "/version", data=b"x=1")
    assert (r.status_code, r.reason) == (501, "Unexpected content for method 'GET'")
    assert api.get("/version").status_code == 200


def test_query_parameters_override_body(api: Api) -> None:
    """Query-string parameters override body parameters (extract_params)."""
    api.data("PUT", "/nodes/pve1/lxc/102/config", data={"description": "body"},
             params={"description": "query"})
    assert api.data("GET", "/nodes/pve1/lxc/102/config")["description"] == "query\n"


def test_path_parameter_conflict_is_400(api: Api) -> None:
    """A vmid in the body that conflicts with the path is rejected."""
    r = api.post("/nodes/pve1/qemu/101/status/start", data={"vmid": "102"})
    assert r.status_code == 400 and "vmid" in r.json()["errors"]


def test_garbage_on_the_socket_does_not_hang_a_worker(sim: PveSimulator) -> None:
    """A non-HTTP request line gets an error response and the server stays healthy."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", sim.port), timeout=TIMEOUT) as raw, \
            ctx.wrap_socket(raw) as tls:
        tls.sendall(b"\x00\x01garbage\r\n\r\n")
        assert tls.recv(100).startswith(b"HTTP/1.")
    with socket.create_connection(("127.0.0.1", sim.port), timeout=TIMEOUT) as raw:
        raw.sendall(b"GET / HTTP/1.1\r\n\r\n")  # plain HTTP on the TLS port
    assert Api(sim).get("/version").status_code == 200


def test_two_hundred_guests_start_and_list() -> None:
    """A 200-guest scenario starts and lists all guests (its start-up time is measured by
    ``scripts/bench-sim``, not here)."""
    guests = [{"vmid": 1000 + i, "type": "qemu" if i % 2 else "lxc", "name": f"g{i}",
               "status": "running" if i % 3 else "stopped"} for i in range(200)]
    with PveSimulator(make_scenario(guests=guests)) as sim:
        api = Api(sim)
        resources = api.data("GET", "/cluster/resources", params={"type": "vm"})
        assert sorted(r["vmid"] for r in resources) == list(range(1000, 1200))
        assert len(api.data("GET", "/nodes/pve1/lxc")) == 100


def test_other_node_in_path_fails_hostname_lookup(api: Api) -> None:
    """A path naming a node the simulator is not answers PVE's proxy failure (500)."""
    r = api.get("/nodes/pve9/qemu/101/status/current")
    assert r.status_code == 500 and r.reason.startswith("hostname lookup 'pve9' failed")


def test_requests_are_counted_per_endpoint_template(api: Api) -> None:
    """``requests_by_route`` counts matched endpoints under their schema template (every
    storage's content listing is one key); unknown paths and failed logins are not counted."""
    for storage in ("local", "pbs1", "local"):
        api.data("GET", f"/nodes/pve1/storage/{storage}/content", params={"content": "backup"})
    api.data("GET", "/version")
    assert api.get("/nodes/pve1/nosuch").status_code == 501
    assert Api(api.sim, auth="PVEAPIToken=felhom@pve!agent=wrong").get("/version"
                                                                       ).status_code == 401
    assert api.sim.requests_by_route() == {
        "GET /nodes/{node}/storage/{storage}/content": 3, "GET /version": 1}
