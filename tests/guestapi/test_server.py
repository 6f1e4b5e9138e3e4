"""The event loop over real unix sockets (the peer check trusted here; see test_containers).

Every test talks to the server through real sockets -- our own client, ``curl
--unix-socket``, a socketpair standing in for a VM's serial port -- and checks what came
back, what the audit got, and that other guests were not affected.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from felhom_agent.guestapi.api import Api
from felhom_agent.guestapi.policy import Limits
from felhom_agent.guestapi.server import GuestApiServer
from tests.guestapi.client import API_HEADER, Client, read_answer, request_bytes
from tests.guestapi.fakes import MemoryBackend, RecordingAudit, trusting_peer


class Harness:
    """A server with listeners for some guests in a temporary directory."""

    def __init__(self, tmp: Path, limits: Limits, vmids: tuple[int, ...] = (101, 102)) -> None:
        self.tmp = tmp
        self.backend = MemoryBackend()
        self.audit = RecordingAudit()
        self.server = GuestApiServer(Api(self.backend, limits), limits, audit=self.audit,
                                     peer_check=trusting_peer, pool_size=2)
        self.server.start()
        for vmid in vmids:
            self.listen(vmid)

    def listen(self, vmid: int) -> Path:
        self.backend.add(vmid)
        path = self.tmp / f"{vmid}.sock"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(str(path))
        sock.listen(8)
        self.server.attach_listener(vmid, sock)
        return path

    def path(self, vmid: int) -> Path:
        return self.tmp / f"{vmid}.sock"

    def client(self, vmid: int) -> Client:
        return Client(self.path(vmid))


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    h = Harness(tmp_path, Limits(timeout_s=0.3))
    yield h
    h.server.stop()


def test_identity_over_a_real_socket(harness: Harness) -> None:
    """A GET on guest 101's socket answers for 101; on 102's for 102; keep-alive works."""
    with harness.client(101) as c:
        first = c.ask("GET", "/1.0/identity")
        again = c.ask("GET", "/1.0")
    assert first.status == 200 and first.json()["vmid"] == 101
    assert first.headers["content-type"] == "application/json"
    assert again.status == 200 and again.json()["guest"] == {"vmid": 101, "type": "lxc"}
    with harness.client(102) as c:
        assert c.ask("GET", "/1.0/identity").json()["vmid"] == 102


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_unix_socket_works(harness: Harness) -> None:
    """The documented call: ``curl --unix-socket SOCK -H 'Felhom-Guest-API: 1' http://felhom/1.0``."""
    out = subprocess.run(
        ["curl", "-sS", "--max-time", "20", "--unix-socket", str(harness.path(101)),
         "-H", "Felhom-Guest-API: 1", "http://felhom/1.0/identity"],
        capture_output=True, text=True, check=True)
    assert json.loads(out.stdout)["vmid"] == 101
    out = subprocess.run(
        ["curl", "-sS", "--max-time", "20", "-o", "/dev/null", "-w", "%{http_code}",
         "--unix-socket", str(harness.path(101)), "-X", "POST",
         "-H", "Felhom-Guest-API: 1", "-H", "Content-Type: application/json",
         "--data", "x" * 2000, "http://felhom/1.0/backups"],
        capture_output=True, text=True, check=True)
    assert out.stdout == "400"  # Expect: 100-continue honoured, then the body refused


def test_the_rate_limit_answers_429_and_spares_other_guests(harness: Harness) -> None:
    """Burst 10 then 429 with Retry-After for 101; 102 keeps getting 200s."""
    with harness.client(101) as a, harness.client(102) as b:
        statuses = [a.ask("GET", "/1.0/identity").status for _ in range(30)]
        limited = a.ask("GET", "/1.0/identity")
        other = [b.ask("GET", "/1.0/identity").status for _ in range(10)]
    assert statuses[:10] == [200] * 10
    assert 429 in statuses[10:]
    assert limited.status == 429 and int(limited.headers["retry-after"]) >= 1
    assert other == [200] * 10
    records = harness.audit.wait_for(lambda r: any(x["vmid"] == 101 for x in r))
    assert all(r["source"] == "guest:101" and r["outcome"] == "refused"
               for r in records if r["vmid"] == 101)
    assert not [r for r in records if r["vmid"] == 102]


@pytest.mark.parametrize("header", ["Forwarded: for=10.0.0.7", "X-Forwarded-For: 10.0.0.7"])
def test_a_forwarded_request_is_refused_and_audited(harness: Harness, header: str) -> None:
    """A forwarding header: 403 and one audit record naming it, for guest 101 only."""
    with harness.client(101) as c:
        answer = c.ask("GET", "/1.0/identity", headers=API_HEADER + header + "\r\n")
    assert answer.status == 403 and "forwarding header" in answer.json()["error"]
    records = harness.audit.wait_for(lambda r: len(r) >= 1)
    assert records[0]["source"] == "guest:101" and records[0]["kind"] == "guestapi"
    assert "forwarding header" in records[0]["reason"]


def test_the_api_header_is_required(harness: Harness) -> None:
    """Without Felhom-Guest-API: 1 the answer is 403."""
    with harness.client(101) as c:
        assert c.ask("GET", "/1.0", headers="").status == 403


def test_an_oversized_body_is_refused_and_the_connection_closed(harness: Harness) -> None:
    """Content-Length over 4 KiB: 413 at once (the body is never read), then closed."""
    with harness.client(101) as c:
        c.send(b"POST /1.0/backups HTTP/1.1\r\n" + API_HEADER.encode()
               + b"Content-Length: 100000\r\n\r\n")
        answer = read_answer(c.sock)
        assert answer is not None and answer.status == 413
        assert c.closed_by_server()
    records = harness.audit.wait_for(lambda r: len(r) >= 1)
    assert [r["vmid"] for r in records] == [101] and "4096 bytes" in records[0]["reason"]


def test_a_body_naming_another_guest_is_refused_and_audited(harness: Harness) -> None:
    """POST /1.0/backups with {"vmid": 102}: 400, nothing asked of the backend, audited for
    101; guest 102 is not touched and is served."""
    with harness.client(101) as c:
        answer = c.ask("POST", "/1.0/backups", body=b'{"vmid": 102, "storage": "local"}')
    assert answer.status == 400 and "unknown field" in answer.json()["error"]
    assert harness.backend.calls == []
    records = harness.audit.wait_for(lambda r: len(r) >= 1)
    assert [r["vmid"] for r in records] == [101] and "vmid" in records[0]["reason"]
    with harness.client(102) as c:
        assert c.ask("GET", "/1.0/identity").json()["vmid"] == 102
    assert harness.backend.operations == {}


def test_slowloris_gets_408_and_others_are_served_meanwhile(harness: Harness) -> None:
    """A request trickling in is cut at the timeout (408, closed, audited); guest 102 is
    answered while 101's slow request is pending."""
    with harness.client(101) as slow, harness.client(102) as other:
        slow.send(b"GET /1.0/identity HTTP/1.1\r\nHost: felhom\r\n")
        assert other.ask("GET", "/1.0/identity").status == 200
        answer = read_answer(slow.sock)
        assert answer is not None and answer.status == 408
        assert slow.closed_by_server()
    records = harness.audit.wait_for(lambda r: any("not complete" in x["reason"] for x in r))
    assert [r["vmid"] for r in records if "not complete" in r["reason"]] == [101]


def test_an_idle_connection_is_closed_silently(harness: Harness) -> None:
    """A persistent connection with no request is closed after the timeout (no answer)."""
    with harness.client(101) as c:
        assert c.ask("GET", "/1.0").status == 200
        assert c.sock.recv(1) == b""
    assert harness.audit.records == []


def test_at_most_four_connections_per_guest(harness: Harness) -> None:
    """The fifth connection of one guest is answered 503 and closed; another guest's work."""
    clients = [harness.client(101) for _ in range(4)]
    try:
        for c in clients:  # all four accepted and served
            assert c.ask("GET", "/1.0").status == 200
        with harness.client(101) as fifth:
            answer = read_answer(fifth.sock)
            assert answer is not None and answer.status == 503
        with harness.client(102) as b:
            assert b.ask("GET", "/1.0").status == 200
    finally:
        for c in clients:
            c.close()


def test_one_guest_holds_at_most_one_pool_thread(tmp_path: Path) -> None:
    """While two of 101's slow requests are stuck, 102's pool request and 101's own inline
    identity request are answered; 101's second slow request waits for its first."""
    h = Harness(tmp_path, Limits(timeout_s=30))
    gate = threading.Event()
    h.backend.gate = gate
    try:
        a1, a2, a3 = h.client(101), h.client(101), h.client(101)
        a1.send(request_bytes("GET", "/1.0/backups"))
        assert h.backend.entered.acquire(timeout=30)
        a2.send(request_bytes("GET", "/1.0/backups"))
        assert a3.ask("GET", "/1.0/identity").status == 200  # inline, on the loop
        with h.client(102) as b:
            b.send(request_bytes("GET", "/1.0/backups"))
            assert h.backend.entered.acquire(timeout=30)  # 102 got the second pool thread
            assert h.backend.calls == [("list_backups", 101), ("list_backups", 102)]
            gate.set()
            answer = read_answer(b.sock)
            assert answer is not None and answer.status == 200
        for c in (a1, a2):
            answer = read_answer(c.sock)
            assert answer is not None and answer.status == 200
        assert h.backend.calls.count(("list_backups", 101)) == 2
        for c in (a1, a2, a3):
            c.close()
    finally:
        gate.set()
        h.server.stop()


def test_a_backup_request_is_accepted_and_audited(harness: Harness) -> None:
    """POST /1.0/backups: 202 with the operation id; one 'accepted' audit record."""
    with harness.client(101) as c:
        answer = c.ask("POST", "/1.0/backups", body=b"{}")
        assert answer.status == 202
        op = answer.json()["operation_id"]
        assert c.ask("GET", f"/1.0/operations/{op}").status == 200
    with harness.client(102) as c:
        assert c.ask("GET", f"/1.0/operations/{op}").status == 404
    records = harness.audit.wait_for(lambda r: any(x["outcome"] == "accepted" for x in r))
    accepted = [r for r in records if r["outcome"] == "accepted"]
    assert accepted == [{"op_id": op, "source": "guest:101", "kind": "guestapi", "vmid": 101,
                         "outcome": "accepted",
                         "reason": f"POST /1.0/backups: operation {op}"}]


def test_report_entries_count_requests_and_refusals(harness: Harness) -> None:
    """The report's per-guest entry: transport, listening, requests, refused."""
    with harness.client(101) as c:
        c.ask("GET", "/1.0")
        c.ask("GET", "/nothing")
    entries = {e.vmid: e.to_json() for e in harness.server.entries()}
    assert entries[101] == {"vmid": 101, "transport": "unix", "listening": True,
                            "requests": 2, "refused": 1, "last_error": None}
    assert entries[102]["requests"] == 0
    harness.server.detach(102)
    with harness.client(101) as c:  # one more loop turn
        c.ask("GET", "/1.0")
    assert {e.vmid: e.listening for e in harness.server.entries()} == {101: True, 102: False}


def test_serial_frames_are_served_for_the_vm(tmp_path: Path) -> None:
    """A VM's serial connection: JSON lines in, JSON lines out, noise answered and skipped."""
    h = Harness(tmp_path, Limits(timeout_s=0.3), vmids=())
    h.backend.add(201, "qemu")
    agent_end, vm_end = socket.socketpair()
    vm_end.settimeout(30)
    h.server.attach_serial(201, agent_end)
    try:
        vm_end.sendall(b"garbage\n" + json.dumps(
            {"id": 1, "method": "GET", "path": "/1.0/identity"}).encode() + b"\n"
            + json.dumps({"id": 2, "method": "GET", "path": "/1.0/backups"}).encode() + b"\n"
            + json.dumps({"id": 3, "method": "GET", "path": "/1.0/identity?vmid=101"}
                         ).encode() + b"\n")
        reader = vm_end.makefile("rb")
        lines = [json.loads(reader.readline()) for _ in range(4)]
        assert lines[0] == {"id": None, "status": 400, "body": {"error": "not a JSON line"}}
        assert lines[1]["id"] == 1 and lines[1]["body"]["vmid"] == 201
        assert lines[1]["body"]["type"] == "qemu"
        assert lines[2]["id"] == 2 and lines[2]["status"] == 200
        assert lines[3]["id"] == 3 and lines[3]["status"] == 400
        vm_end.sendall(b'{"id": 4, "method": "GET"')  # never completed
        assert json.loads(reader.readline())["status"] == 408
        entry = next(e for e in h.server.entries() if e.vmid == 201)
        assert entry.transport == "serial" and entry.listening
        vm_end.close()
    finally:
        h.server.stop()
