"""HubClient against the real hub simulator over loopback HTTP(S): TLS, errors, no token leak."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import requests

from felhom_agent.errors import ConfigError
from felhom_agent.hub.client import HubClient
from felhom_agent.hub.errors import (
    HubAuthError,
    HubError,
    HubProtocolError,
    HubRequestError,
    HubServerError,
    HubTimeoutError,
    HubTransportError,
)
from felhom_agent.secret import Secret
from felhom_agent.sim.hub import HubFault, HubScenario, HubSimulator
from tests.hub.conftest import HOST_ID, TOKEN, make_client, sample_report

OTHER_PIN = ":".join(["AB"] * 32)


def _fail(client: HubClient) -> HubError:
    with pytest.raises(HubError) as info:
        client.report(sample_report())
    err = info.value
    assert not isinstance(err, requests.RequestException)
    assert TOKEN not in str(err)
    return err


def test_round_trip_records_report_and_returns_envelope(hub: HubSimulator) -> None:
    """A report is POSTed with the bearer token and the decoded envelope comes back."""
    with make_client(hub) as client:
        answer = client.report(sample_report())
    assert answer == {"schema": 1, "desired": {"generation": 3, "guests": {}},
                      "signed_ops": [], "poll_interval_s": 7}
    (recorded,) = hub.reports()
    assert recorded.host_id == HOST_ID
    assert recorded.body == json.loads(sample_report().to_json())


def test_pinned_https_round_trip(tls_hub: HubSimulator) -> None:
    """A pinned client talks to a self-signed HTTPS hub."""
    with make_client(tls_hub) as client:
        assert client.report(sample_report())["schema"] == 1
    assert len(tls_hub.reports()) == 1


def test_pin_ignores_requests_ca_bundle(
    tls_hub: HubSimulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """REQUESTS_CA_BUNDLE/CURL_CA_BUNDLE in the environment do not break a pinned client."""
    other = HubSimulator(HubScenario.from_dict({"tls": True}))  # built, never started
    assert other.certificate is not None
    unrelated = tmp_path / "unrelated-ca.pem"
    unrelated.write_bytes(other.certificate.cert_pem)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(unrelated))
    monkeypatch.setenv("CURL_CA_BUNDLE", str(unrelated))
    with make_client(tls_hub) as client:
        assert client.report(sample_report())["schema"] == 1


def test_wrong_pin_sends_nothing(tls_hub: HubSimulator) -> None:
    """A fingerprint mismatch fails before any request (and token) reaches the hub."""
    client = HubClient(url=tls_hub.url, host_id=HOST_ID, token=Secret(TOKEN),
                       tls_fingerprint=OTHER_PIN, timeout_s=5)
    err = _fail(client)
    assert isinstance(err, HubTransportError)
    assert "hub.tls_fingerprint" in str(err) and "nothing was sent" in str(err)
    assert tls_hub.reports() == () and tls_hub.unauthorized_count() == 0


def test_ca_file_verifies_hub(tls_hub: HubSimulator, tmp_path: Path) -> None:
    """With ca_file the hub's certificate is verified against that CA, hostname included."""
    assert tls_hub.certificate is not None
    ca = tmp_path / "hub-ca.pem"
    ca.write_bytes(tls_hub.certificate.cert_pem)
    with HubClient(url=tls_hub.url, host_id=HOST_ID, token=Secret(TOKEN), ca_file=ca) as client:
        assert client.report(sample_report())["schema"] == 1


def test_system_cas_reject_self_signed_hub(tls_hub: HubSimulator) -> None:
    """Without pin or ca_file the system CAs apply, so a self-signed hub is refused."""
    client = HubClient(url=tls_hub.url, host_id=HOST_ID, token=Secret(TOKEN), timeout_s=5)
    err = _fail(client)
    assert isinstance(err, HubTransportError)
    assert "TLS" in str(err)
    assert tls_hub.reports() == ()


@pytest.mark.parametrize(
    "url",
    ["http://hub.example", "http://10.0.0.1:8080", "http://localhost:8080",
     "ftp://127.0.0.1", "127.0.0.1:80", "https://user:pw@hub.example", "https://hub/?x=1"],
)
def test_insecure_or_malformed_urls_are_refused(url: str) -> None:
    """Plain http is only for loopback IPs; other schemes, credentials and queries are refused."""
    with pytest.raises(ConfigError) as info:
        HubClient(url=url, host_id=HOST_ID, token=Secret(TOKEN))
    assert info.value.key == "hub.url"
    assert TOKEN not in str(info.value)


@pytest.mark.parametrize("url", ["http://127.0.0.1:1", "http://127.8.9.10", "http://[::1]:9",
                                 "https://hub.example/base/"])
def test_loopback_http_and_https_are_accepted(url: str) -> None:
    """http to a loopback IP literal and any https URL construct fine."""
    client = HubClient(url=url, host_id=HOST_ID, token=Secret(TOKEN))
    assert client.report_path.endswith(f"/v1/hosts/{HOST_ID}/report")
    client.close()


def test_conflicting_trust_settings_are_refused(tmp_path: Path) -> None:
    """Pin and ca_file together, a pin on http, a short pin and an empty token are refused."""
    ca = tmp_path / "ca.pem"
    with pytest.raises(ConfigError, match="at most one"):
        HubClient(url="https://hub", host_id="h", token=Secret("t"),
                  tls_fingerprint=OTHER_PIN, ca_file=ca)
    with pytest.raises(ConfigError, match="plain http"):
        HubClient(url="http://127.0.0.1", host_id="h", token=Secret("t"),
                  tls_fingerprint=OTHER_PIN)
    with pytest.raises(ConfigError, match="SHA-256") as info:
        HubClient(url="https://hub", host_id="h", token=Secret("t"), tls_fingerprint="AB:CD")
    assert info.value.key == "hub.tls_fingerprint"
    with pytest.raises(ConfigError) as info:
        HubClient(url="https://hub", host_id="h", token=Secret(""))
    assert info.value.key == "hub.token"
    with pytest.raises(ConfigError):
        HubClient(url="https://hub", host_id="a/b", token=Secret("t"))


def test_repr_hides_token(hub: HubSimulator) -> None:
    """The client's repr names the hub but never the token."""
    client = make_client(hub)
    assert TOKEN not in repr(client) and hub.url in repr(client)
    assert TOKEN not in repr(vars(client))


def test_wrong_token_is_auth_error(hub: HubSimulator) -> None:
    """A wrong token gets 401 -> HubAuthError (also a PermissionError), token not in text."""
    err = _fail(make_client(hub, token="not-the-token-Q2"))
    assert isinstance(err, HubAuthError) and isinstance(err, PermissionError)
    assert err.status == 401
    assert "not-the-token-Q2" not in str(err)
    assert hub.unauthorized_count() == 1 and hub.reports() == ()


def test_403_is_auth_error(hub: HubSimulator) -> None:
    """403 is an auth error too."""
    hub.inject(HubFault(kind="http_error", status=403, count=1))
    err = _fail(make_client(hub))
    assert isinstance(err, HubAuthError) and err.status == 403


@pytest.mark.parametrize("status", [500, 502, 503])
def test_5xx_is_server_error(hub: HubSimulator, status: int) -> None:
    """A 5xx answer is a HubServerError carrying status and path."""
    hub.inject(HubFault(kind="http_error", status=status, count=1))
    err = _fail(make_client(hub))
    assert isinstance(err, HubServerError)
    assert err.status == status and err.path == f"/v1/hosts/{HOST_ID}/report"


def test_other_4xx_is_request_error() -> None:
    """An unknown host (404) is a HubRequestError, not a server or auth error."""
    scenario = HubScenario.from_dict({"token": TOKEN, "host_ids": ["other"]})
    with HubSimulator(scenario) as sim:
        err = _fail(make_client(sim))
    assert isinstance(err, HubRequestError) and err.status == 404


def test_garbage_json_is_protocol_error(hub: HubSimulator) -> None:
    """A 200 with a body that is not JSON is a HubProtocolError."""
    hub.inject(HubFault(kind="garbage", count=1))
    err = _fail(make_client(hub))
    assert isinstance(err, HubProtocolError) and "not JSON" in str(err)


def test_json_that_is_not_an_object_is_protocol_error(hub: HubSimulator) -> None:
    """A 200 with a JSON list is a HubProtocolError too."""
    hub.inject(HubFault(kind="garbage", body="[1, 2]", count=1))
    err = _fail(make_client(hub))
    assert isinstance(err, HubProtocolError) and "not an object" in str(err)


def test_oversized_answer_is_protocol_error(hub: HubSimulator) -> None:
    """An answer larger than max_response_bytes is refused, not read into memory."""
    client = HubClient(url=hub.url, host_id=HOST_ID, token=Secret(TOKEN), max_response_bytes=20)
    err = _fail(client)
    assert isinstance(err, HubProtocolError) and "exceeds 20 bytes" in str(err)


def test_dropped_connection_is_transport_error(hub: HubSimulator) -> None:
    """A connection closed without an answer is a HubTransportError (a ConnectionError)."""
    hub.inject(HubFault(kind="drop", count=1))
    err = _fail(make_client(hub))
    assert isinstance(err, HubTransportError) and isinstance(err, ConnectionError)


def test_hub_down_is_transport_error(hub: HubSimulator) -> None:
    """Connection refused (hub down) is a HubTransportError; the hub back up works again."""
    client = make_client(hub)
    hub.go_down()
    err = _fail(client)
    assert isinstance(err, HubTransportError) and not isinstance(err, HubTimeoutError)
    hub.come_up()
    assert client.report(sample_report())["schema"] == 1


def test_slow_hub_past_timeout_is_timeout_error(hub: HubSimulator) -> None:
    """No answer within timeout_s is a HubTimeoutError (also a TimeoutError)."""
    hub.inject(HubFault(kind="slow", delay_s=60, count=1))
    err = _fail(make_client(hub, timeout_s=0.3))
    assert isinstance(err, HubTimeoutError) and isinstance(err, TimeoutError)


def test_errors_pickle_with_context() -> None:
    """Hub errors survive pickling with path and status (they cross worker boundaries)."""
    err = HubServerError("boom", path="/v1/x", status=503)
    copy = pickle.loads(pickle.dumps(err))  # noqa: S301 - our own bytes, round trip
    assert type(copy) is HubServerError
    assert (str(copy), copy.path, copy.status) == ("boom", "/v1/x", 503)
