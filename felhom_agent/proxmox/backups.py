"""The client's storage and backup calls (mixed into :class:`~felhom_agent.proxmox.ProxmoxClient`).

Rules the calls encode, so callers cannot get them wrong:

* :meth:`BackupCalls.vzdump` backs up **one** guest and always names the storage. PVE may
  answer the plain string ``OK`` instead of a UPID (no selected guest is on this node):
  that raises :class:`~felhom_agent.proxmox.errors.NoGuestSelected`, never a success.
  A UPID is only the start: the task may end ``job errors``
  (:meth:`BackupCalls.vzdump_log` tells which guest failed and why) and a finished backup is
  only proven by finding it in :meth:`BackupCalls.backups`.
* The backup listing is silently filtered by PVE: without Datastore.Allocate on the storage,
  or Datastore.AllocateSpace plus VM.Backup on the guest, a backup is simply not listed.
* Retention is PVE's ``prune-backups`` option string (``keep-last=3,keep-daily=7``,
  ``keep-all=1``); the desired-state policy builds it, the client only checks its shape.
* Deleting and pruning are tasks (``imgdel``, ``prunebackups``): wait on the Dispatch.
* A storage PVE could not activate has no sizes (:class:`StorageInfo` ``reachable`` False).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from felhom_agent.proxmox.backup_models import (
    BackupDetails,
    BackupVolume,
    PruneMark,
    StorageConfig,
)
from felhom_agent.proxmox.errors import NoGuestSelected, ParameterError, ServerError
from felhom_agent.proxmox.models import GuestType, StorageInfo, StorageVolume, TaskLog
from felhom_agent.proxmox.tasks import Dispatch
from felhom_agent.proxmox.upid import Upid
from felhom_agent.proxmox.vzdumplog import VzdumpLog, parse_vzdump_log
from felhom_agent.proxmox.wire import (
    ConfigValue,
    as_dict,
    as_list,
    check_vmid,
    seg,
    volume_seg,
)

__all__ = ["BackupCalls"]

#: vzdump's ``mode`` values (how a running guest is treated; a stopped one is always ``stop``).
_MODE = re.compile(r"snapshot|suspend|stop")
_COMPRESS = frozenset({"0", "1", "gzip", "lzo", "zstd"})
_MAX_NOTES_TEMPLATE = 1024
#: One option of PVE's ``prune-backups`` string: ``keep-<known option>=<count>``.
_KEEP_ITEM = re.compile(r"keep-(last|hourly|daily|weekly|monthly|yearly|all)=([0-9]{1,9})")


def _keep_param(keep: str) -> str:
    """``keep`` unchanged when it is a well-formed ``prune-backups`` string.

    Raises:
        ParameterError: not a comma-separated list of ``keep-<option>=<count>`` with a known
            option, an option twice, or ``keep-all`` with other options (nothing sent).
    """
    def bad(why: str) -> ParameterError:
        return ParameterError(f"invalid prune-backups {keep!r}: {why}", status=None,
                              errors={"prune-backups": why})

    if not isinstance(keep, str) or not keep:
        raise bad("need keep-<option>=<count>[,...]")
    seen: set[str] = set()
    for item in keep.split(","):
        match = _KEEP_ITEM.fullmatch(item)
        if match is None:
            raise bad(f"{item!r} is not keep-<last|hourly|daily|weekly|monthly|yearly|all>"
                      "=<count>")
        if match.group(1) in seen:
            raise bad(f"keep-{match.group(1)} given twice")
        seen.add(match.group(1))
    if "all" in seen and len(seen) > 1:
        raise bad("keep-all cannot be combined with other options")
    return keep


def _storage_of(volid: str) -> str:
    sid, sep, _ = volid.partition(":")
    if not sep or not sid:
        raise ParameterError(f"not a volume id: {volid!r}", status=None,
                             errors={"volume": "need <storage>:<volume>"})
    return sid


class BackupCalls:
    """Storage, backup, retention and vzdump calls; needs the client's plumbing below."""

    node: str

    # -- provided by ProxmoxClient ------------------------------------------------------------
    def _get(self, path: str, params: Mapping[str, ConfigValue | None] | None = None) -> Any:
        raise NotImplementedError

    def _mutate(self, method: str, path: str,
                params: Mapping[str, ConfigValue | None] | None = None) -> Dispatch:
        raise NotImplementedError

    def _call(self, method: str, path: str,
              params: Mapping[str, ConfigValue | None] | None = None) -> Any:
        raise NotImplementedError

    def _node_path(self) -> str:
        raise NotImplementedError

    def task_log(self, upid: Upid | str, *, start: int = 0, limit: int = 50) -> TaskLog:
        """A page of a task log (implemented by the client)."""
        raise NotImplementedError

    # -- storages -----------------------------------------------------------------------------
    def storages(self, *, content: str | None = None) -> tuple[StorageInfo, ...]:
        """``GET /nodes/{node}/storage`` (storages the token may audit; ``content=backup``
        lists backup targets). Every call makes PVE activate every storage first."""
        path = f"{self._node_path()}/storage"
        entries = as_list(self._get(path, {"content": content}), path)
        return tuple(StorageInfo.from_api(e) for e in entries)

    def storage_status(self, storage: str) -> StorageInfo:
        """``GET /nodes/{node}/storage/{storage}/status``."""
        path = f"{self._node_path()}/storage/{seg(storage)}/status"
        return StorageInfo.from_api(as_dict(self._get(path), path), storage)

    def storage_config(self, *, storage_type: str | None = None) -> tuple[StorageConfig, ...]:
        """``GET /storage``: storage.cfg entries the token may audit (``storage_type="pbs"``).

        Use this, not ``GET /storage/{id}``: that one needs Datastore.Allocate.
        """
        entries = as_list(self._get("/storage", {"type": storage_type}), "/storage")
        return tuple(StorageConfig.from_api(e) for e in entries)

    def storage_content(
        self, storage: str, *, content: str | None = None, vmid: int | None = None
    ) -> tuple[StorageVolume, ...]:
        """``GET /nodes/{node}/storage/{storage}/content`` (each volume access-filtered)."""
        path = f"{self._node_path()}/storage/{seg(storage)}/content"
        entries = as_list(self._get(path, {"content": content, "vmid": vmid}), path)
        return tuple(StorageVolume.from_api(e) for e in entries)

    # -- backups ------------------------------------------------------------------------------
    def backups(self, storage: str, vmid: int | None = None) -> tuple[BackupVolume, ...]:
        """The backups on ``storage`` (of ``vmid``), newest last; silently filtered by PVE."""
        path = f"{self._node_path()}/storage/{seg(storage)}/content"
        params: dict[str, ConfigValue | None] = {
            "content": "backup", "vmid": None if vmid is None else check_vmid(vmid)}
        vols = (BackupVolume.from_api(e, storage) for e in as_list(self._get(path, params), path))
        return tuple(sorted(vols, key=lambda b: (b.ctime or 0, b.volid)))

    def backup_details(self, volid: str) -> BackupDetails:
        """``GET .../content/{volume}``: path, size, format, the complete notes, protected."""
        path = f"{self._node_path()}/storage/{seg(_storage_of(volid))}/content/{volume_seg(volid)}"
        return BackupDetails.from_api(volid, as_dict(self._get(path), path))

    def update_backup(self, storage: str, volid: str, *, notes: str | None = None,
                      protected: bool | None = None) -> None:
        """``PUT .../content/{volume}``: set notes and/or protection (synchronous).

        Protecting counts against ``max-protected-backups`` (5 per guest without
        Datastore.Allocate): over it PVE answers a ServerError naming the limit.
        """
        if notes is None and protected is None:
            raise ParameterError("nothing to update", status=None, errors={})
        path = f"{self._node_path()}/storage/{seg(storage)}/content/{volume_seg(volid)}"
        self._call("PUT", path, {"notes": notes, "protected": protected})

    def delete_backup(self, storage: str, volid: str) -> Dispatch:
        """``DELETE .../content/{volume}``: an ``imgdel`` task (id ``<vmid>@<storage>``);
        a protected backup makes the task fail (``cannot remove protected volume``)."""
        path = f"{self._node_path()}/storage/{seg(storage)}/content/{volume_seg(volid)}"
        return self._mutate("DELETE", path)

    def extract_config(self, volid: str) -> str:
        """``GET /nodes/{node}/vzdump/extractconfig``: the guest config inside a backup."""
        path = f"{self._node_path()}/vzdump/extractconfig"
        data = self._get(path, {"volume": volid})
        if not isinstance(data, str):
            raise ServerError(f"expected a string, got {type(data).__name__}", status=200,
                              path=path)
        return data

    # -- retention ----------------------------------------------------------------------------
    def _prune_params(self, vmid: int | None, kind: GuestType | str | None,
                      keep: str) -> dict[str, ConfigValue | None]:
        return {"vmid": None if vmid is None else check_vmid(vmid),
                "type": None if kind is None else GuestType(kind).value,
                "prune-backups": _keep_param(keep)}

    def prune_dry_run(self, storage: str, vmid: int | None, kind: GuestType | str | None,
                      keep: str) -> tuple[PruneMark, ...]:
        """``GET .../prunebackups``: what a prune with ``keep`` (a ``prune-backups`` string)
        would keep or remove; lists every backup, unfiltered by per-guest privileges.

        Raises:
            ParameterError: a malformed ``keep`` (nothing sent) or PVE's 400.
        """
        path = f"{self._node_path()}/storage/{seg(storage)}/prunebackups"
        entries = as_list(self._get(path, self._prune_params(vmid, kind, keep)), path)
        return tuple(PruneMark.from_api(e) for e in entries)

    def prune(self, storage: str, vmid: int | None, kind: GuestType | str | None,
              keep: str) -> Dispatch:
        """``DELETE .../prunebackups``: a ``prunebackups`` task removing the dry run's
        ``remove`` marks (protected backups are never removed).

        Raises:
            ParameterError: a malformed ``keep`` (nothing sent) or PVE's 400.
        """
        path = f"{self._node_path()}/storage/{seg(storage)}/prunebackups"
        return self._mutate("DELETE", path, self._prune_params(vmid, kind, keep))

    # -- vzdump -------------------------------------------------------------------------------
    def vzdump(self, vmid: int, storage: str, *, mode: str = "snapshot",
               notes_template: str | None = None, protected: bool | None = None,
               compress: str | None = "zstd", remove: bool | None = None) -> Dispatch:
        """``POST /nodes/{node}/vzdump`` for one guest to ``storage``: a ``vzdump`` task.

        ``mode`` is ``snapshot``, ``suspend`` or ``stop`` (the desired state's policy mode
        as a plain string). ``remove`` None leaves PVE's default (prune after the backup by the
        storage's retention, if it has one); False keeps everything but then a finite storage
        retention makes vzdump refuse once the guest has that many backups.

        Raises:
            NoGuestSelected: PVE answered ``OK``: the guest is not on this node, nothing ran.
            ParameterError: a bad argument (before sending) or PVE's 400.
            PermissionDenied: no Datastore.AllocateSpace on the storage (VM.Backup is
                checked inside the task).
        """
        if not isinstance(mode, str) or _MODE.fullmatch(mode) is None:
            raise ParameterError(f"invalid vzdump mode {mode!r}: must be snapshot, suspend "
                                 "or stop", status=None, errors={"mode": "snapshot|suspend|stop"})
        if compress is not None and compress not in _COMPRESS:
            raise ParameterError(f"invalid compression {compress!r}", status=None,
                                 errors={"compress": "0|1|gzip|lzo|zstd"})
        if notes_template is not None and (
                "\n" in notes_template or len(notes_template) > _MAX_NOTES_TEMPLATE):
            raise ParameterError("notes template must be one line of at most 1024 characters",
                                 status=None, errors={"notes-template": "one line, <= 1024"})
        path = f"{self._node_path()}/vzdump"
        data = self._call("POST", path, {
            "vmid": check_vmid(vmid), "storage": storage, "mode": str(mode), "compress": compress,
            "notes-template": notes_template, "protected": protected, "remove": remove})
        if data == "OK":
            raise NoGuestSelected(
                f"vzdump of {vmid} answered OK instead of a task: the guest is not on node "
                f"{self.node}; nothing was backed up", vmids=(vmid,), node=self.node, path=path)
        if data is None:
            raise ServerError("vzdump answered null instead of a task id", status=200, path=path)
        return Dispatch.from_data(data)

    def task_log_tail(self, upid: Upid | str, lines: int = 50) -> TaskLog:
        """The last ``lines`` lines of a task log: read ``total``, then from ``total - lines``
        (one call when the log is that short)."""
        first = self.task_log(upid, start=0, limit=lines)
        if first.total <= lines:
            return first
        return self.task_log(upid, start=first.total - lines, limit=lines)

    def vzdump_log(self, upid: Upid | str, lines: int = 200) -> VzdumpLog:
        """The per-guest results and errors in the tail of a vzdump task's log."""
        return parse_vzdump_log(line.t for line in self.task_log_tail(upid, lines).lines)
