"""Live storages and backup volumes: capacity, volid formats and the listing views.

Volume ids follow PVE exactly:

* dir-like storages: ``<sid>:backup/vzdump-<qemu|lxc>-<vmid>-YYYY_MM_DD-HH_MM_SS.<vma|tar>``
  plus ``.zst``/``.gz``/``.lzo`` when compressed; the timestamp is **node local time** and
  ``ctime`` is parsed back from it; ``format`` is the extension (``tar.zst``);
* PBS: ``<sid>:backup/<vm|ct>/<vmid>/<YYYY-MM-DDTHH:MM:SSZ>`` in **UTC**; ``format`` is
  ``pbs-vm``/``pbs-ct``; ``size`` is 1 when PBS reported no size; ``verification`` is absent
  until a verify job ran; ``encrypted`` is the key fingerprint (or ``"1"``).

Capacity is bookkept here: a backup consumes its size; deleting a dir backup frees it at once
while a PBS deletion only frees space at the datastore's garbage collection (``run_gc``). An
inactive storage reports ``active: 0`` and zero sizes, like ``storage_info`` after a failed
activation.

A storage with ``is_mountpoint`` (``yes``/``1``: its ``path``; or a path of its own) is active
only while that path is a mount target in the node's mount table (``/proc/self/mounts``, or the
scenario's ``mounts_file``), as PVE's dir plugin checks on activation: an unplugged USB disk's
storage is offline, never the empty directory underneath.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import attrs

from felhom_agent.sim.pve.scenario_storage import BackupSpec, StorageSpec
from felhom_agent.utc import format_utc

__all__ = ["FILE_STAMP", "LOG_STAMP", "MOUNTS", "Backup", "SimStorage", "backup_volid",
           "compress_ext", "mount_path", "node_time", "synthetic_config"]

#: The node's mount table, unless a scenario names another file in the same format.
MOUNTS = Path("/proc/self/mounts")
_YES = frozenset({"yes", "on", "1", "true"})
_NO = frozenset({"no", "off", "0", "false"})


def mount_path(config: Mapping[str, Any]) -> str | None:
    """The path that must be mounted for a storage to be online (``is_mountpoint``), or None."""
    value = config.get("is_mountpoint")
    if value is None or str(value).lower() in _NO:
        return None
    if str(value).lower() in _YES:
        path = config.get("path")
        return None if path is None else str(path)
    return str(value)


def _mounted(table: Path, path: str) -> bool:
    try:
        text = table.read_text(encoding="utf-8", errors="surrogateescape")
    except OSError:
        return False
    target = path.rstrip("/") or "/"
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[1].replace("\\040", " ") == target:
            return True
    return False

_STD_RE = re.compile(
    r"^vzdump-(?P<type>lxc|openvz|qemu)-(?P<vmid>[1-9][0-9]{2,8})-"
    r"(?P<ts>\d{4}_\d{2}_\d{2}-\d{2}_\d{2}_\d{2})\.(?P<ext>tgz|(?:tar|vma)(?:\.(?:gz|lzo|zst|bz2))?)$"
)
_ANY_RE = re.compile(r"^vzdump-(?P<type>lxc|openvz|qemu)-.+\.(?P<ext>tgz|(?:tar|vma)"
                     r"(?:\.(?:gz|lzo|zst|bz2))?)$")
_VMID_RE = re.compile(r"-([1-9][0-9]{2,8})-")
_COMPRESS_EXT = {"0": "", "1": ".lzo", "lzo": ".lzo", "gzip": ".gz", "zstd": ".zst"}


def compress_ext(compress: str | None) -> str:
    """The file suffix vzdump appends for ``compress`` (none by default)."""
    return _COMPRESS_EXT.get(compress or "0", "")


#: PVE's node-local time stamps: dir backup file names and vzdump's log lines.
FILE_STAMP = "%Y_%m_%d-%H_%M_%S"
LOG_STAMP = "%Y-%m-%d %H:%M:%S"


def node_time(epoch: float, tz: ZoneInfo, form: str) -> str:
    """``epoch`` in the node's local time, in one of PVE's forms (:data:`FILE_STAMP`,
    :data:`LOG_STAMP`). Node-local text PVE writes, not the agent's UTC."""
    return dt.datetime.fromtimestamp(epoch, tz).strftime(form)


def backup_volid(spec: StorageSpec, gtype: str, vmid: int, ctime: int, *, tz: ZoneInfo,
                 compress: str | None) -> tuple[str, str]:
    """The (volid, format) a new backup gets on ``spec``."""
    if spec.type == "pbs":
        group = "vm" if gtype == "qemu" else "ct"
        return f"{spec.storage}:backup/{group}/{vmid}/{format_utc(ctime)}", f"pbs-{group}"
    stamp = node_time(ctime, tz, FILE_STAMP)
    ext = ("vma" if gtype == "qemu" else "tar") + compress_ext(compress)
    return f"{spec.storage}:backup/vzdump-{gtype}-{vmid}-{stamp}.{ext}", ext


@attrs.define
class Backup:
    """One backup volume as the storage holds it (``notes`` complete, not only line 1)."""

    storage: str
    volid: str
    vmid: int | None
    subtype: str
    format: str
    size: int | None
    ctime: int
    notes: str | None = None
    protected: bool = False
    encrypted: str | None = None
    verification: dict[str, str] | None = None
    config: str = ""
    std_name: bool = True
    pbs: bool = False

    @property
    def filename(self) -> str:
        """The part after ``<sid>:backup/``."""
        return self.volid.split(":backup/", 1)[1]

    def listing(self) -> dict[str, Any]:
        """The ``content`` listing item (notes: first line only)."""
        out: dict[str, Any] = {"volid": self.volid, "content": "backup", "format": self.format,
                               "size": self.size if self.size is not None else 1,
                               "ctime": self.ctime, "subtype": self.subtype}
        if self.vmid is not None:
            out["vmid"] = self.vmid
        if self.notes:
            out["notes"] = self.notes.split("\n", 1)[0]
        if self.protected:
            out["protected"] = 1
        if self.verification is not None:
            out["verification"] = dict(self.verification)
        if self.encrypted is not None:
            out["encrypted"] = self.encrypted
        return out


def synthetic_config(gtype: str, vmid: int) -> str:
    """The archived config of a scenario backup whose guest the scenario does not describe:
    a plausible minimal guest with its disk on ``local-lvm`` (what extractconfig returns and a
    restore brings back)."""
    mac = f"BC:24:11:{vmid >> 16 & 0xFF:02X}:{vmid >> 8 & 0xFF:02X}:{vmid & 0xFF:02X}"
    if gtype == "lxc":
        lines = ["arch: amd64", f"hostname: ct{vmid}", "memory: 512",
                 f"net0: name=eth0,bridge=vmbr0,hwaddr={mac},ip=dhcp,type=veth",
                 "ostype: debian", f"rootfs: local-lvm:vm-{vmid}-disk-0,size=8G", "swap: 512",
                 "unprivileged: 1"]
    else:
        uid = f"00000000-0000-4000-8000-{vmid:012d}"
        lines = ["boot: order=scsi0;net0", "cores: 1", "memory: 2048", f"name: vm{vmid}",
                 f"net0: virtio={mac},bridge=vmbr0", "ostype: l26",
                 f"scsi0: local-lvm:vm-{vmid}-disk-0,iothread=1,size=32G",
                 "scsihw: virtio-scsi-single", f"smbios1: uuid={uid}", f"vmgenid: {uid}"]
    return "\n".join(lines) + "\n"


class SimStorage:
    """A storage's live state; callers hold the node state condition.

    ``archived`` maps a scenario guest's vmid to (type, rendered config): a scenario backup of
    that guest without an explicit ``config`` holds that config; any other gets
    :func:`synthetic_config`. ``mounts`` is the mount table an ``is_mountpoint`` storage is
    checked against.
    """

    def __init__(self, spec: StorageSpec, tz: ZoneInfo, node: str,
                 archived: Mapping[int, tuple[str, str]] | None = None, *,
                 mounts: Path = MOUNTS) -> None:
        self._archived = dict(archived or {})
        self.spec = spec
        self.volumes: list[dict[str, Any]] = [dict(v) for v in spec.volumes]
        self.backups: list[Backup] = []
        self.used = spec.used
        self.avail = spec.avail if spec.avail is not None else max(0, spec.total - spec.used)
        self._reachable = spec.active
        self._mounts = mounts
        self.gc_pending = 0
        for b in spec.backups:
            self.backups.append(self._from_spec(b, tz, node))

    @property
    def name(self) -> str:
        """The storage id."""
        return self.spec.storage

    @property
    def active(self) -> bool:
        """Online: reachable (a fault may say not) and, with ``is_mountpoint``, mounted."""
        needed = mount_path(self.spec.config)
        return self._reachable and (needed is None or _mounted(self._mounts, needed))

    @active.setter
    def active(self, value: bool) -> None:
        self._reachable = value

    @property
    def is_pbs(self) -> bool:
        """Whether this is a Proxmox Backup Server storage."""
        return self.spec.type == "pbs"

    def has_content(self, content: str) -> bool:
        """Whether ``content`` is among the storage's content types."""
        return content in self.spec.content.split(",")

    def _from_spec(self, b: BackupSpec, tz: ZoneInfo, node: str) -> Backup:
        volid, fmt = backup_volid(self.spec, b.type, b.vmid, b.ctime, tz=tz, compress="zstd")
        subtype, vmid, std = b.type, b.vmid, True
        if b.volid is not None and not self.is_pbs:
            volid = b.volid if ":" in b.volid else f"{self.name}:backup/{b.volid}"
            name = volid.split(":backup/", 1)[-1]
            std_m, any_m = _STD_RE.match(name), _ANY_RE.match(name)
            std = std_m is not None
            subtype = any_m["type"] if any_m else "unknown"
            fmt = any_m["ext"] if any_m else "unknown"
            vm_m = _VMID_RE.search(name)
            vmid = int(vm_m[1]) if vm_m else b.vmid
        verification = None
        if b.verification is not None:
            verification = {"state": b.verification,
                            "upid": f"UPID:pbs:00000A1B:0000C0DE:00000000:"
                                    f"{b.ctime + 3600:08X}:verificationjob::root@pam:"}
        return Backup(storage=self.name, volid=volid, vmid=vmid, subtype=subtype, format=fmt,
                      size=b.size, ctime=b.ctime, notes=b.notes, protected=b.protected,
                      encrypted=b.encrypted, verification=verification,
                      config=b.config or self._default_config(b.type, b.vmid),
                      std_name=std, pbs=self.is_pbs)

    def _default_config(self, gtype: str, vmid: int) -> str:
        known = self._archived.get(vmid)
        if known is not None and known[0] == gtype:
            return known[1]
        return synthetic_config(gtype, vmid)

    # -- capacity -------------------------------------------------------------------------
    def consume(self, size: int) -> None:
        """A new backup of ``size`` bytes was written."""
        self.used += size
        self.avail = max(0, self.avail - size)

    def release(self, size: int | None) -> None:
        """A backup was removed: dir space comes back now, PBS space at garbage collection."""
        if not size:
            return
        if self.is_pbs:
            self.gc_pending += size
            return
        self.used = max(0, self.used - size)
        self.avail += size

    def run_gc(self) -> int:
        """PBS garbage collection: free what deletions left behind; returns the bytes."""
        freed, self.gc_pending = self.gc_pending, 0
        self.used = max(0, self.used - freed)
        self.avail += freed
        return freed

    # -- views ----------------------------------------------------------------------------
    def status_entry(self) -> dict[str, Any]:
        """The ``GET /nodes/{node}/storage`` item (zeros and ``active: 0`` when inactive)."""
        s = self.spec
        out: dict[str, Any] = {"storage": s.storage, "type": s.type, "content": s.content,
                               "enabled": int(s.enabled), "shared": int(s.shared),
                               "active": 0, "total": 0, "used": 0, "avail": 0}
        if self.active and s.enabled:
            total = s.total
            out.update(active=1, total=total, used=self.used, avail=self.avail,
                       used_fraction=round(self.used / total, 6) if total else 0)
        return out

    def config_entry(self) -> dict[str, Any]:
        """The ``GET /storage`` item: storage.cfg keys plus ``digest``-less metadata."""
        s = self.spec
        out: dict[str, Any] = {"storage": s.storage, "type": s.type, "content": s.content}
        if s.shared:
            out["shared"] = 1
        if not s.enabled:
            out["disable"] = 1
        out.update(s.config)
        return out

    def find(self, volid: str) -> Backup | None:
        """The backup with exactly this volid."""
        return next((b for b in self.backups if b.volid == volid), None)

    def vmid_matches(self, backup: Backup, vmid: int) -> bool:
        """The content listing's ``vmid`` filter (a filename regex on dir, backup-id on PBS)."""
        if self.is_pbs:
            return backup.vmid == vmid
        return re.search(rf"\S+-{vmid}-\S+", backup.filename) is not None
