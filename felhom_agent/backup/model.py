"""Plain values the backup policy layer works on: backup volumes and storage facts.

They mirror what PVE's storage listing and content listing say, reduced to what the policy
needs. The client's richer models are converted into these at the edge, so that everything in
:mod:`felhom_agent.backup` stays a pure function of plain values.
"""

from __future__ import annotations

from typing import Final

import attrs

__all__ = ["SUBTYPES", "BackupVolume", "StorageFacts", "parse_content"]

#: What PVE reports as a backup's ``subtype``: the guest type, or ``unknown`` for files that do
#: not follow vzdump's naming (those are never counted for a guest and never pruned).
SUBTYPES: Final = ("qemu", "lxc", "unknown")


def _content(value: frozenset[str] | str | tuple[str, ...] | list[str]) -> frozenset[str]:
    return parse_content(value) if isinstance(value, str) else frozenset(value)


def parse_content(text: str) -> frozenset[str]:
    """PVE's ``content`` list (``"images,rootdir,backup"``) as a set; blanks are dropped."""
    return frozenset(part.strip() for part in text.split(",") if part.strip())


@attrs.frozen
class BackupVolume:
    """One backup in a storage's content listing.

    Attributes:
        volid: ``<storage>:backup/...`` as PVE names it.
        storage: the storage id it was listed from.
        vmid: the guest id PVE parsed from the name (``None`` when it could not).
        subtype: ``qemu``, ``lxc`` or ``unknown`` (PVE's listing field).
        ctime: creation time, POSIX seconds (from the name for standard names).
        size: bytes; PBS reports 1 when it does not know (see :attr:`size_known`).
        protected: PVE refuses to remove it, and pruning neither removes nor counts it.
        notes: the first line of its notes, if any.
    """

    volid: str
    storage: str
    vmid: int | None
    subtype: str
    ctime: int
    size: int | None = None
    protected: bool = False
    notes: str | None = None

    @property
    def size_known(self) -> bool:
        """Whether :attr:`size` is a real size (PBS uses 1 for "unknown or incomplete")."""
        return self.size is not None and self.size > 1

    def belongs_to(self, vmid: int, guest_type: str) -> bool:
        """Whether this is a backup of that guest: same vmid *and* same guest type.

        A vmid may be reused by a guest of the other type after the first one was destroyed,
        so the vmid alone would attribute an old container's backups to a new VM.
        """
        return self.vmid == vmid and self.subtype == guest_type


@attrs.frozen
class StorageFacts:
    """What the node's storage listing says about one storage.

    Attributes:
        storage: the storage id.
        type: the storage plugin (``dir``, ``lvmthin``, ``pbs``, ``nfs``, ...).
        content: the content types it holds (``backup``, ``images``, ``rootdir``, ...).
        enabled: ``False`` when the storage is disabled in the storage configuration.
        active: whether PVE could activate it (``None``: not reported).
        avail: free bytes (``None``: not reported).
        total: size in bytes (``None``: not reported).
    """

    storage: str
    type: str
    content: frozenset[str] = attrs.field(converter=_content, factory=frozenset)
    enabled: bool = True
    active: bool | None = None
    avail: int | None = None
    total: int | None = None

    @property
    def holds_backups(self) -> bool:
        """Whether ``backup`` is one of its content types."""
        return "backup" in self.content

    @property
    def is_pbs(self) -> bool:
        """Whether it is a Proxmox Backup Server datastore."""
        return self.type == "pbs"
