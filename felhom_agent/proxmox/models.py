"""Typed results of the Proxmox API client (attrs, frozen), built from PVE's JSON.

PVE's JSON typing is loose (``docs/pve-facts.md``, "Config round trip"): LXC ``vmid`` was a string
before 2024, ``number``-typed keys may come back as strings, optional flags (``lock``, ``template``)
are *absent* rather than 0/empty, and stats vanish without ``Sys.Audit``. Every ``from_api`` here
therefore coerces numbers, maps absent flags to ``None``/``False``, and keeps only what the agent
uses; unknown keys are ignored so a newer PVE does not break parsing.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any

import attrs

from felhom_agent.proxmox.upid import Upid, parse_upid

__all__ = [
    "Disk",
    "Guest",
    "GuestConfig",
    "GuestStatus",
    "GuestType",
    "NodeStatus",
    "Permissions",
    "PveVersion",
    "Snapshot",
    "StorageInfo",
    "StorageVolume",
    "TaskEntry",
    "TaskList",
    "TaskLog",
    "TaskLogLine",
    "TaskStatus",
]


class GuestType(enum.StrEnum):
    """The two guest kinds and their API path segment."""

    QEMU = "qemu"
    LXC = "lxc"


def _int(value: Any, default: int = 0) -> int:
    if value is None or value == "":
        return default
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return default


def _float(value: Any, default: float = 0.0) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def _opt_str(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def _flag(value: Any) -> bool:
    return _int(value) != 0


def _opt_pid(value: Any) -> int | None:
    """A process id: a positive integer (PVE sends a number or a numeric string), else None."""
    pid = _int(value, 0)
    return pid if pid > 0 else None


def _tags(value: Any) -> tuple[str, ...]:
    if not value:
        return ()
    text = str(value).replace(",", ";").replace(" ", ";")
    return tuple(t for t in text.split(";") if t)


@attrs.frozen
class PveVersion:
    """``GET /version``: the pve-manager version (``9.2.2``), ``release`` (``9.2``), repo id."""

    version: str
    release: str
    repoid: str

    @classmethod
    def from_api(cls, d: Mapping[str, Any]) -> PveVersion:
        """Build from the API object."""
        return cls(str(d.get("version", "")), str(d.get("release", "")), str(d.get("repoid", "")))


@attrs.frozen
class NodeStatus:
    """``GET /nodes/{node}/status``: the figures the hub report carries."""

    node: str
    pveversion: str
    kversion: str
    uptime_s: int
    cpu: float
    mem_used: int
    mem_total: int
    loadavg: tuple[float, ...]
    rootfs_used: int
    rootfs_total: int

    @classmethod
    def from_api(cls, node: str, d: Mapping[str, Any]) -> NodeStatus:
        """Build from the API object (``memory``/``rootfs`` are nested objects)."""
        memory = d.get("memory") or {}
        rootfs = d.get("rootfs") or {}
        return cls(
            node=node,
            pveversion=str(d.get("pveversion", "")),
            kversion=str(d.get("kversion", "")),
            uptime_s=_int(d.get("uptime")),
            cpu=_float(d.get("cpu")),
            mem_used=_int(memory.get("used")),
            mem_total=_int(memory.get("total")),
            loadavg=tuple(_float(x) for x in d.get("loadavg") or ()),
            rootfs_used=_int(rootfs.get("used")),
            rootfs_total=_int(rootfs.get("total")),
        )


@attrs.frozen
class Guest:
    """One guest from ``GET /cluster/resources?type=vm`` (status may lag by ~10 s: pvestatd)."""

    vmid: int
    type: GuestType
    node: str
    name: str
    status: str
    lock: str | None
    template: bool
    tags: tuple[str, ...]
    uptime_s: int
    cpu: float
    mem: int
    maxmem: int

    @classmethod
    def from_api(cls, d: Mapping[str, Any]) -> Guest:
        """Build from one resources entry."""
        return cls(
            vmid=_int(d.get("vmid")),
            type=GuestType(str(d.get("type"))),
            node=str(d.get("node", "")),
            name=str(d.get("name", "")),
            status=str(d.get("status", "unknown")),
            lock=_opt_str(d.get("lock")),
            template=_flag(d.get("template")),
            tags=_tags(d.get("tags")),
            uptime_s=_int(d.get("uptime")),
            cpu=_float(d.get("cpu")),
            mem=_int(d.get("mem")),
            maxmem=_int(d.get("maxmem")),
        )


@attrs.frozen
class GuestStatus:
    """``GET .../{vmid}/status/current``: live state (``running``/``stopped``) and lock.

    A paused VM is ``running`` with ``qmpstatus == "paused"``. ``ha_managed`` guests change
    state through ha-manager, after their ``hastart``/``hastop`` task already ended. ``pid``
    is the guest's process on the node while it runs (a container's init, a VM's QEMU), from
    PVE's ``pid`` field; ``None`` when stopped or not reported.
    """

    vmid: int
    type: GuestType
    status: str
    name: str
    lock: str | None
    template: bool
    qmpstatus: str | None
    ha_managed: bool
    uptime_s: int
    pid: int | None = None

    @property
    def running(self) -> bool:
        """True when PVE reports the guest running (paused VMs included)."""
        return self.status == "running"

    @classmethod
    def from_api(cls, vmid: int, kind: GuestType, d: Mapping[str, Any]) -> GuestStatus:
        """Build from the API object."""
        ha = d.get("ha") or {}
        return cls(
            vmid=vmid,
            type=kind,
            status=str(d.get("status", "unknown")),
            name=str(d.get("name", "")),
            lock=_opt_str(d.get("lock")),
            template=_flag(d.get("template")),
            qmpstatus=_opt_str(d.get("qmpstatus")),
            ha_managed=_flag(ha.get("managed")) if isinstance(ha, Mapping) else False,
            uptime_s=_int(d.get("uptime")),
            pid=_opt_pid(d.get("pid")),
        )


@attrs.frozen(hash=False)
class GuestConfig:
    """``GET .../{vmid}/config``: the keys as PVE returns them, and the ``digest`` apart.

    Send ``digest`` back with the next write (optimistic concurrency: a stale write fails
    with ``checksum mismatch``). Values are left as PVE typed them; normalise before diffing.
    """

    vmid: int
    type: GuestType
    values: Mapping[str, Any]
    digest: str

    @classmethod
    def from_api(cls, vmid: int, kind: GuestType, d: Mapping[str, Any]) -> GuestConfig:
        """Build from the API object, splitting off ``digest``."""
        values = {k: v for k, v in d.items() if k != "digest"}
        return cls(vmid=vmid, type=kind, values=values, digest=str(d.get("digest", "")))


@attrs.frozen
class Snapshot:
    """One real snapshot (the ``current`` pseudo-entry is not listed)."""

    name: str
    snaptime: int | None
    description: str
    parent: str | None
    snapstate: str | None
    vmstate: bool

    @classmethod
    def from_api(cls, d: Mapping[str, Any]) -> Snapshot:
        """Build from one snapshot list entry."""
        return cls(
            name=str(d.get("name", "")),
            snaptime=_int(d["snaptime"]) if d.get("snaptime") is not None else None,
            description=str(d.get("description") or ""),
            parent=_opt_str(d.get("parent")),
            snapstate=_opt_str(d.get("snapstate")),
            vmstate=_flag(d.get("vmstate")),
        )


@attrs.frozen
class TaskStatus:
    """``GET /nodes/{node}/tasks/{upid}/status``: ``exitstatus`` is set once ``stopped``."""

    upid: Upid
    status: str
    exitstatus: str | None

    @property
    def running(self) -> bool:
        """True while the task has not stopped."""
        return self.status != "stopped"

    @classmethod
    def from_api(cls, upid: Upid, d: Mapping[str, Any]) -> TaskStatus:
        """Build from the API object."""
        exitstatus = d.get("exitstatus")
        return cls(
            upid=upid,
            status=str(d.get("status", "")),
            exitstatus=None if exitstatus is None else str(exitstatus),
        )


@attrs.frozen
class TaskEntry:
    """One task-list entry. Active entries carry ``status == "RUNNING"``; finished ones the
    raw exitstatus. ``user`` is split from ``tokenid`` on finished entries only (PVE quirk).
    """

    upid: str
    node: str
    type: str
    id: str
    user: str
    tokenid: str | None
    starttime: int
    endtime: int | None
    status: str | None

    @property
    def parsed_upid(self) -> Upid:
        """The entry's UPID, parsed strictly (raises UpidError)."""
        return parse_upid(self.upid)

    @classmethod
    def from_api(cls, d: Mapping[str, Any]) -> TaskEntry:
        """Build from one list entry."""
        return cls(
            upid=str(d.get("upid", "")),
            node=str(d.get("node", "")),
            type=str(d.get("type", "")),
            id=str(d.get("id") or ""),
            user=str(d.get("user", "")),
            tokenid=_opt_str(d.get("tokenid")),
            starttime=_int(d.get("starttime")),
            endtime=_int(d["endtime"]) if d.get("endtime") is not None else None,
            status=_opt_str(d.get("status")),
        )


@attrs.frozen
class TaskList:
    """A page of the task list and PVE's ``total`` (0 when PVE omitted it)."""

    entries: tuple[TaskEntry, ...]
    total: int


@attrs.frozen
class TaskLogLine:
    """One log line: ``n`` is 1-based, ``t`` the text without newline."""

    n: int
    t: str


@attrs.frozen
class TaskLog:
    """A page of a task log and the total line count."""

    lines: tuple[TaskLogLine, ...]
    total: int

    @property
    def text(self) -> str:
        """The page joined with newlines."""
        return "\n".join(line.t for line in self.lines)


@attrs.frozen(hash=False)
class Permissions:
    """``GET /access/permissions``: ``{path: {privilege: propagate}}`` as evaluated by PVE.

    For a privilege-separated token these are already the user/token intersection.
    """

    paths: Mapping[str, Mapping[str, bool]]

    def privileges_at(self, path: str) -> frozenset[str]:
        """The privileges effective on ``path``: its own entry, else the nearest ancestor's
        *propagated* privileges (PVE lists every path that has an ACL of its own)."""
        if path in self.paths:
            return frozenset(self.paths[path])
        parts = [p for p in path.split("/") if p]
        while parts:
            parts.pop()
            ancestor = "/" + "/".join(parts)
            if ancestor in self.paths:
                return frozenset(k for k, prop in self.paths[ancestor].items() if prop)
        return frozenset()

    @classmethod
    def from_api(cls, d: Mapping[str, Any]) -> Permissions:
        """Build from the API object."""
        paths: dict[str, dict[str, bool]] = {}
        for path, privs in d.items():
            if isinstance(privs, Mapping):
                paths[str(path)] = {str(k): _flag(v) for k, v in privs.items()}
        return cls(paths=paths)


@attrs.frozen
class StorageInfo:
    """One storage as seen from our node (``GET /nodes/{node}/storage`` or ``.../status``).

    PVE reports a storage it could not activate (a dead NFS or PBS server, an unmounted USB
    disk) as ``active: 0`` with zero sizes; here that is ``reachable`` False and the sizes are
    None -- unknown, never "0 bytes free".
    """

    storage: str
    type: str
    content: tuple[str, ...]
    active: bool
    enabled: bool
    shared: bool
    total: int | None
    used: int | None
    avail: int | None

    @property
    def reachable(self) -> bool:
        """Whether PVE could activate the storage (its sizes are real)."""
        return self.active

    @property
    def holds_backups(self) -> bool:
        """Whether ``backup`` is one of its content types."""
        return "backup" in self.content

    @property
    def is_pbs(self) -> bool:
        """Whether it is a Proxmox Backup Server datastore."""
        return self.type == "pbs"

    @classmethod
    def from_api(cls, d: Mapping[str, Any], storage: str | None = None) -> StorageInfo:
        """Build from the API object (``storage`` given for the status endpoint)."""
        content = str(d.get("content") or "")
        active = _flag(d.get("active"))
        return cls(
            storage=storage or str(d.get("storage", "")),
            type=str(d.get("type", "")),
            content=tuple(c for c in content.split(",") if c),
            active=active,
            enabled=_flag(d.get("enabled", 1)),
            shared=_flag(d.get("shared")),
            total=_int(d.get("total")) if active else None,
            used=_int(d.get("used")) if active else None,
            avail=_int(d.get("avail")) if active else None,
        )


@attrs.frozen
class StorageVolume:
    """One volume of ``GET .../storage/{storage}/content`` (filtered by PVE's access checks)."""

    volid: str
    content: str
    format: str
    size: int
    vmid: int | None
    ctime: int | None
    notes: str | None
    protected: bool

    @classmethod
    def from_api(cls, d: Mapping[str, Any]) -> StorageVolume:
        """Build from one content entry."""
        return cls(
            volid=str(d.get("volid", "")),
            content=str(d.get("content", "")),
            format=str(d.get("format", "")),
            size=_int(d.get("size")),
            vmid=_int(d["vmid"]) if d.get("vmid") not in (None, "") else None,
            ctime=_int(d["ctime"]) if d.get("ctime") is not None else None,
            notes=_opt_str(d.get("notes")),
            protected=_flag(d.get("protected")),
        )


@attrs.frozen
class Disk:
    """One block device of ``GET /nodes/{node}/disks/list``."""

    devpath: str
    size: int
    type: str
    model: str
    serial: str
    health: str
    wearout: str
    used: str | None

    @classmethod
    def from_api(cls, d: Mapping[str, Any]) -> Disk:
        """Build from one disk entry (``wearout`` may be ``N/A`` or a number)."""
        return cls(
            devpath=str(d.get("devpath", "")),
            size=_int(d.get("size")),
            type=str(d.get("type", "unknown")),
            model=str(d.get("model") or ""),
            serial=str(d.get("serial") or ""),
            health=str(d.get("health") or "UNKNOWN"),
            wearout=str(d.get("wearout", "N/A")),
            used=_opt_str(d.get("used")),
        )
