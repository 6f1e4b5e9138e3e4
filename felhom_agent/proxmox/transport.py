"""The HTTPS transport to ``pveproxy``: one pinned ``requests.Session``, typed errors out.

Why each knob (``docs/architecture.md``, "TLS pinning and HTTP"; ``docs/pve-facts.md``, "Capacity"):

* **Pinning.** The PVE leaf is self-signed from our point of view, so the pinned pool sets
  urllib3's ``assert_fingerprint`` *and* ``cert_reqs="CERT_NONE"``/``assert_hostname=False``
  (``assert_fingerprint`` does not imply them), and the session has ``verify=False`` because
  requests overrides ``cert_reqs`` per request from ``verify``. urllib3 compares the leaf
  digest right after the handshake and aborts inside ``connect`` on a mismatch, so no request
  bytes -- and no token -- leave the process.
* **trust_env=False**, or ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE`` silently turn chain
  validation back on (requests#3829) and proxies/.netrc would apply to a root daemon.
* **ca_file** mode instead verifies chain, expiry and hostname against that CA (PVE's cluster
  CA survives node-certificate renewals).
* **Bounded concurrency**: a semaphore of ``max_connections`` (acquired with a timeout) in front
  of a pool of the same size with ``pool_block=True``: ``pveproxy`` has 3 workers by default.
* **Timeouts** on every call; **retries only for GET** and only on connection-level failures
  (a read timeout is not retried: the server is slow, asking again makes it slower). Mutating
  calls are never retried here: after a transport error their outcome is unknown.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs
import requests
import requests.adapters
import requests.auth

from felhom_agent.backoff import Exponential, Retry, StopAfterAttempt, retry_call
from felhom_agent.errors import ConfigError
from felhom_agent.fingerprint import Sha256Fingerprint, pin_from_config
from felhom_agent.proxmox.errors import (
    PinMismatch,
    PveError,
    ResponseTimeout,
    ServerError,
    TlsError,
    TransportError,
    classify_error,
)
from felhom_agent.secret import Secret
from felhom_agent.tlspin import PinnedAdapter

__all__ = ["ApiReply", "Transport"]

API_PREFIX = "/api2/json"
_TOKEN_ID_RE = re.compile(r"[^\s@!:=;]+@[A-Za-z][A-Za-z0-9.\-_]+![A-Za-z][A-Za-z0-9.\-_]+")
_GOT_RE = re.compile(r'got "?([0-9a-fA-F]{64})"?')
Params = Mapping[str, str]
#: Pause after the n-th failed GET: 0.1 s, 0.2 s, 0.4 s...
_GET_RETRY_WAIT = Exponential(0.1, 2.0)


@attrs.frozen
class ApiReply:
    """A successful answer: ``data`` from the ``{"data": ...}`` envelope, ``total`` if sent."""

    data: Any
    total: int | None = None


class _TokenAuth(requests.auth.AuthBase):
    """Adds ``Authorization: PVEAPIToken=USER@REALM!TOKEN=SECRET`` at send time.

    The secret stays a :class:`Secret` until this moment, so it is in no session attribute,
    repr or error message.
    """

    def __init__(self, token_id: str, secret: Secret) -> None:
        self._token_id = token_id
        self._secret = secret

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        r.headers["Authorization"] = f"PVEAPIToken={self._token_id}={self._secret.reveal()}"
        return r

    def __repr__(self) -> str:
        return f"_TokenAuth({self._token_id!r}, ***)"


class Transport:
    """Send requests to ``{api_url}/api2/json``; return :class:`ApiReply` or raise typed errors.

    Thread-safe: the session, adapter and auth are built here and never mutated afterwards.

    Args:
        api_url: ``https://host:8006`` (an ``/api2/json`` suffix is accepted).
        token_id: ``user@realm!tokenname``.
        token_secret: the token's secret.
        tls_fingerprint: the pinned SHA-256 leaf fingerprint; or
        ca_file: a CA bundle to verify against (exactly one of the two is required).
        timeout_s: read timeout per call (PVE waits up to 10 s for a guest config lock).
        max_connections: concurrent calls and pooled connections.
        get_retries: extra attempts for a GET after a connection-level failure.
        sleep: injectable sleep for the retry backoff.

    Raises:
        ConfigError: insecure or malformed settings (http URL, no pin and no CA, bad token id).
    """

    def __init__(
        self,
        *,
        api_url: str,
        token_id: str,
        token_secret: Secret,
        tls_fingerprint: str | None,
        ca_file: Path | None,
        timeout_s: float = 30.0,
        max_connections: int = 4,
        get_retries: int = 2,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        base = api_url.rstrip("/")
        if base.endswith(API_PREFIX):
            base = base[: -len(API_PREFIX)]
        if not base.lower().startswith("https://"):
            raise ConfigError(
                f"proxmox.api_url must be an https:// URL, got {api_url!r}", key="proxmox.api_url"
            )
        if not _TOKEN_ID_RE.fullmatch(token_id):
            raise ConfigError(
                f"proxmox.token_id must look like user@realm!tokenname, got {token_id!r}",
                key="proxmox.token_id",
            )
        if not token_secret:
            raise ConfigError("proxmox.token_secret is empty", key="proxmox.token_secret")
        if (tls_fingerprint is None) == (ca_file is None):
            raise ConfigError(
                "set exactly one of proxmox.tls_fingerprint and proxmox.ca_file "
                "(there is no unverified mode)",
                key="proxmox.tls_fingerprint",
            )
        if timeout_s <= 0 or max_connections < 1:
            raise ConfigError(
                "proxmox.timeout_s must be > 0 and proxmox.max_connections >= 1",
                key="proxmox.timeout_s",
            )
        self.base_url = base + API_PREFIX
        self.timeout_s = float(timeout_s)
        self.max_connections = max_connections
        self._timeout = (min(self.timeout_s, 10.0), self.timeout_s)
        self._get_retries = get_retries
        self._sleep = sleep
        self._slots = threading.BoundedSemaphore(max_connections)
        self._pin: Sha256Fingerprint | None = None

        session = requests.Session()
        session.trust_env = False  # or REQUESTS_CA_BUNDLE re-enables chain checks (#3829)
        session.auth = _TokenAuth(token_id, token_secret)
        session.headers.update({"Accept": "application/json", "User-Agent": "felhom-agent"})
        adapter_kw: dict[str, Any] = {
            "pool_connections": 1,
            "pool_maxsize": max_connections,
            "pool_block": True,
            "max_retries": 0,
        }
        adapter: requests.adapters.HTTPAdapter
        if tls_fingerprint is not None:
            self._pin = pin_from_config(tls_fingerprint, key="proxmox.tls_fingerprint")
            session.verify = False
            adapter = PinnedAdapter(self._pin.hex, **adapter_kw)
        else:
            session.verify = str(ca_file)
            adapter = requests.adapters.HTTPAdapter(**adapter_kw)
        session.mount("https://", adapter)
        session.mount("http://", requests.adapters.HTTPAdapter(max_retries=0))
        self._session = session

    @property
    def pinned(self) -> bool:
        """True when the leaf certificate is pinned (False: verified against ``ca_file``)."""
        return self._pin is not None

    def close(self) -> None:
        """Close pooled connections; the transport must not be used afterwards."""
        self._session.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Params | None = None,
    ) -> ApiReply:
        """Send one API call; parameters go in the query (GET/DELETE) or a form body (POST/PUT).

        Raises:
            PveError: a subclass per failure (see :mod:`felhom_agent.proxmox.errors`).
        """
        method = method.upper()
        attempts = 1 + (self._get_retries if method == "GET" else 0)
        policy = Retry(_GET_RETRY_WAIT, StopAfterAttempt(attempts))
        try:
            return retry_call(lambda: self._send_once(method, path, params), policy=policy,
                              retry_if=lambda err: isinstance(err, _Retryable),
                              sleep=self._sleep)
        except _Retryable as err:
            raise err.error from err.__cause__

    def _send_once(self, method: str, path: str, params: Params | None) -> ApiReply:
        in_body = method in ("POST", "PUT")
        if not self._slots.acquire(timeout=self.timeout_s):
            raise ResponseTimeout(
                f"all {self.max_connections} connections busy for {self.timeout_s:g} s",
                method=method,
                path=path,
            )
        try:
            resp = self._session.request(
                method,
                self.base_url + path,
                params=None if in_body else params,
                data=params if in_body else None,
                timeout=self._timeout,
                allow_redirects=False,
            )
            body = resp.content
        except requests.RequestException as err:
            raise self._wrap(err, method, path) from err
        finally:
            self._slots.release()
        if resp.status_code >= 400:
            reason = _redecode(resp.reason or "")
            raise classify_error(resp.status_code, reason, body, method=method, path=path)
        return _parse_success(resp.status_code, body, method=method, path=path)

    def _wrap(self, err: requests.RequestException, method: str, path: str) -> Exception:
        """Translate a requests exception; connection-level GET failures become retryable."""
        detail = _short(err)
        if isinstance(err, requests.exceptions.SSLError):
            text = str(err)
            if self._pin is not None and "Fingerprints did not match" in text:
                got = _GOT_RE.search(text)
                served = Sha256Fingerprint(bytes.fromhex(got[1])).colon if got else None
                return PinMismatch(
                    "the server's TLS certificate does not match proxmox.tls_fingerprint "
                    f"(configured {self._pin.colon}, served "
                    f"{served or 'unknown'}); nothing was sent",
                    expected=self._pin.colon,
                    served=served,
                )
            return TlsError(f"TLS failure: {detail}", method=method, path=path)
        error: PveError
        if isinstance(err, requests.exceptions.ConnectTimeout):
            error = ResponseTimeout(f"connect timed out: {detail}", method=method, path=path)
        elif isinstance(err, requests.exceptions.Timeout):
            # A read timeout is never retried: the server is slow, not gone.
            return ResponseTimeout(
                f"no answer within {self.timeout_s:g} s", method=method, path=path
            )
        else:
            error = TransportError(f"connection failed: {detail}", method=method, path=path)
        if method == "GET" and isinstance(err, requests.exceptions.ConnectionError):
            return _Retryable(error)
        return error


class _Retryable(Exception):
    """Internal marker: a GET failed at the connection level and may be sent again."""

    def __init__(self, error: PveError) -> None:
        super().__init__(str(error))
        self.error = error


def _short(err: BaseException) -> str:
    text = f"{type(err).__name__}: {err}"
    return text if len(text) <= 300 else text[:300] + "..."


def _redecode(reason: str) -> str:
    """http.client decodes the status line as latin-1; PVE sends UTF-8 text there."""
    try:
        return reason.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return reason


def _parse_success(status: int, body: bytes, *, method: str, path: str) -> ApiReply:
    try:
        parsed = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise ServerError(
            f"malformed API answer (not JSON): {body[:120]!r}",
            status=status,
            path=path,
            method=method,
        ) from err
    if not isinstance(parsed, dict) or "data" not in parsed:
        raise ServerError(
            "malformed API answer (no 'data' envelope)", status=status, path=path, method=method
        )
    total = parsed.get("total")
    return ApiReply(data=parsed["data"], total=int(total) if isinstance(total, int) else None)
