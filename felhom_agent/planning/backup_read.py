"""Reading what a pass needs to know about backups: storages, listings, vzdump tasks, PBS.

The cost of a pass does not grow with the number of guests (``docs/architecture.md``,
"Backup policy"): one storage listing, one content listing per active backup storage, one
read of the node's recent vzdump tasks, one of the storage configuration and one of the
token's privileges. A listing that
fails is recorded per storage (the planner then blocks the guests of that storage: a listing
that could not be read is never "no backups"); a storage the token cannot list is simply not
in the node's listing, and the policy check says so.
"""

from __future__ import annotations

import datetime as dt
from typing import Protocol

from felhom_agent.planning.backups import BackupFacts
from felhom_agent.proxmox.backup_models import BackupVolume, StorageConfig
from felhom_agent.proxmox.errors import PveError
from felhom_agent.proxmox.models import Permissions, StorageInfo, TaskList

__all__ = ["TASK_HORIZON_S", "BackupReader", "read_backup_facts"]

#: How far back the vzdump task list is read (a failed backup is reported until a newer one).
TASK_HORIZON_S = 8 * 24 * 3600


class BackupReader(Protocol):
    """The reads (the :class:`~felhom_agent.proxmox.ProxmoxClient`)."""

    def storages(self, *, content: str | None = None) -> tuple[StorageInfo, ...]:
        """``GET /nodes/{node}/storage``."""
        ...

    def backups(self, storage: str, vmid: int | None = None) -> tuple[BackupVolume, ...]:
        """``GET .../storage/{storage}/content?content=backup``."""
        ...

    def storage_config(self, *, storage_type: str | None = None) -> tuple[StorageConfig, ...]:
        """``GET /storage``."""
        ...

    def permissions(self, path: str | None = None) -> Permissions:
        """``GET /access/permissions``."""
        ...

    def tasks(self, *, source: str = "archive", vmid: int | None = None,
              typefilter: str | None = None, userfilter: str | None = None,
              since: int | None = None, until: int | None = None,
              errors: bool | None = None, start: int = 0, limit: int = 50) -> TaskList:
        """``GET /nodes/{node}/tasks``."""
        ...


def read_backup_facts(client: BackupReader, *, now: float, tz: dt.tzinfo, min_keep: int,
                      margin_pct: int) -> BackupFacts:
    """Read the backup facts of one pass.

    Raises:
        PveError: the storage listing itself failed (nothing can be planned).
    """
    storages = {s.storage: s for s in client.storages()}
    volumes: dict[str, tuple[BackupVolume, ...]] = {}
    errors: dict[str, str] = {}
    for sid, info in sorted(storages.items()):
        if "backup" not in info.content or not info.enabled or not info.active:
            continue
        try:
            volumes[sid] = client.backups(sid)
        except PveError as err:
            errors[sid] = str(err)
    try:
        tasks = client.tasks(source="all", typefilter="vzdump",
                             since=int(now) - TASK_HORIZON_S, limit=500).entries
    except PveError as err:
        errors["tasks"] = str(err)
        tasks = ()
    try:
        permissions: Permissions | None = client.permissions()
    except PveError as err:
        errors["permissions"] = str(err)
        permissions = None
    try:
        configs = client.storage_config()
    except PveError as err:
        errors["storage.cfg"] = str(err)
        configs = ()
    return BackupFacts(now=now, tz=tz, storages=storages, volumes=volumes, errors=errors,
                       min_keep=min_keep, margin_pct=margin_pct, tasks=tasks, configs=configs,
                       permissions=permissions)
