"""The hub client: one POST per poll, TLS done right, typed errors, the token kept secret.

``POST {url}/v1/hosts/{host_id}/report`` with ``Authorization: Bearer <token>`` and the
HostReport as JSON; the answer is the decoded JSON object (the loop parses the envelope).

Why each knob (``docs/architecture.md``, "Configuration" and "TLS pinning and HTTP"):

* **No bearer token in clear text.** ``http://`` is accepted only for a loopback IP literal
  (the simulators, the demo). The check is in the constructor, not only in the config
  validator, so a client built directly cannot be pointed at a remote plain-HTTP hub.
* **Three ways to trust the hub**, exactly one in effect: a pinned SHA-256 leaf fingerprint
  (urllib3 ``assert_fingerprint``; the pinned pool also needs ``cert_reqs=CERT_NONE`` and
  ``assert_hostname=False`` because the pin *replaces* chain validation), a ``ca_file``, or
  the system CA store (OpenSSL's compiled-in bundle, not certifi's copy).
* **trust_env=False**: ``REQUESTS_CA_BUNDLE`` would otherwise silently re-enable chain checks
  on the pinned pool (requests#3829), and proxies/.netrc have no business in a root daemon.
* **Timeouts** on connect and read; **no redirects** (a redirect could carry the token to
  another origin); the answer is read up to ``max_response_bytes``.
* **Typed errors** (:mod:`felhom_agent.hub.errors`): no ``requests`` exception crosses this
  module, and no message contains the token (it is also scrubbed defensively).
"""

from __future__ import annotations

import ipaddress
import json
import ssl
import urllib.parse
from pathlib import Path
from typing import Any

import requests
import requests.adapters
import requests.auth

from felhom_agent.errors import ConfigError
from felhom_agent.fingerprint import pin_from_config
from felhom_agent.hub.errors import (
    HubAuthError,
    HubError,
    HubProtocolError,
    HubRequestError,
    HubServerError,
    HubTimeoutError,
    HubTransportError,
)
from felhom_agent.hub.report import HostReport
from felhom_agent.secret import REDACTED, Secret
from felhom_agent.tlspin import PinnedAdapter

__all__ = ["DEFAULT_MAX_RESPONSE_BYTES", "HubClient"]

DEFAULT_MAX_RESPONSE_BYTES = 16 * 1024 * 1024
_CONNECT_TIMEOUT_CAP_S = 10.0


def _system_ca_bundle() -> str | bool:
    """OpenSSL's compiled-in CA file or directory; True (requests' certifi) if neither exists.

    The compiled-in paths are used rather than ``ssl.get_default_verify_paths().cafile``,
    which follows ``$SSL_CERT_FILE``: the environment must not decide whom the agent trusts.
    """
    paths = ssl.get_default_verify_paths()
    for candidate in (paths.openssl_cafile, paths.openssl_capath):
        if candidate and Path(candidate).exists():
            return candidate
    return True


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _BearerAuth(requests.auth.AuthBase):
    """Adds the bearer header at send time so the token sits in no session attribute."""

    def __init__(self, token: Secret) -> None:
        self._token = token

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        r.headers["Authorization"] = f"Bearer {self._token.reveal()}"
        return r

    def __repr__(self) -> str:
        return "_BearerAuth(***)"


class HubClient:
    """Send HostReports to the hub and return its decoded answer.

    Meant for one thread (the hub loop); the session is built here and not mutated later.

    Args:
        url: the hub base URL (``https://hub.example`` or ``http://127.0.0.1:PORT``).
        host_id: our host id, the path segment the hub files reports under.
        token: the bearer token.
        tls_fingerprint: pin the hub's leaf certificate (SHA-256); or
        ca_file: verify the hub against this CA bundle; neither: the system CAs.
        timeout_s: read timeout per request (connect timeout is the smaller of this and 10 s).
        max_response_bytes: a larger answer is a protocol error, not a memory problem.

    Raises:
        ConfigError: plain HTTP to a non-loopback host, both trust settings given, a pin on an
            http URL, a malformed URL or fingerprint, an empty token or host id.
    """

    def __init__(
        self,
        *,
        url: str,
        host_id: str,
        token: Secret,
        tls_fingerprint: str | None = None,
        ca_file: Path | None = None,
        timeout_s: float = 30.0,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        base = url.rstrip("/")
        parts = urllib.parse.urlsplit(base)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"hub.url must be an http(s) URL, got {url!r}", key="hub.url")
        if parts.username or parts.password or parts.query or parts.fragment:
            raise ConfigError(
                "hub.url must not contain credentials, a query or a fragment", key="hub.url"
            )
        if scheme == "http" and not _is_loopback(parts.hostname):
            raise ConfigError(
                f"hub.url {url!r} is plain http to a non-loopback host: the bearer token would "
                "travel in clear text; use https (plain http is allowed for 127.0.0.1/::1 only)",
                key="hub.url",
            )
        if tls_fingerprint is not None and ca_file is not None:
            raise ConfigError(
                "set at most one of hub.tls_fingerprint and hub.ca_file",
                key="hub.tls_fingerprint",
            )
        if scheme == "http" and (tls_fingerprint is not None or ca_file is not None):
            raise ConfigError(
                "hub.tls_fingerprint/hub.ca_file are set but hub.url is plain http",
                key="hub.url",
            )
        if not host_id or "/" in host_id:
            raise ConfigError(f"host_id {host_id!r} cannot name a hub path", key="host_id")
        if not token:
            raise ConfigError("hub.token is empty", key="hub.token")
        if timeout_s <= 0 or max_response_bytes < 1:
            raise ConfigError("hub timeout and response limit must be positive", key="hub.url")

        self.url = base
        self.host_id = host_id
        self.report_path = (
            f"{parts.path.rstrip('/')}/v1/hosts/{urllib.parse.quote(host_id, safe='')}/report"
        )
        self._report_url = f"{base}/v1/hosts/{urllib.parse.quote(host_id, safe='')}/report"
        self._token = token
        self._timeout = (min(float(timeout_s), _CONNECT_TIMEOUT_CAP_S), float(timeout_s))
        self.timeout_s = float(timeout_s)
        self._max_bytes = max_response_bytes
        self._pin = (None if tls_fingerprint is None
                     else pin_from_config(tls_fingerprint, key="hub.tls_fingerprint"))

        session = requests.Session()
        session.trust_env = False  # or REQUESTS_CA_BUNDLE re-enables chain checks (#3829)
        session.auth = _BearerAuth(token)
        session.headers.update({"Accept": "application/json", "User-Agent": "felhom-agent"})
        adapter_kw: dict[str, Any] = {"pool_connections": 1, "pool_maxsize": 1, "max_retries": 0}
        if self._pin is not None:
            session.verify = False
            session.mount("https://", PinnedAdapter(self._pin.hex, **adapter_kw))
        else:
            session.verify = str(ca_file) if ca_file is not None else _system_ca_bundle()
            session.mount("https://", requests.adapters.HTTPAdapter(**adapter_kw))
        session.mount("http://", requests.adapters.HTTPAdapter(**adapter_kw))
        self._session = session

    def __repr__(self) -> str:
        return f"HubClient(url={self.url!r}, host_id={self.host_id!r}, token=***)"

    def __enter__(self) -> HubClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close pooled connections."""
        self._session.close()

    def report(self, report: HostReport) -> dict[str, Any]:
        """POST one report; return the hub's answer as a decoded JSON object.

        Raises:
            HubAuthError: 401/403.
            HubServerError: 5xx.
            HubRequestError: any other non-2xx status.
            HubTimeoutError: no connection or no answer within the timeout.
            HubTransportError: connection refused/dropped, TLS or pin failure.
            HubProtocolError: the answer is not a JSON object or is too large.
        """
        return self.post_report_json(report.to_json())

    def post_report_json(self, body: bytes) -> dict[str, Any]:
        """POST an already serialised report (the loop serialises once, with a fallback).

        Raises:
            HubError: as :meth:`report`.
        """
        try:
            resp = self._session.post(
                self._report_url,
                data=body,
                headers={"Content-Type": "application/json"},
                timeout=self._timeout,
                allow_redirects=False,
                stream=True,
            )
            try:
                status, reason = resp.status_code, resp.reason or ""
                content = self._read_limited(resp) if 200 <= status < 300 else b""
            finally:
                resp.close()
        except requests.RequestException as err:
            raise self._wrap(err) from err
        if status in (401, 403):
            raise HubAuthError(
                f"hub refused the report: HTTP {status} {reason} on {self.report_path} "
                "(check hub.token and that this host_id is registered at the hub)",
                path=self.report_path,
                status=status,
            )
        if status >= 500:
            raise HubServerError(
                f"hub server error: HTTP {status} {reason} on {self.report_path}",
                path=self.report_path,
                status=status,
            )
        if not 200 <= status < 300:
            raise HubRequestError(
                f"unexpected hub answer: HTTP {status} {reason} on {self.report_path}",
                path=self.report_path,
                status=status,
            )
        return self._decode(content, status)

    def _read_limited(self, resp: requests.Response) -> bytes:
        chunks: list[bytes] = []
        size = 0
        for chunk in resp.iter_content(chunk_size=65536):
            size += len(chunk)
            if size > self._max_bytes:
                raise HubProtocolError(
                    f"hub answer exceeds {self._max_bytes} bytes", path=self.report_path,
                    status=resp.status_code,
                )
            chunks.append(chunk)
        return b"".join(chunks)

    def _decode(self, content: bytes, status: int) -> dict[str, Any]:
        try:
            decoded = json.loads(content.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise HubProtocolError(
                f"hub answer is not JSON ({len(content)} bytes: {self._scrub(repr(content[:60]))})",
                path=self.report_path,
                status=status,
            ) from None
        if not isinstance(decoded, dict):
            raise HubProtocolError(
                f"hub answer is JSON but not an object ({type(decoded).__name__})",
                path=self.report_path,
                status=status,
            )
        return decoded

    def _scrub(self, text: str) -> str:
        secret = self._token.reveal()
        return text.replace(secret, REDACTED) if secret else text

    def _wrap(self, err: requests.RequestException) -> HubError:
        """Translate a requests exception into our types (chained as the cause, never raised)."""
        detail = self._scrub(f"{type(err).__name__}: {err}")
        if len(detail) > 300:
            detail = detail[:300] + "..."
        path = self.report_path
        if isinstance(err, requests.exceptions.SSLError):
            if self._pin is not None and "Fingerprints did not match" in str(err):
                return HubTransportError(
                    "the hub's TLS certificate does not match hub.tls_fingerprint "
                    f"({detail}); nothing was sent",
                    path=path,
                )
            return HubTransportError(f"TLS failure talking to the hub: {detail}", path=path)
        if isinstance(err, requests.exceptions.Timeout):
            return HubTimeoutError(
                f"hub did not answer within {self.timeout_s:g} s ({detail})", path=path
            )
        return HubTransportError(f"cannot reach the hub: {detail}", path=path)
