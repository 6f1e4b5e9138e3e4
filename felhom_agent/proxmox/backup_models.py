"""Typed backup results: backup volumes, storage.cfg entries (PBS ones), prune marks.

What PVE's answers mean, so callers never have to re-learn it:

* a backup belongs to a guest by ``vmid`` **and** ``subtype`` (a vmid can be reused by the
  other guest type); ``subtype`` None means PVE could not tell (a renamed file);
* a PBS ``size`` of 1 (or less) means PBS reported no size: :attr:`BackupVolume.size` is None
  then, never a fake number;
* ``verification`` absent means the snapshot was never verified (``verification`` None here);
* ``encrypted`` is the key fingerprint, or ``"1"`` when PVE only knows every file is encrypted;
* the listing shows the first line of the notes only; :class:`BackupDetails` has them all.

These are the one model of a backup volume and a prune mark in the agent: the pure policy
layer (:mod:`felhom_agent.backup`) works on them directly.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from typing import Any

import attrs

from felhom_agent.proxmox.models import GuestType

__all__ = ["BackupDetails", "BackupVolume", "PbsStorage", "PruneMark", "PruneMarkKind",
           "StorageConfig"]


def _int(value: Any) -> int | None:
    try:
        return None if value is None or value == "" else int(float(value))
    except (TypeError, ValueError):
        return None


def _opt_str(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def _flag(value: Any) -> bool:
    return bool(_int(value))


def _guest_type(value: Any) -> GuestType | None:
    try:
        return GuestType(str(value))
    except ValueError:
        return None


_VOLID_TYPE = re.compile(r":backup/(?:vzdump-(qemu|lxc)-\d+-|(vm|ct)/\d+/)")


def guest_type_of_volid(volid: str) -> GuestType | None:
    """The guest type a backup volid names (``vzdump-lxc-…`` / ``ct/…``), or None.

    For a backup whose guest no longer exists, the name is the only place the type is left.
    """
    m = _VOLID_TYPE.search(volid)
    if m is None:
        return None
    word = m.group(1) or {"vm": "qemu", "ct": "lxc"}[m.group(2)]
    return GuestType(word)


@attrs.frozen
class BackupVolume:
    """One backup of ``GET .../storage/{storage}/content?content=backup``.

    Attributes:
        volid: ``<storage>:backup/...`` (or the PBS snapshot name) as PVE names it.
        storage: the storage it is on.
        vmid: the guest id PVE parsed from the name (``None`` when it could not).
        subtype: the guest type; ``None`` when PVE could not tell (``unknown``, a renamed
            file): such a backup belongs to no guest and is never pruned.
        format: ``tar.zst``, ``vma.zst``, ``pbs-ct``, ``pbs-vm``, ...
        size: bytes; ``None`` when unknown (PBS reports 1 then).
        ctime: creation time, POSIX seconds; ``None`` when PVE gave none (such a backup
            cannot be dated: the policy layer neither counts it as a guest's newest backup
            nor lets its own keep marking prune it).
        notes: the first line of its notes, if any.
        protected: PVE refuses to remove it; pruning neither removes nor counts it.
        encrypted: the key fingerprint, ``"1"``, or ``None`` (not encrypted).
        verification: the PBS verification state (``None``: never verified).
        verification_upid: the task that verified it.
    """

    volid: str
    storage: str
    vmid: int | None
    subtype: GuestType | None
    format: str
    size: int | None
    ctime: int | None
    notes: str | None
    protected: bool
    encrypted: str | None
    verification: str | None
    verification_upid: str | None

    @property
    def pbs(self) -> bool:
        """Whether this is a Proxmox Backup Server snapshot."""
        return self.format.startswith("pbs-")

    @property
    def size_known(self) -> bool:
        """Whether :attr:`size` is a real size (PBS uses 1 for "unknown or incomplete")."""
        return self.size is not None and self.size > 1

    def belongs_to(self, vmid: int, guest_type: GuestType | str) -> bool:
        """Whether this is a backup of that guest: same vmid *and* same guest type.

        A vmid may be reused by a guest of the other type after the first one was destroyed,
        so the vmid alone would attribute an old container's backups to a new VM. A backup
        whose type PVE could not tell (``subtype`` None) belongs to no guest.
        """
        return self.subtype is not None and self.vmid == vmid and self.subtype == guest_type

    @classmethod
    def from_api(cls, d: Mapping[str, Any], storage: str) -> BackupVolume:
        """Build from one listing item (``storage`` is the listed storage)."""
        volid = str(d.get("volid", ""))
        fmt = str(d.get("format", ""))
        size = _int(d.get("size"))
        if fmt.startswith("pbs-") and size is not None and size <= 1:
            size = None
        verification = d.get("verification")
        state = upid = None
        if isinstance(verification, Mapping):
            state, upid = _opt_str(verification.get("state")), _opt_str(verification.get("upid"))
        return cls(
            volid=volid, storage=volid.split(":", 1)[0] if ":" in volid else storage,
            vmid=_int(d.get("vmid")), subtype=_guest_type(d.get("subtype")), format=fmt,
            size=size, ctime=_int(d.get("ctime")), notes=_opt_str(d.get("notes")),
            protected=_flag(d.get("protected")), encrypted=_opt_str(d.get("encrypted")),
            verification=state, verification_upid=upid,
        )


@attrs.frozen
class BackupDetails:
    """``GET .../content/{volume}``: path, sizes, format, the complete notes, protection."""

    volid: str
    path: str
    size: int | None
    used: int | None
    format: str
    notes: str | None
    protected: bool

    @classmethod
    def from_api(cls, volid: str, d: Mapping[str, Any]) -> BackupDetails:
        """Build from the API object."""
        return cls(volid=volid, path=str(d.get("path", "")), size=_int(d.get("size")),
                   used=_int(d.get("used")), format=str(d.get("format", "")),
                   notes=_opt_str(d.get("notes")), protected=_flag(d.get("protected")))


@attrs.frozen
class PbsStorage:
    """The storage.cfg side of a PBS storage: where it is and how it is trusted/encrypted."""

    storage: str
    server: str
    port: int | None
    datastore: str
    namespace: str | None
    username: str | None
    fingerprint: str | None
    encryption: str | None
    master_pubkey: bool

    @property
    def encrypted(self) -> bool:
        """Whether backups to this storage are encrypted client-side."""
        return self.encryption is not None


@attrs.frozen
class StorageConfig:
    """One ``GET /storage`` entry (storage.cfg); ``pbs`` is set for PBS storages."""

    storage: str
    type: str
    content: tuple[str, ...]
    path: str | None
    prune_backups: str | None
    max_protected_backups: int | None
    is_mountpoint: str | None
    nodes: tuple[str, ...]
    disabled: bool
    shared: bool
    pbs: PbsStorage | None

    @classmethod
    def from_api(cls, d: Mapping[str, Any]) -> StorageConfig:
        """Build from one entry (unknown keys ignored)."""
        storage = str(d.get("storage", ""))
        stype = str(d.get("type", ""))
        pbs = None
        if stype == "pbs":
            pbs = PbsStorage(
                storage=storage, server=str(d.get("server", "")), port=_int(d.get("port")),
                datastore=str(d.get("datastore", "")), namespace=_opt_str(d.get("namespace")),
                username=_opt_str(d.get("username")), fingerprint=_opt_str(d.get("fingerprint")),
                encryption=_opt_str(d.get("encryption-key")),
                master_pubkey=_flag(d.get("master-pubkey")),
            )
        return cls(
            storage=storage, type=stype,
            content=tuple(c for c in str(d.get("content") or "").split(",") if c),
            path=_opt_str(d.get("path")), prune_backups=_opt_str(d.get("prune-backups")),
            max_protected_backups=_int(d.get("max-protected-backups")),
            is_mountpoint=_opt_str(d.get("is_mountpoint")),
            nodes=tuple(n for n in str(d.get("nodes") or "").split(",") if n),
            disabled=_flag(d.get("disable")), shared=_flag(d.get("shared")), pbs=pbs,
        )


class PruneMarkKind(enum.StrEnum):
    """What a prune would do with one backup."""

    KEEP = "keep"
    REMOVE = "remove"
    PROTECTED = "protected"
    RENAMED = "renamed"


@attrs.frozen
class PruneMark:
    """What a prune does with one backup: a row of PVE's dry run, or of the agent's own
    prediction (:func:`felhom_agent.backup.prune.mark_backups`).

    Attributes:
        volid: the backup.
        ctime: its creation time, POSIX seconds (``None``: not dated).
        type: ``qemu``, ``lxc`` or ``unknown``.
        vmid: its guest id (``None`` when PVE could not tell).
        mark: keep, remove, protected or renamed.
    """

    volid: str
    ctime: int | None
    type: str
    vmid: int | None
    mark: PruneMarkKind

    @classmethod
    def from_api(cls, d: Mapping[str, Any]) -> PruneMark:
        """Build from one dry-run entry; an unknown mark is treated as ``keep``."""
        try:
            mark = PruneMarkKind(str(d.get("mark")))
        except ValueError:
            mark = PruneMarkKind.KEEP
        return cls(volid=str(d.get("volid", "")), ctime=_int(d.get("ctime")),
                   type=str(d.get("type", "")), vmid=_int(d.get("vmid")), mark=mark)
