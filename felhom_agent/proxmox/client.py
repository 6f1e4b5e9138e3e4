"""The typed Proxmox VE API client for one node: reads, mutations as dispatches, task waits.

Reads return attrs models (:mod:`felhom_agent.proxmox.models`). Mutations return a
:class:`~felhom_agent.proxmox.tasks.Dispatch` -- the UPID PVE answered, or ``None`` when the call
completed synchronously -- and do *not* wait: the executor journals the UPID first, then calls
:meth:`ProxmoxClient.wait` (``docs/architecture.md``, "Waiting for tasks"). Dispatch and wait are
separate steps, and a wait never re-dispatches.

Parameters are sent form-encoded with booleans as ``1``/``0`` (PVE rejects ``true`` in form bodies
with a 400, ``docs/pve-facts.md`` ("Responses and errors")); DELETE parameters go in the query
string (PVE refuses a DELETE body).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from felhom_agent.proxmox.backups import BackupCalls
from felhom_agent.proxmox.errors import ParameterError
from felhom_agent.proxmox.models import (
    Disk,
    Guest,
    GuestConfig,
    GuestStatus,
    GuestType,
    NodeStatus,
    Permissions,
    PveVersion,
    Snapshot,
    TaskEntry,
    TaskList,
    TaskLog,
    TaskLogLine,
    TaskStatus,
)
from felhom_agent.proxmox.provision import ProvisionCalls
from felhom_agent.proxmox.storage_admin import StorageAdminCalls
from felhom_agent.proxmox.tasks import Dispatch, PollPolicy, TaskResult, complete
from felhom_agent.proxmox.transport import Transport
from felhom_agent.proxmox.upid import Upid, parse_upid
from felhom_agent.proxmox.wire import ConfigValue, check_vmid
from felhom_agent.proxmox.wire import as_dict as _as_dict
from felhom_agent.proxmox.wire import as_list as _as_list
from felhom_agent.proxmox.wire import form as _form
from felhom_agent.proxmox.wire import seg as _seg
from felhom_agent.secret import Secret

__all__ = ["ConfigValue", "ProxmoxClient"]

_check_vmid = check_vmid

_SNAPNAME_RE = re.compile(r"[a-zA-Z][a-zA-Z0-9_\-]{1,39}")
_RESERVED_SNAPNAMES = frozenset({"current", "pending", "vzdump"})
_CONFIG_KEY_RE = re.compile(r"[a-z][a-z0-9_\-]*")
_TASK_SOURCES = frozenset({"archive", "active", "all"})


def _check_snapname(name: str) -> str:
    if not _SNAPNAME_RE.fullmatch(name) or name.lower() in _RESERVED_SNAPNAMES:
        raise ParameterError(
            f"invalid snapshot name {name!r}",
            status=None,
            errors={"snapname": "need [a-z][a-z0-9_-]{1,39}, not current/pending/vzdump"},
        )
    return name


class ProxmoxClient(BackupCalls, ProvisionCalls, StorageAdminCalls):
    """API-token client for one PVE node over pinned HTTPS; thread-safe; use as a context manager.

    Args:
        api_url: ``https://host:8006``.
        node: our node's name; guest listings are filtered to it.
        token_id: ``user@realm!tokenname``.
        token_secret: the token secret.
        tls_fingerprint: SHA-256 leaf pin (``AB:CD:...``); or ``ca_file``; exactly one.
        ca_file: CA bundle to verify the server against.
        timeout_s: HTTP timeout per call (keep it above PVE's 10 s lock wait).
        max_connections: bound on concurrent calls (pveproxy has 3 workers by default).
        task_timeout_s: default deadline for :meth:`wait`.
        poll_policy: the task poll backoff.
        clock, sleep: injectable time for task waits and GET retry backoff.

    Raises:
        ConfigError: insecure or malformed connection settings.
    """

    def __init__(
        self,
        *,
        api_url: str,
        node: str,
        token_id: str,
        token_secret: Secret,
        tls_fingerprint: str | None,
        ca_file: Path | None,
        timeout_s: float = 30,
        max_connections: int = 4,
        task_timeout_s: float = 900,
        poll_policy: PollPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        self.node = node
        self.token_id = token_id
        self.task_timeout_s = task_timeout_s
        self.poll_policy = poll_policy or PollPolicy()
        self._clock = clock
        self._sleep = sleep
        self._transport = Transport(
            api_url=api_url,
            token_id=token_id,
            token_secret=token_secret,
            tls_fingerprint=tls_fingerprint,
            ca_file=ca_file,
            timeout_s=timeout_s,
            max_connections=max_connections,
            sleep=sleep,
        )

    # -- plumbing ---------------------------------------------------------------------------

    @property
    def pinned(self) -> bool:
        """True when the server certificate is pinned by fingerprint."""
        return self._transport.pinned

    def close(self) -> None:
        """Close pooled connections."""
        self._transport.close()

    def __enter__(self) -> ProxmoxClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ProxmoxClient(url={self._transport.base_url!r}, node={self.node!r})"

    def _get(self, path: str, params: Mapping[str, ConfigValue | None] | None = None) -> Any:
        return self._transport.request("GET", path, params=_form(params or {})).data

    def _call(
        self, method: str, path: str, params: Mapping[str, ConfigValue | None] | None = None
    ) -> Any:
        return self._transport.request(method, path, params=_form(params or {})).data

    def _mutate(
        self, method: str, path: str, params: Mapping[str, ConfigValue | None] | None = None
    ) -> Dispatch:
        reply = self._transport.request(method, path, params=_form(params or {}))
        return Dispatch.from_data(reply.data)

    def _node_path(self) -> str:
        return f"/nodes/{_seg(self.node)}"

    def _guest_path(self, vmid: int, kind: GuestType) -> str:
        return f"{self._node_path()}/{GuestType(kind).value}/{_check_vmid(vmid)}"

    # -- node and guests --------------------------------------------------------------------

    def version(self) -> PveVersion:
        """``GET /version``: proves reachability, the pin and the token in one call."""
        return PveVersion.from_api(_as_dict(self._get("/version"), "/version"))

    def node_status(self) -> NodeStatus:
        """``GET /nodes/{node}/status`` (needs Sys.Audit on ``/nodes/{node}``)."""
        path = f"{self._node_path()}/status"
        return NodeStatus.from_api(self.node, _as_dict(self._get(path), path))

    def guests(self) -> tuple[Guest, ...]:
        """All qemu and lxc guests on our node, from ``/cluster/resources?type=vm``.

        Only guests the token has VM.Audit on are listed; ``status`` may lag (pvestatd).
        """
        path = "/cluster/resources"
        entries = _as_list(self._get(path, {"type": "vm"}), path)
        guests = (
            Guest.from_api(e)
            for e in entries
            if e.get("type") in ("qemu", "lxc") and e.get("node") == self.node
        )
        return tuple(sorted(guests, key=lambda g: g.vmid))

    def guest_status(self, vmid: int, kind: GuestType) -> GuestStatus:
        """``GET .../{vmid}/status/current``: the live run state and lock."""
        path = f"{self._guest_path(vmid, kind)}/status/current"
        return GuestStatus.from_api(vmid, GuestType(kind), _as_dict(self._get(path), path))

    def guest_config(self, vmid: int, kind: GuestType, *, current: bool = False) -> GuestConfig:
        """``GET .../{vmid}/config`` (pending values unless ``current``), digest split off."""
        path = f"{self._guest_path(vmid, kind)}/config"
        data = self._get(path, {"current": True if current else None})
        return GuestConfig.from_api(vmid, GuestType(kind), _as_dict(data, path))

    def set_guest_config(
        self,
        vmid: int,
        kind: GuestType,
        values: Mapping[str, ConfigValue],
        *,
        delete: Iterable[str] = (),
        digest: str | None = None,
        asynchronous: bool = True,
    ) -> Dispatch:
        """Write config keys (and delete others); pass the ``digest`` read just before.

        qemu uses ``POST .../config`` (a ``qmconfig`` task) unless ``asynchronous`` is False;
        lxc only has ``PUT`` (answers ``null``: synchronous success). A stale digest fails
        with ``checksum mismatch`` / ``detected modified configuration`` (a ServerError).
        """
        deleted = list(delete)
        for key in [*values, *deleted]:
            if not _CONFIG_KEY_RE.fullmatch(key) or key in ("digest", "delete"):
                raise ParameterError(
                    f"invalid config key {key!r}", status=None, errors={key: "invalid key"}
                )
        if not values and not deleted:
            raise ParameterError("no config change given", status=None, errors={})
        params: dict[str, ConfigValue | None] = dict(values)
        params["delete"] = ",".join(deleted) if deleted else None
        params["digest"] = digest
        method = "POST" if GuestType(kind) is GuestType.QEMU and asynchronous else "PUT"
        return self._mutate(method, f"{self._guest_path(vmid, kind)}/config", params)

    def start(self, vmid: int, kind: GuestType, *, timeout: int | None = None) -> Dispatch:
        """``POST .../status/start`` (``already running`` fails inside the task)."""
        path = f"{self._guest_path(vmid, kind)}/status/start"
        return self._mutate("POST", path, {"timeout": timeout})

    def stop(self, vmid: int, kind: GuestType, *, timeout: int | None = None) -> Dispatch:
        """``POST .../status/stop`` (hard stop; a stopped qemu VM is an OK no-op)."""
        path = f"{self._guest_path(vmid, kind)}/status/stop"
        return self._mutate("POST", path, {"timeout": timeout})

    def shutdown(
        self,
        vmid: int,
        kind: GuestType,
        *,
        timeout: int | None = None,
        force_stop: bool | None = None,
    ) -> Dispatch:
        """``POST .../status/shutdown`` (clean; ``force_stop`` stops after ``timeout``)."""
        path = f"{self._guest_path(vmid, kind)}/status/shutdown"
        return self._mutate("POST", path, {"timeout": timeout, "forceStop": force_stop})

    # -- snapshots --------------------------------------------------------------------------

    def snapshots(self, vmid: int, kind: GuestType) -> tuple[Snapshot, ...]:
        """Real snapshots (without the ``current`` pseudo-entry), oldest first."""
        path = f"{self._guest_path(vmid, kind)}/snapshot"
        snaps = [Snapshot.from_api(e) for e in _as_list(self._get(path), path)]
        real = [s for s in snaps if s.name != "current"]
        return tuple(sorted(real, key=lambda s: (s.snaptime or 0, s.name)))

    def create_snapshot(
        self,
        vmid: int,
        kind: GuestType,
        snapname: str,
        *,
        description: str | None = None,
        vmstate: bool | None = None,
    ) -> Dispatch:
        """``POST .../snapshot`` (lock and name clashes fail inside the task)."""
        params: dict[str, ConfigValue | None] = {
            "snapname": _check_snapname(snapname),
            "description": description,
            "vmstate": vmstate if GuestType(kind) is GuestType.QEMU else None,
        }
        return self._mutate("POST", f"{self._guest_path(vmid, kind)}/snapshot", params)

    def rollback_snapshot(
        self, vmid: int, kind: GuestType, snapname: str, *, start: bool | None = None
    ) -> Dispatch:
        """``POST .../snapshot/{name}/rollback``; a running guest ends stopped unless ``start``."""
        path = f"{self._guest_path(vmid, kind)}/snapshot/{_check_snapname(snapname)}/rollback"
        return self._mutate("POST", path, {"start": start})

    def delete_snapshot(
        self, vmid: int, kind: GuestType, snapname: str, *, force: bool | None = None
    ) -> Dispatch:
        """``DELETE .../snapshot/{name}`` (parameters in the query string)."""
        path = f"{self._guest_path(vmid, kind)}/snapshot/{_check_snapname(snapname)}"
        return self._mutate("DELETE", path, {"force": force})

    def destroy(
        self,
        vmid: int,
        kind: GuestType,
        *,
        purge: bool | None = None,
        destroy_unreferenced_disks: bool | None = None,
    ) -> Dispatch:
        """``DELETE /nodes/{node}/{qemu|lxc}/{vmid}`` (a ``qmdestroy``/``vzdestroy`` task).

        PVE refuses synchronously a protected guest, a running one (LXC ``force`` is never sent:
        stopping first is the caller's explicit, journalled step) and an HA-managed one without
        ``purge`` (``docs/pve-facts.md``, "Calls: synchronous or a task"). ``purge`` also removes
        the vmid from backup jobs, replication and HA; ``destroy_unreferenced_disks`` removes disks
        with the vmid in their name that the config does not reference. Parameters go in the query
        string.
        """
        return self._mutate("DELETE", self._guest_path(vmid, kind), {
            "purge": purge, "destroy-unreferenced-disks": destroy_unreferenced_disks,
        })

    # -- tasks ------------------------------------------------------------------------------

    def tasks(
        self,
        *,
        source: str = "archive",
        vmid: int | None = None,
        typefilter: str | None = None,
        userfilter: str | None = None,
        since: int | None = None,
        until: int | None = None,
        errors: bool | None = None,
        start: int = 0,
        limit: int = 50,
    ) -> TaskList:
        """``GET /nodes/{node}/tasks``; ``source="archive"`` (PVE's default) lists only
        finished tasks, ``"active"`` running ones, ``"all"`` both."""
        if source not in _TASK_SOURCES:
            raise ParameterError(
                f"invalid task source {source!r}",
                status=None,
                errors={"source": "archive|active|all"},
            )
        path = f"{self._node_path()}/tasks"
        params: dict[str, ConfigValue | None] = {
            "source": source,
            "vmid": vmid,
            "typefilter": typefilter,
            "userfilter": userfilter,
            "since": since,
            "until": until,
            "errors": errors,
            "start": start,
            "limit": limit,
        }
        reply = self._transport.request("GET", path, params=_form(params))
        entries = tuple(TaskEntry.from_api(e) for e in _as_list(reply.data, path))
        return TaskList(entries=entries, total=reply.total or 0)

    def task_status(self, upid: Upid | str) -> TaskStatus:
        """``GET /nodes/{node-from-upid}/tasks/{upid}/status`` (the UPID's node, not ours)."""
        parsed = upid if isinstance(upid, Upid) else parse_upid(upid)
        path = f"/nodes/{_seg(parsed.node)}/tasks/{_seg(parsed.raw)}/status"
        return TaskStatus.from_api(parsed, _as_dict(self._get(path), path))

    def task_log(self, upid: Upid | str, *, start: int = 0, limit: int = 50) -> TaskLog:
        """A page of the task log (``limit=0``: to the end); ``start`` is a 0-based offset."""
        parsed = upid if isinstance(upid, Upid) else parse_upid(upid)
        path = f"/nodes/{_seg(parsed.node)}/tasks/{_seg(parsed.raw)}/log"
        reply = self._transport.request("GET", path, params=_form({"start": start, "limit": limit}))
        lines = tuple(
            TaskLogLine(n=int(e.get("n", 0)), t=str(e.get("t", "")))
            for e in _as_list(reply.data, path)
        )
        return TaskLog(lines=lines, total=reply.total or len(lines))

    def wait(
        self,
        dispatched: Dispatch | Upid | str,
        *,
        timeout_s: float | None = None,
        cancel: threading.Event | None = None,
    ) -> TaskResult:
        """Complete a dispatch: wait on its UPID (or report synchronous success).

        Raises:
            TaskFailed, TaskUnknown, TaskTimeout, UpidError: see :func:`wait_task`.
        """
        if not isinstance(dispatched, Dispatch):
            parsed = dispatched if isinstance(dispatched, Upid) else parse_upid(dispatched)
            dispatched = Dispatch(upid=parsed)
        return complete(
            self,
            dispatched,
            timeout_s=self.task_timeout_s if timeout_s is None else timeout_s,
            policy=self.poll_policy,
            clock=self._clock,
            sleep=None if cancel is not None else self._sleep,
            cancel=cancel,
        )

    # -- access, disks (storage and backups: felhom_agent.proxmox.backups) --------------------

    def permissions(self, path: str | None = None) -> Permissions:
        """``GET /access/permissions`` for our own token (already privsep-intersected)."""
        data = self._get("/access/permissions", {"path": path})
        return Permissions.from_api(_as_dict(data, "/access/permissions"))

    def disks(self, *, skipsmart: bool = True) -> tuple[Disk, ...]:
        """``GET /nodes/{node}/disks/list`` (needs Sys.Audit on ``/`` or ``/nodes/{node}``)."""
        path = f"{self._node_path()}/disks/list"
        entries = _as_list(self._get(path, {"skipsmart": skipsmart}), path)
        return tuple(Disk.from_api(e) for e in entries)
