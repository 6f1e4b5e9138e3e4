"""The agent side of the endpoints: guest facts, a guest's own backups, and its requests.

``docs/architecture.md`` ("The per-guest local API"). :class:`AgentBackend` answers the
:class:`~felhom_agent.guestapi.api.Backend` protocol for the real agent:

* **facts** come from the :class:`Directory` the supervisor fills from the node's guest list
  and the desired state (name, tags, the backup policy's storage and mode) -- never from the
  guest and never the raw PVE config;
* **backups**: the listing of the guest's *policy storage* filtered to its vmid and type
  (PVE is asked for that vmid, and the answer is filtered again), shown as ``ctime``,
  ``size``, ``verified``, ``protected`` only; one listing per guest per :data:`LISTING_TTL_S`
  at most, however often the guest asks;
* **a backup request** is a ``backup`` job of the caller's vmid to its policy's storage in its
  policy's mode, with the source ``guest:<vmid>``, through ``Engine.submit_op``: the guest's
  own lane of the queue and the node-wide ``backup`` limit group, the executor's space check,
  the op id in the backup's notes (so it is found, and traced to the request). Limits: one
  unfinished request per guest, ``backup_min_interval_s`` apart, ``backups_per_day`` in any
  24 hours -- counted from the journal too, so a restart of the agent does not reset them;
* **a restart request** (``guestapi.allow_restart``) is a ``shutdown`` (forced after its
  timeout) and then a ``start`` of the caller, both in its lane; at most one at a time,
  :data:`RESTART_MIN_INTERVAL_S` apart and :data:`RESTARTS_PER_DAY` a day;
* **operations** are the caller's own requests (by op id, from memory or the journal); any
  other id -- another guest's included -- is "not found", and the answer carries the state
  only, no host detail (a failure's text may name storages and paths).

No value of the request reaches a job: the vmid is the caller's, the storage and mode the
policy's.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, Protocol

import attrs

from felhom_agent.execution.executor import ExecResult
from felhom_agent.execution.queue import JobHandle, JobState, QueueClosed
from felhom_agent.guestapi.api import Accepted, BackupItem, Caller, GuestInfo
from felhom_agent.guestapi.errors import GuestApiError
from felhom_agent.guestapi.policy import DAY_S, Limits, Refusal, check_backup_request
from felhom_agent.kinds.model import JobSpec
from felhom_agent.proxmox.backup_models import BackupVolume
from felhom_agent.proxmox.errors import PveError
from felhom_agent.proxmox.models import GuestType
from felhom_agent.state.journal import JournalEntry
from felhom_agent.utc import format_utc

__all__ = [
    "LISTING_TTL_S",
    "RESTARTS_PER_DAY",
    "RESTART_MIN_INTERVAL_S",
    "RESTART_SHUTDOWN_TIMEOUT_S",
    "AgentBackend",
    "Directory",
]

#: A guest's backup listing is read from PVE at most this often.
LISTING_TTL_S: Final = 30.0
RESTART_MIN_INTERVAL_S: Final = 900.0
RESTARTS_PER_DAY: Final = 3
_BACKUP_KIND: Final = "backup"
#: A restart is two jobs: the shutdown step (op id + this suffix), then the start (the op id).
_SHUTDOWN_KIND: Final = "shutdown"
_START_KIND: Final = "start"
_SHUTDOWN_SUFFIX: Final = ".shutdown"
#: How long the shutdown step waits for the guest before it stops it.
RESTART_SHUTDOWN_TIMEOUT_S: Final = 120
_RESTART: Final = "restart"
_VERIFIED: Final[Mapping[str | None, bool | None]] = {"ok": True, "failed": False}
_PUBLIC_REASON: Final = {
    "failed": "it failed on the host; the host's operator sees why",
    "refused": "the host refused it (for example not enough free space); the host's operator "
               "sees why",
    "unknown": "its outcome could not be determined",
}


class Directory:
    """The guests the API serves right now, as the supervisor last saw them (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._infos: dict[int, GuestInfo] = {}

    def replace(self, infos: Mapping[int, GuestInfo]) -> None:
        """Swap in the supervisor's latest view."""
        with self._lock:
            self._infos = dict(infos)

    def get(self, vmid: int) -> GuestInfo | None:
        """One guest, or ``None``."""
        with self._lock:
            return self._infos.get(vmid)


class BackupLister(Protocol):
    """The one read the backend needs (``ProxmoxClient.backups``)."""

    def backups(self, storage: str, vmid: int | None = None) -> tuple[BackupVolume, ...]:
        """The backups on ``storage`` (of ``vmid``)."""
        ...


class JournalView(Protocol):
    """What the backend reads from the op journal."""

    def get(self, op_id: str) -> JournalEntry | None:
        """One entry."""
        ...

    def entries(self) -> list[JournalEntry]:
        """Every entry held."""
        ...


Submit = Callable[[JobSpec], JobHandle[ExecResult]]


@attrs.define
class _Request:
    op_id: str
    vmid: int
    kind: str
    at: float
    handle: JobHandle[ExecResult] | None = None


@attrs.frozen
class _Listing:
    at: float
    items: tuple[BackupItem, ...]


def _request_kind(entry: JournalEntry) -> str | None:
    """Which guest request a journal entry is the op of: ``backup``, ``restart`` (its start
    step), or ``None`` (anything else, a restart's shutdown step included)."""
    if entry.kind == _BACKUP_KIND:
        return _BACKUP_KIND
    if entry.kind == _START_KIND and not entry.op_id.endswith(_SHUTDOWN_SUFFIX):
        return _RESTART
    return None


def _guest_vmid(source: str) -> int | None:
    head, sep, tail = source.partition(":")
    return int(tail) if head == "guest" and sep and tail.isdigit() else None


class AgentBackend:
    """See the module docstring.

    Args:
        directory: the supervisor's view of the served guests.
        client: reads a storage's backups.
        submit: ``Engine.submit_op``.
        journal: the op journal (operations after a restart, the limits' history).
        limits: the guest limits.
        clock: wall-clock seconds.
        logger: where accepted and refused requests are logged.
    """

    def __init__(self, *, directory: Directory, client: BackupLister, submit: Submit,
                 journal: JournalView, limits: Limits, clock: Callable[[], float] = time.time,
                 logger: logging.Logger | None = None) -> None:
        self._directory = directory
        self._client = client
        self._submit = submit
        self._journal = journal
        self._limits = limits
        self._clock = clock
        self._log = logger if logger is not None else logging.getLogger(__name__)
        self._lock = threading.Lock()
        self._requests: dict[str, _Request] = {}
        self._listings: dict[int, _Listing] = {}
        self._seed()

    def _seed(self) -> None:
        """Earlier requests from the journal: the limits hold across a restart."""
        for entry in self._journal.entries():
            vmid = _guest_vmid(entry.source)
            what = _request_kind(entry)
            if vmid is None or what is None:
                continue
            at = entry.began_at
            if at is None and entry.outcome is not None:
                at = entry.outcome.finished_at
            if at is not None:
                self._requests[entry.op_id] = _Request(entry.op_id, vmid, what, at)

    # ------------------------------------------------------------------ Backend

    def guest_info(self, vmid: int) -> GuestInfo | None:
        """The guest as the supervisor last saw it."""
        return self._directory.get(vmid)

    def list_backups(self, caller: Caller, info: GuestInfo) -> Sequence[BackupItem]:
        """The caller's backups on its policy storage, newest first (cached briefly).

        Raises:
            GuestApiError: the storage could not be listed.
        """
        storage = info.backup_storage
        if storage is None:
            return ()
        now = self._clock()
        with self._lock:
            cached = self._listings.get(caller.vmid)
        if cached is not None and 0 <= now - cached.at < LISTING_TTL_S:
            return cached.items
        try:
            volumes = self._client.backups(storage, vmid=caller.vmid)
        except PveError as err:
            status = f"HTTP {err.status}" if err.status is not None else "no answer"
            raise GuestApiError(f"the backup storage could not be listed ({status})") from err
        mine = sorted((v for v in volumes if v.belongs_to(caller.vmid, caller.type)
                       and v.storage == storage),
                      key=lambda v: v.ctime or 0, reverse=True)
        items = tuple(BackupItem(v.ctime, v.size, _VERIFIED.get(v.verification), v.protected)
                      for v in mine)
        with self._lock:
            self._listings[caller.vmid] = _Listing(now, items)
        return items

    def request_backup(self, caller: Caller, info: GuestInfo) -> Accepted | Refusal:
        """Submit a backup of the caller to its policy storage (limits first)."""
        storage = info.backup_storage
        if storage is None:
            return Refusal(409, "this guest has no backup policy on this host")
        job = JobSpec("", caller.vmid, GuestType(caller.type), _BACKUP_KIND,
                      {"storage": storage, "mode": info.backup_mode}, caller.source)
        return self._request(caller, _BACKUP_KIND, (job,), self._limits)

    def request_restart(self, caller: Caller, info: GuestInfo) -> Accepted | Refusal:
        """Submit a restart of the caller: a shutdown (forced after its timeout), then a start
        (one at a time, a cooldown, a daily cap)."""
        limits = Limits(backup_min_interval_s=RESTART_MIN_INTERVAL_S,
                        backups_per_day=RESTARTS_PER_DAY)
        gtype = GuestType(caller.type)
        steps = (JobSpec(_SHUTDOWN_SUFFIX, caller.vmid, gtype, _SHUTDOWN_KIND,
                         {"timeout": RESTART_SHUTDOWN_TIMEOUT_S, "force_stop": True},
                         caller.source),
                 JobSpec("", caller.vmid, gtype, _START_KIND, {}, caller.source))
        return self._request(caller, _RESTART, steps, limits)

    def operation(self, caller: Caller, op_id: str) -> Mapping[str, Any] | None:
        """The caller's own operation ``op_id`` (``None`` for any other id)."""
        with self._lock:
            request = self._requests.get(op_id)
        entry = self._journal.get(op_id)
        if request is None:
            what = None if entry is None else _request_kind(entry)
            if entry is None or what is None or _guest_vmid(entry.source) != caller.vmid:
                return None
            request = _Request(op_id, caller.vmid, what, entry.began_at or 0.0)
        if request.vmid != caller.vmid or (entry is not None and entry.vmid != caller.vmid):
            return None
        state, finished = self._state(request, entry)
        if request.kind == _RESTART:
            first = self._journal.get(op_id + _SHUTDOWN_SUFFIX)
            if (first is not None and first.outcome is not None
                    and first.outcome.state.value != "applied"):
                state, finished = first.outcome.state.value, first.outcome.finished_at
        view: dict[str, Any] = {
            "id": op_id,
            "kind": request.kind,
            "state": state,
            "created_at": format_utc(request.at),
            "finished_at": None if finished is None else format_utc(finished),
        }
        if state in _PUBLIC_REASON:
            view["reason"] = _PUBLIC_REASON[state]
        return view

    # ------------------------------------------------------------------ internals

    @staticmethod
    def _state(request: _Request, entry: JournalEntry | None) -> tuple[str, float | None]:
        if entry is not None and entry.outcome is not None:
            return entry.outcome.state.value, entry.outcome.finished_at
        handle = request.handle
        if handle is not None:
            if handle.state is JobState.QUEUED:
                return "queued", None
            if handle.state is JobState.CANCELLED:
                return "unknown", handle.finished_at
            if handle.done() and entry is None:
                return "unknown", handle.finished_at
        return "running", None

    def _prune(self, now: float) -> None:
        """Forget finished requests older than the longest limit window (a day): memory
        stays bounded; the journal still answers for them."""
        old = [op for op, r in self._requests.items()
               if now - r.at > DAY_S and (r.handle is None or r.handle.done())]
        for op in old:
            del self._requests[op]

    def _unfinished(self, vmid: int, kind: str) -> str | None:
        for request in self._requests.values():
            if request.vmid != vmid or request.kind != kind:
                continue
            entry = self._journal.get(request.op_id)
            if entry is not None and entry.outcome is not None:
                continue
            if request.handle is not None and request.handle.done() and entry is None:
                continue  # decided without a journal record (cancelled at shutdown)
            if request.handle is None and entry is None:
                continue  # seeded and since forgotten by the journal
            return request.op_id
        return None

    def _request(self, caller: Caller, what: str, steps: tuple[JobSpec, ...],
                 limits: Limits) -> Accepted | Refusal:
        """Check the limits of ``what`` (``backup`` or ``restart``), then submit its steps
        (their op ids are the request's id plus each step's suffix; the last step's is the
        request's own)."""
        now = self._clock()
        with self._lock:
            self._prune(now)
            times = [r.at for r in self._requests.values()
                     if r.vmid == caller.vmid and r.kind == what]
            refusal = check_backup_request(now=now, in_flight=self._unfinished(caller.vmid, what),
                                           accepted=times, limits=limits)
            if refusal is not None:
                if what == _RESTART:
                    refusal = attrs.evolve(refusal, reason=refusal.reason.replace(
                        "backups", "restarts").replace("a backup", "a restart"))
                return refusal
            op_id = f"guest-{caller.vmid}-{uuid.uuid4().hex[:16]}"
            handle: JobHandle[ExecResult] | None = None
            try:
                for step in steps:
                    handle = self._submit(attrs.evolve(step, op_id=op_id + step.op_id))
            except QueueClosed:
                return Refusal(503, "the agent is stopping; try again later", 60)
            self._requests[op_id] = _Request(op_id, caller.vmid, what, now, handle)
            self._listings.pop(caller.vmid, None)
        self._log.info("guest %d asked for a %s: op %s", caller.vmid, what, op_id)
        return Accepted(op_id)
