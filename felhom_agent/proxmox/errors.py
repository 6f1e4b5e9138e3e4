"""Typed errors of the Proxmox API client, and the classifier that maps PVE answers onto them.

PVE carries the error text in the HTTP *reason phrase* (first line only); servers with
libpve-http-server-perl >= 5.2.0 also put the full text into the JSON body as ``message``
(``docs/pve-facts.md``, "Responses and errors"). Parameter errors (400) carry a per-field ``errors``
object; permission errors (403) name the ACL path and the missing privilege(s); most operational
failures (locks, a missing config file) are plain 500s that only their text tells apart.
:func:`classify_error` turns one HTTP answer into exactly one leaf of the hierarchy below, so
callers branch on types, never on strings.

Hierarchy (``PveError(status, path)`` is the mid level; leaves also subclass a builtin):

* :class:`AuthError` (401), :class:`PermissionDenied` (403) -- ``PermissionError``
* :class:`ParameterError` (400, ``errors`` dict) -- ``ValueError``
* :class:`NotFound` (501 unknown path, missing guest config) -- ``LookupError``
* :class:`Locked` (guest lock or config flock timeout, 500)
* :class:`ServerError` (other 5xx); its leaves :class:`GuestExists` (the vmid is taken),
  :class:`GuestRunning` (refused because the guest runs), :class:`GuestProtected`
  (``protection`` is set)
* :class:`WrongGuestType` (a ``ParameterError`` raised before sending: a backup of the other
  guest type)
* :class:`TransportError` (no HTTP answer) -- ``ConnectionError``; :class:`ResponseTimeout`
  also ``TimeoutError``; :class:`TlsError` for a failed handshake
* :class:`PinMismatch` -- the served certificate is not the pinned one; nothing was sent
* :class:`TaskError` (``upid``): :class:`TaskFailed`, :class:`TaskTimeout`,
  :class:`TaskUnknown`; :class:`UpidError` for a malformed UPID
* :class:`NoGuestSelected` -- vzdump answered the plain string ``OK``: nothing ran
"""

from __future__ import annotations

import http
import json
import re
from typing import TypedDict

from felhom_agent.errors import AgentError

__all__ = [
    "PRIVSEP_HINT",
    "AuthError",
    "GuestExists",
    "GuestProtected",
    "GuestRunning",
    "Locked",
    "NoGuestSelected",
    "NotFound",
    "ParameterError",
    "PermissionDenied",
    "PinMismatch",
    "PveError",
    "ResponseTimeout",
    "ServerError",
    "TaskError",
    "TaskFailed",
    "TaskTimeout",
    "TaskUnknown",
    "TlsError",
    "TransportError",
    "UpidError",
    "WrongGuestType",
    "classify_error",
]

PRIVSEP_HINT = (
    "hint: a privilege-separated API token (privsep=1, the default) only has the "
    "intersection of its user's and its own ACLs; grant the role to both the user and "
    "the token (or check the ACL path)"
)
ROOT_ONLY_HINT = "hint: only root@pam may do this; API tokens (even root's) never can"

_PERM_RE = re.compile(r"Permission check failed \((?P<path>/[^,()]*), (?P<privs>[^()]+)\)")
_LOCKED_RE = re.compile(r"\b(?:VM|CT) is locked \((?P<lock>[^)]+)\)")
_FLOCK_RE = re.compile(r"can't lock file '[^']*' - got timeout|cfs-lock '[^']*' error")
_MISSING_RE = re.compile(
    r"Configuration file '[^']*' does not exist|unable to find configuration file for VM"
)
_EXISTS_RE = re.compile(r"\b(?P<kind>VM|CT) (?P<vmid>\d+) already exists on node"
                        r"|unable to create VM (?P<newid>\d+): config file already exists")
_RUNNING_RE = re.compile(r"can't overwrite running container|\bvm is running\b"
                         r"|template if (?:the CT|VM) is running|is running - destroy failed"
                         r"|container is running")
_PROTECTED_RE = re.compile(r"protection mode enabled")


class PveError(AgentError):
    """An error talking to the Proxmox API; carries the HTTP status and the API path.

    Args:
        message: the operator-readable text (PVE's own message when there is one).
        status: the HTTP status, or ``None`` when no HTTP answer was received.
        path: the API path relative to ``/api2/json`` (no secrets ever appear in paths).
        method: the HTTP method.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        path: str | None = None,
        method: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.path = path
        self.method = method

    def __str__(self) -> str:
        where = " ".join(p for p in (self.method, self.path) if p)
        code = f" -> {self.status}" if self.status is not None else ""
        return f"{self.message} ({where}{code})" if where or code else self.message


class AuthError(PveError, PermissionError):
    """401: the token is unknown, expired, disabled, malformed, or its secret is wrong.

    PVE never says which (the cause only goes to the host's syslog) and delays the answer 3 s.
    """


class PermissionDenied(PveError, PermissionError):
    """403: a privilege is missing; keeps the ACL path and privilege(s) PVE named.

    ``privileges`` holds the alternatives of an any-of check (``VM.Snapshot|...`` split on ``|``).
    The message always ends with the privsep hint, because a privilege-separated token missing
    an ACL is the most common cause on a correctly provisioned user.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = 403,
        path: str | None = None,
        method: str | None = None,
        acl_path: str | None = None,
        privileges: tuple[str, ...] = (),
    ) -> None:
        super().__init__(message, status=status, path=path, method=method)
        self.acl_path = acl_path
        self.privileges = privileges

    @property
    def hint(self) -> str:
        """The operator hint appended to the message (root-only or privsep)."""
        if "only allowed for root@pam" in self.message or "Only root" in self.message:
            return ROOT_ONLY_HINT
        return PRIVSEP_HINT

    def __str__(self) -> str:
        return f"{super().__str__()}; {self.hint}"


class ParameterError(PveError, ValueError):
    """400: parameter verification failed; ``errors`` maps each parameter to PVE's text."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = 400,
        path: str | None = None,
        method: str | None = None,
        errors: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message, status=status, path=path, method=method)
        self.errors: dict[str, str] = dict(errors or {})

    @property
    def no_such_task(self) -> bool:
        """True for the brief ``{"upid": "no such task"}`` answer right after a dispatch."""
        return self.errors.get("upid", "").strip() == "no such task"

    def __str__(self) -> str:
        base = super().__str__()
        if not self.errors:
            return base
        fields = "; ".join(f"{k}: {v.strip()}" for k, v in sorted(self.errors.items()))
        return f"{base}: {fields}"


class NotFound(PveError, LookupError):
    """The path, method or guest does not exist.

    PVE answers 501 for an unknown path/method and 500 ``Configuration file ... does not
    exist`` for a missing guest (when the caller has the privilege; else 403).
    """


class Locked(PveError):
    """The guest is locked (``VM is locked (backup)``) or its config flock timed out.

    Synchronously returned, this proves no task was created, so the dispatch may be retried
    after re-reading state. ``lock`` is the lock name when PVE named one.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = 500,
        path: str | None = None,
        method: str | None = None,
        lock: str | None = None,
    ) -> None:
        super().__init__(message, status=status, path=path, method=method)
        self.lock = lock


class ServerError(PveError):
    """Any other 5xx; ``no_task_created`` tells a failed fork apart (safe to re-dispatch)."""

    @property
    def no_task_created(self) -> bool:
        """True when PVE says it could not fork the worker (``got no worker upid``)."""
        return "got no worker upid" in self.message


class GuestExists(ServerError):
    """The vmid is taken (``CT 100 already exists on node 'pve1'``, ``unable to create VM 100:
    config file already exists``): nothing was created or overwritten. ``kind`` is ``VM`` or
    ``CT`` (the existing guest's type) when PVE said it; ``vmid`` the taken id."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = 500,
        path: str | None = None,
        method: str | None = None,
        vmid: int | None = None,
        kind: str | None = None,
    ) -> None:
        super().__init__(message, status=status, path=path, method=method)
        self.vmid = vmid
        self.kind = kind


class GuestRunning(ServerError):
    """Refused because the guest runs (``can't overwrite running container``, ``you can't
    convert a CT to template if the CT is running``): stop it first."""


class GuestProtected(ServerError):
    """Refused because the guest has ``protection`` set (``... - protection mode enabled``)."""


class TransportError(PveError, ConnectionError):
    """No usable HTTP answer: connection refused/reset/dropped, TLS failure, bad framing.

    For a mutating call this means *outcome unknown*: look the task up before re-sending.
    """


class TlsError(TransportError):
    """The TLS handshake failed for a reason other than the pin (CA-file verification, protocol)."""


class ResponseTimeout(TransportError, TimeoutError):
    """The server did not answer (or stalled mid-answer) within the client timeout."""


class PinMismatch(PveError, ConnectionError):
    """The server's certificate is not the pinned one; the handshake was aborted before any
    request (and the token) was sent. ``served`` is the served SHA-256 fingerprint when known.
    """

    def __init__(self, message: str, *, expected: str, served: str | None) -> None:
        super().__init__(message)
        self.expected = expected
        self.served = served


class TaskError(PveError):
    """A PVE task did not end in success; carries the task's UPID string."""

    def __init__(self, message: str, *, upid: str) -> None:
        super().__init__(message)
        self.upid = upid


class TaskFailed(TaskError, RuntimeError):
    """The task stopped with an error ``exitstatus`` (PVE's text, ``TASK ERROR:`` removed)."""

    def __init__(self, exitstatus: str, *, upid: str) -> None:
        super().__init__(f"task failed: {exitstatus}", upid=upid)
        self.exitstatus = exitstatus

    @property
    def lock_failure(self) -> bool:
        """True when the task failed acquiring its first lock (its work never started)."""
        text = self.exitstatus
        return bool(_FLOCK_RE.search(text) or _LOCKED_RE.search(text))


class TaskTimeout(TaskError, TimeoutError):
    """The wait deadline passed (or the wait was interrupted): the task is *still running*.

    Never a failure and never a success: keep the UPID and re-attach later.
    """

    def __init__(self, message: str, *, upid: str, last_status: str | None = None) -> None:
        super().__init__(message, upid=upid)
        self.last_status = last_status


class TaskUnknown(TaskError):
    """The task stopped with ``unexpected status`` (e.g. killed by a reboot): outcome unknown.

    Decide by re-reading the guest's state, never by guessing.
    """

    def __init__(self, exitstatus: str, *, upid: str) -> None:
        super().__init__(f"task outcome unknown: {exitstatus or '(empty)'}", upid=upid)
        self.exitstatus = exitstatus


class NoGuestSelected(PveError):
    """vzdump answered the plain string ``OK`` instead of a UPID: none of the selected guests
    is on the node, so **no backup ran**. Never a success; ``vmids`` names the selection."""

    def __init__(self, message: str, *, vmids: tuple[int, ...], node: str,
                 path: str | None = None) -> None:
        super().__init__(message, status=200, path=path, method="POST")
        self.vmids = vmids
        self.node = node


class WrongGuestType(ParameterError):
    """A backup of the other guest type was given (a container backup to a VM restore or the
    reverse); raised before anything is sent. ``archive_type`` is the backup's type."""

    def __init__(self, message: str, *, archive_type: str, wanted: str) -> None:
        super().__init__(message, status=None, errors={"archive": message})
        self.archive_type = archive_type
        self.wanted = wanted


class UpidError(PveError, ValueError):
    """A string that should be a UPID is not one (see :mod:`felhom_agent.proxmox.upid`)."""


def _body_json(body: bytes) -> dict[str, object] | None:
    try:
        parsed = json.loads(body.decode("utf-8", "replace"))
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


def _message(status: int, reason: str, body: bytes) -> tuple[str, dict[str, str]]:
    """Pick the best message: the reason phrase, or the body's fuller ``message``/plain text."""
    parsed = _body_json(body) if body else None
    errors: dict[str, str] = {}
    body_msg = ""
    if parsed is not None:
        raw_errors = parsed.get("errors")
        if isinstance(raw_errors, dict):
            errors = {str(k): str(v) for k, v in raw_errors.items()}
        msg = parsed.get("message")
        if isinstance(msg, str):
            body_msg = msg.strip()
    elif body:
        body_msg = body.decode("utf-8", "replace").strip()[:2000]
    reason = reason.strip()
    try:
        standard = http.HTTPStatus(status).phrase
    except ValueError:
        standard = ""
    if body_msg and (not reason or reason == standard or body_msg.startswith(reason)):
        return body_msg, errors
    return reason or body_msg or standard or f"HTTP {status}", errors


class _Ctx(TypedDict):
    status: int
    path: str
    method: str


def classify_error(status: int, reason: str, body: bytes, *, method: str, path: str) -> PveError:
    """Map one PVE error answer (status >= 400) onto the most specific :class:`PveError`.

    Args:
        status: the HTTP status code.
        reason: the HTTP reason phrase (PVE's first message line).
        body: the raw response body (JSON ``{"data":null,...}``, plain text, or empty).
        method: the HTTP method of the request.
        path: the API path of the request.
    """
    message, errors = _message(status, reason, body)
    ctx: _Ctx = {"status": status, "path": path, "method": method}
    if status == 401:
        return AuthError(
            f"authentication failed ({message}): check the token id and secret, and that the "
            "token and its user are enabled and not expired",
            **ctx,
        )
    if status == 403:
        match = _PERM_RE.search(message)
        if match is None:
            return PermissionDenied(message, **ctx)
        privs = tuple(p.strip() for p in match["privs"].split("|") if p.strip())
        return PermissionDenied(message, acl_path=match["path"], privileges=privs, **ctx)
    if status == 400:
        return ParameterError(message, errors=errors, **ctx)
    if status in (404, 501) or _MISSING_RE.search(message):
        return NotFound(message, **ctx)
    locked = _LOCKED_RE.search(message)
    if locked is not None:
        return Locked(message, lock=locked["lock"], **ctx)
    if _FLOCK_RE.search(message):
        return Locked(message, **ctx)
    if status >= 500:
        exists = _EXISTS_RE.search(message)
        if exists is not None:
            taken = exists["vmid"] or exists["newid"]
            return GuestExists(message, vmid=int(taken), kind=exists["kind"], **ctx)
        if _RUNNING_RE.search(message):
            return GuestRunning(message, **ctx)
        if _PROTECTED_RE.search(message):
            return GuestProtected(message, **ctx)
        return ServerError(message, **ctx)
    return PveError(message, **ctx)
