"""The pinned HTTPS transport against a real loopback TLS server.

See ``docs/architecture.md`` ("TLS pinning and HTTP").
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import certifi
import pytest
import requests
import urllib3

from felhom_agent.errors import ConfigError
from felhom_agent.proxmox import (
    AuthError,
    GuestType,
    ParameterError,
    PermissionDenied,
    PinMismatch,
    ProxmoxClient,
    ResponseTimeout,
    ServerError,
    TlsError,
    TransportError,
)
from tests.support.pve import LOOPBACK_TOKEN, client_for, loopback_client, no_sleep

from .loopback_tls import Answer, LoopbackPve

SECRET = "0b6c2f4e-6d3c-4a55-9a1e-5b0e3f2d1c00"
TOKEN = LOOPBACK_TOKEN


def _data(value: object) -> Answer:
    return Answer(body=json.dumps({"data": value}).encode())


@pytest.fixture
def server() -> Iterator[LoopbackPve]:
    with LoopbackPve() as srv:
        srv.routes["GET /api2/json/version"] = _data(
            {"version": "9.2.2", "release": "9.2", "repoid": "abc"}
        )
        yield srv


def _client(server: LoopbackPve, **kw: object) -> ProxmoxClient:
    return loopback_client(server, secret=SECRET, **kw)


def test_pinned_call_succeeds_and_sends_the_token_header(server: LoopbackPve) -> None:
    """A matching pin on a self-signed cert with a foreign CN works; the token header is sent."""
    with _client(server) as client:
        assert client.version().version == "9.2.2"
    assert [s.authorization for s in server.seen] == [f"PVEAPIToken={TOKEN}={SECRET}"]


def test_lowercase_pin_without_colons_is_accepted(server: LoopbackPve) -> None:
    """Fingerprints compare case-insensitively and colons are optional."""
    pin = server.fingerprint.replace(":", "").lower()
    with _client(server, tls_fingerprint=pin) as client:
        assert client.version().release == "9.2"


def test_wrong_pin_fails_before_any_request_is_sent(server: LoopbackPve) -> None:
    """A pin mismatch raises PinMismatch naming the served pin, and the server saw no request."""
    wrong = "AB:" * 31 + "CD"
    with _client(server, tls_fingerprint=wrong) as client, pytest.raises(PinMismatch) as info:
        client.version()
    assert server.seen == []
    assert info.value.served == server.fingerprint
    assert SECRET not in str(info.value)


def test_pin_survives_ca_bundle_environment(
    server: LoopbackPve, monkeypatch: pytest.MonkeyPatch
) -> None:
    """REQUESTS_CA_BUNDLE and CURL_CA_BUNDLE in the environment do not re-enable chain checks."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", certifi.where())
    monkeypatch.setenv("CURL_CA_BUNDLE", certifi.where())
    with _client(server) as client:
        assert client.version().version == "9.2.2"


def test_naive_session_is_broken_by_ca_bundle_environment(
    server: LoopbackPve, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Control for the test above: with trust_env left on, the env bundle breaks verify=False."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", certifi.where())
    session = requests.Session()
    session.verify = False
    with session, pytest.raises(requests.exceptions.SSLError):
        session.get(server.url + "/api2/json/version", timeout=5)


def test_ca_file_mode_verifies_chain_and_hostname(tmp_path: Path) -> None:
    """With ca_file the server is verified (an IP SAN passes, a foreign CA fails as TlsError)."""
    with LoopbackPve(san_ip=True) as srv:
        srv.routes["GET /api2/json/version"] = _data({"version": "9.2.2", "release": "9.2"})
        with _client(srv, tls_fingerprint=None, ca_file=srv.cert_path) as client:
            assert client.version().version == "9.2.2"
        other = tmp_path / "other.pem"
        other.write_text(Path(certifi.where()).read_text())
        with _client(srv, tls_fingerprint=None, ca_file=other) as client, pytest.raises(TlsError):
            client.version()
        assert len(srv.seen) == 1


def test_401_is_auth_error_without_the_secret(server: LoopbackPve) -> None:
    """An empty-bodied 401 raises AuthError, and no error text contains the secret."""
    server.routes["GET /api2/json/version"] = Answer(401, "Authentication failed!", b"", None)
    with _client(server) as client, pytest.raises(AuthError) as info:
        client.version()
    assert info.value.status == 401
    assert SECRET not in str(info.value) and SECRET not in repr(info.value)
    assert SECRET not in repr(client)


def test_403_names_privilege_and_privsep_hint(server: LoopbackPve) -> None:
    """A 403 reason phrase keeps the missing privilege and adds the privsep hint."""
    server.routes["POST /api2/json/nodes/pve/qemu/100/status/start"] = Answer(
        403, "Permission check failed (/vms/100, VM.PowerMgmt)", b'{"data":null}'
    )
    with _client(server) as client, pytest.raises(PermissionDenied) as info:
        client.start(100, GuestType.QEMU)
    assert info.value.privileges == ("VM.PowerMgmt",)
    assert "VM.PowerMgmt" in str(info.value) and "intersection" in str(info.value)


def test_400_field_errors(server: LoopbackPve) -> None:
    """A 400 exposes PVE's per-field errors."""
    body = b'{"data":null,"errors":{"onboot":"type check (\'boolean\') failed - got \'x\'"}}'
    server.routes["PUT /api2/json/nodes/pve/lxc/101/config"] = Answer(
        400, "Parameter verification failed.", body
    )
    with _client(server) as client, pytest.raises(ParameterError) as info:
        client.set_guest_config(101, GuestType.LXC, {"onboot": "x"})
    assert set(info.value.errors) == {"onboot"}


def test_5xx_is_server_error(server: LoopbackPve) -> None:
    """A 500/503 answer raises ServerError with PVE's text; GETs are not retried on 5xx."""
    server.routes["GET /api2/json/version"] = Answer(503, "Service Unavailable", b"")
    with _client(server) as client, pytest.raises(ServerError) as info:
        client.version()
    assert info.value.status == 503
    assert len(server.seen) == 1


def test_dropped_connection_on_get_is_retried(server: LoopbackPve) -> None:
    """A GET whose connection is dropped is retried and then succeeds."""
    answers = [Answer(action="drop"), _data({"version": "9.2.2", "release": "9.2"})]
    server.routes["GET /api2/json/version"] = lambda: answers.pop(0)
    with _client(server, sleep=lambda s: None) as client:
        assert client.version().version == "9.2.2"
    assert len(server.seen) == 2


def test_dropped_connection_on_post_is_not_retried(server: LoopbackPve) -> None:
    """A POST whose connection is dropped raises TransportError (outcome unknown), once."""
    server.routes["POST /api2/json/nodes/pve/qemu/100/status/start"] = Answer(action="drop")
    with _client(server, sleep=lambda s: None) as client, pytest.raises(TransportError):
        client.start(100, GuestType.QEMU)
    assert len(server.seen) == 1


def test_persistently_dropped_get_gives_transport_error(server: LoopbackPve) -> None:
    """A GET that keeps being dropped gives TransportError after a bounded number of tries."""
    server.routes["GET /api2/json/version"] = Answer(action="drop")
    with _client(server, sleep=lambda s: None) as client, pytest.raises(TransportError):
        client.version()
    assert len(server.seen) == 3


def test_slow_answer_times_out_without_retry(server: LoopbackPve) -> None:
    """An answer slower than timeout_s raises ResponseTimeout (a TimeoutError), not retried."""
    server.routes["GET /api2/json/version"] = Answer(action="stall")
    with _client(server, timeout_s=0.3) as client, pytest.raises(ResponseTimeout) as info:
        client.version()
    assert isinstance(info.value, TimeoutError)
    assert len(server.seen) == 1


def test_connection_refused_is_transport_error() -> None:
    """Nothing listening gives TransportError, not a requests exception."""
    with LoopbackPve() as srv:
        url, fp = srv.url, srv.fingerprint
    client = client_for(url, fp, "pve", TOKEN, SECRET, timeout_s=2, sleep=no_sleep)
    with client, pytest.raises(TransportError):
        client.version()


def test_form_encoding_and_delete_query(server: LoopbackPve) -> None:
    """Booleans go as 1/0 in a form body; DELETE parameters go in the query, not a body."""
    upid = "UPID:pve:00001234:00005678:6650A1B2:qmdelsnapshot:100:agent@pve!host:"
    server.routes["POST /api2/json/nodes/pve/qemu/100/snapshot/s1/rollback"] = _data(upid)
    server.routes["DELETE /api2/json/nodes/pve/qemu/100/snapshot/s1"] = _data(upid)
    with _client(server) as client:
        assert client.rollback_snapshot(100, GuestType.QEMU, "s1", start=True).upid is not None
        client.delete_snapshot(100, GuestType.QEMU, "s1", force=False)
    assert server.seen[0].body == b"start=1"
    assert server.seen[1].path.endswith("/snapshot/s1?force=0")
    assert server.seen[1].body == b""


@pytest.mark.parametrize(
    ("kw", "key"),
    [
        ({"api_url": "http://127.0.0.1:8006"}, "proxmox.api_url"),
        ({"tls_fingerprint": None}, "proxmox.tls_fingerprint"),
        ({"ca_file": Path("/etc/ssl/ca.pem")}, "proxmox.tls_fingerprint"),
        ({"tls_fingerprint": "AB:CD"}, "proxmox.tls_fingerprint"),
        ({"tls_fingerprint": "AB:" * 19 + "CD"}, "proxmox.tls_fingerprint"),  # SHA-1 length
        ({"token_id": "agent@pve"}, "proxmox.token_id"),
    ],
)
def test_insecure_or_malformed_settings_are_config_errors(
    server: LoopbackPve, kw: dict[str, object], key: str
) -> None:
    """No unverified mode, no MD5/SHA-1 pins, no malformed token ids: ConfigError names the key."""
    with pytest.raises(ConfigError) as info:
        _client(server, **kw)
    assert info.value.key == key


def test_no_insecure_request_warning(server: LoopbackPve, recwarn: pytest.WarningsRecorder) -> None:
    """A pinned connection counts as verified: urllib3 emits no InsecureRequestWarning."""
    with _client(server) as client:
        client.version()
    assert not [w for w in recwarn if issubclass(w.category, urllib3.exceptions.HTTPWarning)]


def test_read_checks_when_nothing_listens() -> None:
    """An unreachable API fails the first check and marks every later one skipped."""
    from felhom_agent.proxmox import read_checks

    with LoopbackPve() as srv:
        url, fp = srv.url, srv.fingerprint
    client = client_for(url, fp, "pve", TOKEN, SECRET, timeout_s=2, sleep=no_sleep)
    with client:
        checks = read_checks(client)
    assert checks[0].name == "api-reachable" and not checks[0].ok
    assert all(not c.ok and c.detail.startswith("skipped") for c in checks[1:])
    assert len(checks) == 7
