"""The client's restore, clone, template and vmid calls (mixed into
:class:`~felhom_agent.proxmox.ProxmoxClient`); the PVE behaviour behind them is in
``docs/pve-facts.md``, "Restore and provisioning".

Rules the calls encode, so callers cannot get them wrong:

* :meth:`ProvisionCalls.restore` sends a container restore as ``POST /nodes/{node}/lxc`` with
  ``ostemplate=<volid>`` and ``restore=1`` and a VM restore as ``POST /nodes/{node}/qemu``
  with ``archive=<volid>``; a backup that is visibly of the other guest type raises
  :class:`~felhom_agent.proxmox.errors.WrongGuestType` before anything is sent. ``force`` is
  only sent when asked: over an existing guest PVE frees the old disks before it copies data,
  and a failed container overwrite destroys the container -- the caller's safety backup comes
  first. ``storage`` should always be given for a container: PVE's default is ``local``, which
  cannot hold container disks on a stock node.
* A restore or clone answers a UPID; the result is proven only by the target guest (it exists
  and holds no lock). A clone's UPID names the **source** vmid, so a crashed caller must look
  for the target guest, not for a task by the target's vmid.
* :meth:`ProvisionCalls.convert_to_template` accepts both answers: qemu's ``qmtemplate`` UPID
  and a container's ``null`` (its ``vztemplate`` task runs on: the call looks that task up and
  returns it, else a synchronous Dispatch -- then ``template`` in the guest status tells when
  it is done).
* :meth:`ProvisionCalls.next_id` reserves nothing; :meth:`ProvisionCalls.vmid_free` asks PVE
  whether one vmid is free across the cluster at that moment.

Refusals come back typed (``GuestExists``, ``GuestRunning``, ``GuestProtected``, ``Locked``,
``PermissionDenied``, ``WrongGuestType``); a task's failure text is classified by
:func:`failure_kind` the same way, so callers branch on kinds, never on strings.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from typing import Any

from felhom_agent.proxmox.backup_models import BackupVolume
from felhom_agent.proxmox.errors import (
    GuestExists,
    GuestProtected,
    GuestRunning,
    Locked,
    ParameterError,
    PermissionDenied,
    ServerError,
    TaskFailed,
    WrongGuestType,
)
from felhom_agent.proxmox.models import GuestType, TaskList
from felhom_agent.proxmox.tasks import Dispatch
from felhom_agent.proxmox.upid import parse_upid
from felhom_agent.proxmox.wire import ConfigValue, check_vmid
from felhom_agent.storageids import STORAGE_ID_RULE, is_storage_id

__all__ = ["FailureKind", "ProvisionCalls", "archive_guest_type", "failure_kind"]

_DIR_ARCHIVE = re.compile(r":backup/vzdump-(lxc|openvz|qemu)-")
_PBS_ARCHIVE = re.compile(r":backup/(ct|vm)/")
_NAME_RE = re.compile(r"[a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?(\.[a-zA-Z0-9]([a-zA-Z0-9\-]*"
                      r"[a-zA-Z0-9])?)*")
_POOL_RE = re.compile(r"[A-Za-z0-9\-_]+")


def archive_guest_type(archive: str | BackupVolume) -> GuestType | None:
    """The guest type of a backup: its listed ``subtype``, else what its volid says (``None``
    when neither tells, e.g. a renamed file)."""
    if isinstance(archive, BackupVolume):
        if archive.subtype is not None:
            return archive.subtype
        archive = archive.volid
    m = _DIR_ARCHIVE.search(archive)
    if m is not None:
        return GuestType.QEMU if m[1] == "qemu" else GuestType.LXC
    m = _PBS_ARCHIVE.search(archive)
    if m is not None:
        return GuestType.QEMU if m[1] == "vm" else GuestType.LXC
    return None


class FailureKind(enum.StrEnum):
    """Why a restore, clone or template conversion was refused or failed."""

    EXISTS = "exists"              # the target vmid is taken
    RUNNING = "running"            # the guest runs (stop it first)
    LOCKED = "locked"              # a config lock or the config flock (``CT is locked (disk)``)
    PROTECTED = "protected"        # ``protection`` is set
    WRONG_TYPE = "wrong_type"      # a backup of the other guest type, or not a backup
    ARCHIVE_MISSING = "archive_missing"  # the backup file is not there
    PERMISSION = "permission"      # a privilege is missing (or root@pam only)
    OTHER = "other"


_TEXT_KINDS: tuple[tuple[re.Pattern[str], FailureKind], ...] = (
    (re.compile(r"\b(?:VM|CT) \d+ already exists on node|config file already exists"),
     FailureKind.EXISTS),
    (re.compile(r"\b(?:VM|CT) is locked \(|can't lock file '[^']*' - got timeout"),
     FailureKind.LOCKED),
    (re.compile(r"can't overwrite running container|\bvm is running\b|template if (?:the CT|VM) "
                r"is running|container is running"), FailureKind.RUNNING),
    (re.compile(r"protection mode enabled"), FailureKind.PROTECTED),
    (re.compile(r"archive contains no configuration file|got unexpected backup format"
                r"|does not look like a QemuServer vzdump backup|cannot pass along options"
                r"|content type needs to be 'backup'"), FailureKind.WRONG_TYPE),
    (re.compile(r"can't find file '|ERROR: file '[^']*' does not exist"),
     FailureKind.ARCHIVE_MISSING),
    (re.compile(r"Permission check failed|only allowed for root@pam"), FailureKind.PERMISSION),
)


def failure_kind(failure: BaseException | str) -> FailureKind:
    """Classify a refusal (the client's exception) or a task's failure (``TaskFailed`` or its
    exitstatus text)."""
    if isinstance(failure, GuestExists):
        return FailureKind.EXISTS
    if isinstance(failure, GuestRunning):
        return FailureKind.RUNNING
    if isinstance(failure, Locked):
        return FailureKind.LOCKED
    if isinstance(failure, GuestProtected):
        return FailureKind.PROTECTED
    if isinstance(failure, WrongGuestType):
        return FailureKind.WRONG_TYPE
    if isinstance(failure, PermissionDenied):
        return FailureKind.PERMISSION
    if isinstance(failure, TaskFailed):
        text = failure.exitstatus
    elif isinstance(failure, BaseException):
        text = getattr(failure, "message", str(failure))
    else:
        text = failure
    for pattern, kind in _TEXT_KINDS:
        if pattern.search(text):
            return kind
    return FailureKind.OTHER


def _bad(param: str, why: str) -> ParameterError:
    return ParameterError(f"invalid {param}: {why}", status=None, errors={param: why})


def _checked(pattern: re.Pattern[str], value: str | None, param: str) -> str | None:
    if value is not None and (not isinstance(value, str) or not pattern.fullmatch(value)):
        raise _bad(param, f"{value!r} is not a valid {param}")
    return value


def _storage(value: str | None) -> str | None:
    if value is not None and not is_storage_id(value):
        raise _bad("storage", f"{value!r} is not {STORAGE_ID_RULE}")
    return value


def _flag(value: bool) -> bool | None:
    """Send a flag only when it is set (PVE's default is off)."""
    return True if value else None


class ProvisionCalls:
    """Restore, clone, template and vmid calls; needs the client's plumbing below."""

    node: str

    # -- provided by ProxmoxClient ------------------------------------------------------------
    def _get(self, path: str, params: Mapping[str, ConfigValue | None] | None = None) -> Any:
        raise NotImplementedError

    def _call(self, method: str, path: str,
              params: Mapping[str, ConfigValue | None] | None = None) -> Any:
        raise NotImplementedError

    def _node_path(self) -> str:
        raise NotImplementedError

    def tasks(self, *, source: str = "archive", vmid: int | None = None,
              typefilter: str | None = None, userfilter: str | None = None,
              since: int | None = None, until: int | None = None, errors: bool | None = None,
              start: int = 0, limit: int = 50) -> TaskList:
        """The node's task list (implemented by the client)."""
        raise NotImplementedError

    # -- restore ------------------------------------------------------------------------------
    def restore(self, vmid: int, guest_type: GuestType | str, archive: str | BackupVolume, *,
                force: bool = False, unique: bool = False, start: bool = False,
                storage: str | None = None, pool: str | None = None) -> Dispatch:
        """Restore ``archive`` into ``vmid``: a ``vzrestore``/``qmrestore`` task (id ``vmid``).

        The target is locked ``create`` while it runs; the restored config is the archived
        one. ``force`` overwrites an existing guest (destructive before any data is copied);
        ``unique`` gives every network device a new MAC; ``storage`` is where the disks go
        (containers: always pass it); ``pool`` adds the guest to a pool.

        Raises:
            WrongGuestType: the backup is visibly of the other guest type (nothing sent).
            GuestExists: ``vmid`` is taken and ``force`` was not given (or it is the other
                guest type).
            GuestRunning: ``force`` over a running container (a running VM fails in the task).
            GuestProtected: the container has ``protection`` set.
            Locked: the target holds a lock (``CT is locked (backup)``).
            PermissionDenied, ParameterError, ServerError: PVE's other refusals.
        """
        kind = GuestType(guest_type)
        check_vmid(vmid)
        archive_type = archive_guest_type(archive)
        volid = archive.volid if isinstance(archive, BackupVolume) else archive
        if not isinstance(volid, str) or ":" not in volid:
            raise _bad("archive", f"{volid!r} is not a backup volume id")
        if archive_type is not None and archive_type is not kind:
            raise WrongGuestType(f"{volid} is a {archive_type.value} backup, not {kind.value}",
                                 archive_type=archive_type.value, wanted=kind.value)
        params: dict[str, ConfigValue | None] = {
            "vmid": vmid, "force": _flag(force), "unique": _flag(unique), "start": _flag(start),
            "storage": _storage(storage),
            "pool": _checked(_POOL_RE, pool, "pool")}
        if kind is GuestType.LXC:
            params.update(ostemplate=volid, restore=True)
        else:
            params["archive"] = volid
        return self._task("POST", f"{self._node_path()}/{kind.value}", params)

    # -- clone --------------------------------------------------------------------------------
    def clone(self, source_vmid: int, guest_type: GuestType | str, newid: int, *,
              name: str | None = None, full: bool | None = None, storage: str | None = None,
              pool: str | None = None, description: str | None = None,
              snapname: str | None = None) -> Dispatch:
        """Clone ``source_vmid`` into ``newid``: a ``vzclone``/``qmclone`` task whose UPID
        carries the **source** vmid.

        ``name`` is the VM name or container hostname. ``full`` None leaves PVE's default (a
        linked clone of a template, a full copy otherwise); ``storage`` needs a full clone. A
        container source is locked ``disk`` for the whole clone, so clones of one container
        template run one at a time (the next one is refused ``CT is locked (disk)``); clones of
        a stopped VM template run in parallel.

        Raises:
            ParameterError: ``storage`` with ``full=False`` or a bad name (nothing sent), or
                PVE's 400.
            GuestExists: ``newid`` is taken.
            Locked: the source holds a lock (another clone of a container, a backup).
            GuestRunning, PermissionDenied, ServerError: PVE's other refusals.
        """
        kind = GuestType(guest_type)
        check_vmid(source_vmid)
        check_vmid(newid)
        if storage is not None and full is False:
            raise _bad("storage", "a linked clone (full=False) stays on the source's storage")
        params: dict[str, ConfigValue | None] = {
            "newid": newid, "full": full, "storage": _storage(storage),
            "pool": _checked(_POOL_RE, pool, "pool"), "description": description,
            "snapname": snapname,
            ("hostname" if kind is GuestType.LXC else "name"): _checked(_NAME_RE, name, "name")}
        path = f"{self._node_path()}/{kind.value}/{source_vmid}/clone"
        return self._task("POST", path, params)

    # -- templates ----------------------------------------------------------------------------
    def convert_to_template(self, vmid: int, guest_type: GuestType | str) -> Dispatch:
        """Make ``vmid`` a template: qemu answers a ``qmtemplate`` UPID; a container answers
        ``null`` while its ``vztemplate`` task runs, so that task is looked up (by vmid and
        type, the newest) and returned; when it cannot be found the Dispatch is synchronous and
        ``template`` in the guest status tells when the conversion is done.

        Raises:
            ServerError: snapshots present, or already a template; GuestRunning: the guest
                runs; Locked; PermissionDenied (VM.Allocate).
        """
        kind = GuestType(guest_type)
        path = f"{self._node_path()}/{kind.value}/{check_vmid(vmid)}/template"
        data = self._call("POST", path)
        if data is not None:
            return Dispatch.from_data(data)
        found = self.tasks(source="all", vmid=vmid,
                           typefilter="qmtemplate" if kind is GuestType.QEMU else "vztemplate",
                           limit=1)
        if found.entries:
            return Dispatch(upid=parse_upid(found.entries[0].upid))
        return Dispatch(upid=None)

    # -- vmids --------------------------------------------------------------------------------
    def next_id(self, vmid: int | None = None) -> int:
        """``GET /cluster/nextid``: the lowest free vmid of the cluster (nothing reserved), or
        ``vmid`` itself when it is free.

        Raises:
            ParameterError: ``vmid`` is taken (``VM N already exists``) or invalid.
            ServerError: no free vmid in the datacenter's range, or a non-numeric answer.
        """
        data = self._get("/cluster/nextid", {"vmid": None if vmid is None else check_vmid(vmid)})
        text = str(data) if isinstance(data, (int, str)) and not isinstance(data, bool) else ""
        if not text.isdigit():
            raise ServerError(f"expected a vmid, got {data!r}", status=200,
                              path="/cluster/nextid")
        return int(text)

    def vmid_free(self, vmid: int) -> bool:
        """Whether ``vmid`` is free on every node of the cluster right now (not reserved)."""
        try:
            self.next_id(check_vmid(vmid))
        except ParameterError as err:
            if "already exists" in err.errors.get("vmid", ""):
                return False
            raise
        return True

    # -- plumbing -----------------------------------------------------------------------------
    def _task(self, method: str, path: str,
              params: Mapping[str, ConfigValue | None]) -> Dispatch:
        data = self._call(method, path, params)
        if data is None:
            raise ServerError(f"{path} answered null instead of a task id", status=200,
                              path=path)
        return Dispatch.from_data(data)
