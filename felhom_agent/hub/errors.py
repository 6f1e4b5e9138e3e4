"""Typed hub failures: what went wrong talking to the hub, never a ``requests`` exception.

The loop's failure policy is chosen by type (``docs/architecture.md``, "Hub protocol"):

* :class:`HubAuthError` (401/403): the token is wrong or revoked; retried slowly, loudly.
* :class:`HubServerError` (5xx), :class:`HubTransportError` (connect, read, timeout, dropped
  connection) and :class:`HubRequestError` (any other unexpected status): exponential backoff.
* :class:`HubProtocolError` (a 200 whose body is not a JSON object) and its leaf
  :class:`EnvelopeError` (a JSON object with wrong field types): the hub answered, so the
  report was delivered; the answer is logged, counted and skipped.

Every message names the request path and status and never the bearer token: errors end up in
logs and in the next report's ``errors`` list.
"""

from __future__ import annotations

from felhom_agent.errors import AgentError

__all__ = [
    "EnvelopeError",
    "HubAuthError",
    "HubError",
    "HubProtocolError",
    "HubRequestError",
    "HubServerError",
    "HubTimeoutError",
    "HubTransportError",
]


class HubError(AgentError):
    """A report round trip to the hub failed.

    Args:
        message: operator-readable text (never contains the token).
        path: the request path (``/v1/hosts/pve1/report``), if a request was made.
        status: the HTTP status, when the hub answered.
    """

    def __init__(self, message: str, *, path: str | None = None, status: int | None = None):
        super().__init__(message)
        self.path = path
        self.status = status


class HubAuthError(HubError, PermissionError):
    """The hub refused our bearer token (401) or our access (403)."""


class HubServerError(HubError):
    """The hub answered with a 5xx status: its problem, retry with backoff."""


class HubRequestError(HubError, ValueError):
    """The hub answered with an unexpected non-2xx status (3xx or a 4xx other than 401/403)."""


class HubTransportError(HubError, ConnectionError):
    """No usable answer: connection refused or dropped, TLS failure, read error."""


class HubTimeoutError(HubTransportError, TimeoutError):
    """The hub did not connect or answer within the client timeout."""


class HubProtocolError(HubError, ValueError):
    """The hub answered 200 but the body is not a JSON object (garbage, truncated, a list)."""


class EnvelopeError(HubProtocolError):
    """The envelope is a JSON object but a known field has the wrong type or value.

    Args:
        message: what is wrong, naming the field (``signed_ops[1].payload``).
        field: the dotted field path concerned.
    """

    def __init__(self, message: str, *, field: str, path: str | None = None) -> None:
        super().__init__(message, path=path)
        self.field = field
