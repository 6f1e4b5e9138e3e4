"""The endpoints of the per-guest API (v1), independent of the transport.

``docs/architecture.md`` ("The per-guest local API"). A request reaches :meth:`Api.handle`
with the :class:`Caller` the transport established -- the listener it arrived on (a
container) or the serial socket it was read from (a VM); nothing in the request itself says
who sent it, and nothing in it is used to choose a guest, a storage or any PVE parameter.
Every answer concerns the caller only.

=========================  ==========================================================
``GET /1.0``               the API version, the caller's vmid and type, what it may do
``GET /1.0/identity``      ``vmid``, ``type``, ``name``, ``node``, ``host_id``, ``tags``
``GET /1.0/backups``       its own backups: ``ctime``, ``size``, ``verified``, ``protected``
``POST /1.0/backups``      a backup of itself now, to its policy's storage: 202 with an
                           operation id (one in flight, a minimum interval, a daily cap)
``GET /1.0/operations/ID`` an operation it created (another guest's id is "not found")
``POST /1.0/restart``      a restart of itself (a shutdown, then a start), only when
                           ``guestapi.allow_restart``
=========================  ==========================================================

No query string is accepted, a ``GET`` carries no body, and a ``POST`` body is empty or
``{}``: a request that names a vmid, a storage or anything else is refused rather than
ignored, so a guest learns at once that it cannot steer the host.

:meth:`Api.route` is pure and cheap; the loop uses it to answer ``GET /1.0`` and
``GET /1.0/identity`` itself (from memory) and to hand the others to the handler pool.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, Protocol

import attrs

from felhom_agent.errors import AgentError
from felhom_agent.guestapi.policy import Limits, Refusal

__all__ = [
    "API_VERSION",
    "Accepted",
    "Api",
    "ApiRequest",
    "ApiResponse",
    "Backend",
    "BackupItem",
    "Caller",
    "Endpoint",
    "GuestInfo",
]

API_VERSION: Final = "1.0"
_OP_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,79}")


@attrs.frozen
class Caller:
    """Who is asking: established by the transport, never by the request.

    Attributes:
        vmid: the guest whose socket the request arrived on.
        type: ``lxc`` or ``qemu``.
        transport: ``unix`` (a container's socket) or ``serial`` (a VM's serial port).
    """

    vmid: int
    type: str
    transport: str

    @property
    def source(self) -> str:
        """The audit and journal source of everything this guest asks: ``guest:<vmid>``."""
        return f"guest:{self.vmid}"


@attrs.frozen
class ApiRequest:
    """One request, whatever the transport.

    Attributes:
        method: ``GET``, ``POST``...
        path: the path as sent.
        query: the query string, ``None`` without one.
        body: the body: raw bytes over HTTP, the decoded ``body`` member of a serial frame
            (``None`` when absent).
    """

    method: str
    path: str
    query: str | None = None
    body: bytes | object = b""


@attrs.frozen
class ApiResponse:
    """One answer and what the audit must say about it.

    Attributes:
        status: the HTTP status (also the serial frame's ``status``).
        body: the JSON body.
        retry_after_s: ``Retry-After`` (429, 503).
        mutating: the request asked the host to change something (always audited).
        operation_id: the operation a mutating request created.
    """

    status: int
    body: Mapping[str, Any] | Sequence[Any]
    retry_after_s: int | None = None
    mutating: bool = False
    operation_id: str | None = None

    @property
    def refused(self) -> bool:
        """Whether the request was not served (4xx or 5xx)."""
        return self.status >= 400

    @property
    def reason(self) -> str:
        """The ``error`` text of a refusal (empty for a success)."""
        if isinstance(self.body, Mapping):
            error = self.body.get("error")
            if isinstance(error, str):
                return error
        return ""

    def json_bytes(self) -> bytes:
        """The body as compact UTF-8 JSON."""
        return json.dumps(self.body, separators=(",", ":"), ensure_ascii=False,
                          allow_nan=False).encode("utf-8")

    @classmethod
    def refusal(cls, refusal: Refusal, *, mutating: bool = False) -> ApiResponse:
        """The answer to a refused request."""
        return cls(refusal.status, {"error": refusal.reason}, refusal.retry_after_s,
                   mutating=mutating)


@attrs.frozen
class GuestInfo:
    """What the agent knows about one guest, for ``/1.0`` and ``/1.0/identity``.

    Attributes:
        vmid: the guest id.
        type: ``lxc`` or ``qemu``.
        name: its PVE name (a container's hostname).
        node: the PVE node it runs on.
        host_id: the agent's host id.
        tags: its PVE tags.
        backup_storage: its backup policy's storage (``None``: no policy, so no backups can
            be requested).
        backup_mode: its backup policy's vzdump mode.
    """

    vmid: int
    type: str
    name: str
    node: str
    host_id: str
    tags: tuple[str, ...] = ()
    backup_storage: str | None = None
    backup_mode: str = "snapshot"


@attrs.frozen
class BackupItem:
    """One of the caller's backups, as the API shows it (no volid, no storage, no notes)."""

    ctime: int | None
    size: int | None
    verified: bool | None
    protected: bool

    def to_json(self) -> dict[str, Any]:
        """The wire form."""
        return {"ctime": self.ctime, "size": self.size, "verified": self.verified,
                "protected": self.protected}


@attrs.frozen
class Accepted:
    """A mutating request was accepted: the operation that carries it out."""

    operation_id: str


class Backend(Protocol):
    """What the endpoints read and ask of the rest of the agent (always for the caller)."""

    def guest_info(self, vmid: int) -> GuestInfo | None:
        """The guest as last seen, or ``None`` when it is not (or no longer) known."""
        ...

    def list_backups(self, caller: Caller, info: GuestInfo) -> Sequence[BackupItem]:
        """The caller's backups, newest first (raises :class:`AgentError` when unreadable)."""
        ...

    def request_backup(self, caller: Caller, info: GuestInfo) -> Accepted | Refusal:
        """Submit a backup of the caller (limits checked here)."""
        ...

    def operation(self, caller: Caller, op_id: str) -> Mapping[str, Any] | None:
        """An operation the caller created, or ``None`` (also for another guest's)."""
        ...

    def request_restart(self, caller: Caller, info: GuestInfo) -> Accepted | Refusal:
        """Submit a restart of the caller (a shutdown, then a start)."""
        ...


Handler = Callable[["Api", Caller, GuestInfo, str], ApiResponse]


@attrs.frozen
class Endpoint:
    """One route: its handler, whether it changes anything, whether it may run on the loop.

    ``inline`` endpoints read only memory and are answered by the event loop itself; the
    others may call PVE or the queue and run on the bounded handler pool.
    """

    name: str
    handler: Handler
    mutating: bool = False
    inline: bool = False


def _no_body(body: bytes | object) -> bool:
    return body in (b"", None)


def _empty_object(body: bytes | object) -> Refusal | None:
    """A POST body must be empty or the JSON object ``{}``."""
    if _no_body(body):
        return None
    value: object = body
    if isinstance(body, bytes):
        try:
            value = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return Refusal(400, "the body must be empty or the JSON object {}")
    if value == {}:
        return None
    if isinstance(value, dict):
        names = ", ".join(sorted(str(k)[:40] for k in value)[:5])
        return Refusal(400, f"unknown field(s): {names}; this request takes no parameters "
                       "(the guest it concerns is the one asking)")
    return Refusal(400, "the body must be empty or the JSON object {}")


class Api:
    """The v1 endpoints over a :class:`Backend`.

    Args:
        backend: the agent side (guest facts, backups, the queue).
        limits: the guest limits (``allow_restart`` decides what ``/1.0`` offers).
    """

    def __init__(self, backend: Backend, limits: Limits) -> None:
        self._backend = backend
        self._limits = limits

    # -------------------------------------------------------------- routing (pure)

    def route(self, request: ApiRequest) -> tuple[Endpoint, str] | Refusal:
        """The endpoint of ``request`` and its path argument, or the refusal.

        Query strings and (for ``GET``) bodies are refused here, before any handler.
        """
        path = request.path
        arg = ""
        if path.startswith("/1.0/operations/"):
            arg = path.removeprefix("/1.0/operations/")
            if not _OP_ID.fullmatch(arg):
                return Refusal(404, "no such operation")
            path = "/1.0/operations/{id}"
        methods = _ROUTES.get(path)
        if methods is None:
            return Refusal(404, f"no such endpoint (this is API {API_VERSION}; "
                           f"GET /{API_VERSION} lists what this guest may use)")
        endpoint = methods.get(request.method)
        if endpoint is None:
            return Refusal(405, f"{request.method} is not allowed here "
                           f"(allowed: {', '.join(sorted(methods))})")
        if request.query is not None:
            return Refusal(400, "no query parameters are accepted: every answer concerns "
                           "the guest asking")
        if request.method == "GET" and not _no_body(request.body):
            return Refusal(400, "a GET request carries no body")
        return endpoint, arg

    def handle(self, caller: Caller, request: ApiRequest) -> ApiResponse:
        """Serve ``request`` for ``caller`` (routing included)."""
        routed = self.route(request)
        if isinstance(routed, Refusal):
            return ApiResponse.refusal(routed, mutating=request.method != "GET")
        return self.run(routed[0], routed[1], caller, request)

    def run(self, endpoint: Endpoint, arg: str, caller: Caller,
            request: ApiRequest) -> ApiResponse:
        """Serve an already routed request."""
        if endpoint.mutating:
            bad = _empty_object(request.body)
            if bad is not None:
                return ApiResponse.refusal(bad, mutating=True)
        info = self._backend.guest_info(caller.vmid)
        if info is None or info.type != caller.type:
            return ApiResponse(503, {"error": "this guest is not known to the agent right "
                                     "now; try again shortly"}, 5, mutating=endpoint.mutating)
        try:
            return endpoint.handler(self, caller, info, arg)
        except AgentError as err:
            return ApiResponse(503, {"error": f"the host could not answer: {str(err)[:200]}"},
                               30, mutating=endpoint.mutating)

    # -------------------------------------------------------------- endpoints

    def _root(self, caller: Caller, info: GuestInfo, _arg: str) -> ApiResponse:
        return ApiResponse(200, {
            "api_version": API_VERSION,
            "guest": {"vmid": caller.vmid, "type": caller.type},
            "transport": caller.transport,
            "capabilities": {
                "identity": True,
                "backups_read": True,
                "backup_request": info.backup_storage is not None,
                "restart": self._limits.allow_restart,
            },
            "limits": {
                "rate_per_s": self._limits.rate_per_s,
                "burst": self._limits.burst,
                "backup_min_interval_s": self._limits.backup_min_interval_s,
                "backups_per_day": self._limits.backups_per_day,
            },
        })

    def _identity(self, caller: Caller, info: GuestInfo, _arg: str) -> ApiResponse:
        return ApiResponse(200, {"vmid": info.vmid, "type": info.type, "name": info.name,
                                 "node": info.node, "host_id": info.host_id,
                                 "tags": list(info.tags)})

    def _backups(self, caller: Caller, info: GuestInfo, _arg: str) -> ApiResponse:
        items = self._backend.list_backups(caller, info)
        return ApiResponse(200, {"backups": [b.to_json() for b in items]})

    def _request_backup(self, caller: Caller, info: GuestInfo, _arg: str) -> ApiResponse:
        if info.backup_storage is None:
            return ApiResponse.refusal(Refusal(
                409, "this guest has no backup policy on this host, so there is no storage "
                "to back it up to"), mutating=True)
        return self._accepted(self._backend.request_backup(caller, info))

    def _operation(self, caller: Caller, info: GuestInfo, arg: str) -> ApiResponse:
        found = self._backend.operation(caller, arg)
        if found is None:
            return ApiResponse.refusal(Refusal(404, "no such operation"))
        return ApiResponse(200, dict(found))

    def _restart(self, caller: Caller, info: GuestInfo, _arg: str) -> ApiResponse:
        if not self._limits.allow_restart:
            return ApiResponse.refusal(Refusal(
                403, "restart requests are not enabled on this host"), mutating=True)
        return self._accepted(self._backend.request_restart(caller, info))

    @staticmethod
    def _accepted(result: Accepted | Refusal) -> ApiResponse:
        if isinstance(result, Refusal):
            return ApiResponse.refusal(result, mutating=True)
        op = result.operation_id
        return ApiResponse(202, {"operation_id": op,
                                 "operation": f"/{API_VERSION}/operations/{op}"},
                           mutating=True, operation_id=op)


_ROUTES: Final[Mapping[str, Mapping[str, Endpoint]]] = {
    "/1.0": {"GET": Endpoint("root", Api._root, inline=True)},
    "/1.0/identity": {"GET": Endpoint("identity", Api._identity, inline=True)},
    "/1.0/backups": {"GET": Endpoint("backups", Api._backups),
                     "POST": Endpoint("backup_request", Api._request_backup, mutating=True)},
    "/1.0/operations/{id}": {"GET": Endpoint("operation", Api._operation)},
    "/1.0/restart": {"POST": Endpoint("restart", Api._restart, mutating=True)},
}
