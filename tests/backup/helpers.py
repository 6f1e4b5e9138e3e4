"""Building the client's backup and storage models for the pure policy tests."""

from __future__ import annotations

from felhom_agent.proxmox.backup_models import BackupVolume
from felhom_agent.proxmox.models import GuestType, StorageInfo


def backup(volid: str, *, storage: str | None = None, vmid: int | None = 101,
           subtype: str = "lxc", ctime: int | None = 1_714_525_200, size: int | None = 100,
           protected: bool = False, notes: str | None = None) -> BackupVolume:
    """A listed backup (``subtype`` ``unknown`` is PVE's "could not tell": None)."""
    return BackupVolume(
        volid=volid, storage=storage or volid.split(":", 1)[0], vmid=vmid,
        subtype=None if subtype == "unknown" else GuestType(subtype),
        format="pbs-ct" if volid.startswith("pbs") else "tar.zst", size=size, ctime=ctime,
        notes=notes, protected=protected, encrypted=None, verification=None,
        verification_upid=None)


def storage(name: str, type_: str, content: str = "backup", *, active: bool = True,
            enabled: bool = True, avail: int | None = None) -> StorageInfo:
    """A storage of the node's listing (sizes None when not active, as the client has it)."""
    return StorageInfo(storage=name, type=type_, content=tuple(c for c in content.split(",") if c),
                       active=active, enabled=enabled, shared=False,
                       total=None if avail is None else avail * 2, used=None, avail=avail)
