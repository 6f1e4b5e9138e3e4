"""USB backup disks: the rules of ``host.mount_usb`` and ``host.unmount_usb`` (pure).

``docs/architecture.md`` ("Host storage"). The kinds' handlers read the host (storage.cfg, the
mount table, the fstab, the block devices, the active tasks) into a :class:`UsbFacts` and ask
:func:`decide_mount` / :func:`decide_unmount`, which answer without I/O: refuse (with the
reason), nothing to do, or go. The params are checked here too (:func:`mount_params_problem`),
so every bad input is refused at the gate before anything is read.

The disk is mounted at ``<mount_root>/<name>`` and its PVE storage is called ``<name>``; a
storage is the agent's USB storage when it is a ``dir`` storage at exactly that path with
``is_mountpoint`` set.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

import attrs

from felhom_agent.privileged.parse import BlockDevice, Mounted
from felhom_agent.proxmox.backup_models import StorageConfig
from felhom_agent.storageids import STORAGE_ID_TEXT, is_storage_id

__all__ = [
    "CONTENTS",
    "FS_TYPES",
    "STORAGE_TASK_TYPES",
    "UsbFacts",
    "Verdict",
    "decide_mount",
    "decide_unmount",
    "is_our_storage",
    "mount_params_problem",
    "mountpoint",
    "task_uses_storage",
    "unmount_params_problem",
]

#: File systems a USB backup disk may carry.
FS_TYPES: Final = ("ext4", "xfs")
#: What the storage may hold.
CONTENTS: Final = ("backup",)
_NAME = re.compile(r"[a-z][a-z0-9-]{0,31}")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
#: Task types that read or write a storage; one of them running keeps a disk mounted.
STORAGE_TASK_TYPES: Final = frozenset({"vzdump", "qmrestore", "vzrestore", "imgdel",
                                       "prunebackups", "imgcopy", "download"})
_YES: Final = frozenset({"yes", "1", "on", "true"})
_VOLID = re.compile(STORAGE_ID_TEXT.pattern + r":(?:backup|vztmpl|iso|import)/")


def mountpoint(mount_root: str, name: str) -> str:
    """Where disk ``name`` is mounted."""
    return f"{mount_root}/{name}"


def _name_problem(params: Mapping[str, Any]) -> str | None:
    name = params.get("name")
    if not isinstance(name, str) or _NAME.fullmatch(name) is None:
        return (f"name {str(name)[:40]!r} is not [a-z][a-z0-9-]{{0,31}} (a lower-case letter, "
                "then letters, digits or '-', at most 32)")
    if not is_storage_id(name):
        return (f"name {name!r} is also the PVE storage id: it needs at least 2 characters "
                "and must end in a letter or digit")
    return None


def mount_params_problem(params: Mapping[str, Any]) -> str | None:
    """Why ``host.mount_usb`` params are unusable, or None (types were checked before)."""
    uuid = params.get("uuid")
    if not isinstance(uuid, str) or _UUID.fullmatch(uuid) is None:
        return (f"uuid {str(uuid)[:60]!r} is not a file system UUID "
                "(xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx, hex digits)")
    problem = _name_problem(params)
    if problem is not None:
        return problem
    if params.get("fstype") not in FS_TYPES:
        return f"fstype {str(params.get('fstype'))[:20]!r} is not one of {', '.join(FS_TYPES)}"
    if params.get("content") not in CONTENTS:
        return f"content {str(params.get('content'))[:20]!r} is not one of {', '.join(CONTENTS)}"
    return None


def unmount_params_problem(params: Mapping[str, Any]) -> str | None:
    """Why ``host.unmount_usb`` params are unusable, or None."""
    return _name_problem(params)


def is_our_storage(storage: StorageConfig, path: str) -> bool:
    """A ``dir`` storage at exactly ``path`` that PVE treats as an external mount point."""
    flag = (storage.is_mountpoint or "").lower()
    mounted_here = flag in _YES or flag == path
    return storage.type == "dir" and storage.path == path and mounted_here


@attrs.frozen
class UsbFacts:
    """The host as read right before deciding.

    Attributes:
        mountpoint: ``<mount_root>/<name>``.
        storages: every storage.cfg entry (``GET /storage``).
        mounted: what is mounted at the mount point (``findmnt``), or None.
        in_fstab: the agent's line for this mount is in the fstab.
        fstab_conflict: why the fstab forbids the mount (another line), or None.
        devices: the block devices (``lsblk``); empty for an unmount.
        busy: the tasks (UPIDs) that use the storage now; empty for a mount.
    """

    mountpoint: str
    storages: tuple[StorageConfig, ...]
    mounted: Mounted | None
    in_fstab: bool
    fstab_conflict: str | None = None
    devices: tuple[BlockDevice, ...] = ()
    busy: tuple[str, ...] = ()

    def storage(self, name: str) -> StorageConfig | None:
        """The storage.cfg entry called ``name``."""
        return next((s for s in self.storages if s.storage == name), None)


@attrs.frozen
class Verdict:
    """What :func:`decide_mount` / :func:`decide_unmount` found: refused, done, or go."""

    refused: str | None = None
    done: str | None = None


def _storage_clash(facts: UsbFacts, name: str) -> str | None:
    own = facts.storage(name)
    if own is not None and not is_our_storage(own, facts.mountpoint):
        return (f"storage id {name} is taken by a {own.type} storage"
                f"{' at ' + own.path if own.path else ''} (not a USB disk at "
                f"{facts.mountpoint}); choose another name")
    other = next((s.storage for s in facts.storages
                  if s.storage != name and s.path == facts.mountpoint), None)
    if other is not None:
        return f"storage {other} already uses {facts.mountpoint}; choose another name"
    return None


def decide_mount(params: Mapping[str, Any], facts: UsbFacts) -> Verdict:
    """Decide ``host.mount_usb`` (params already checked)."""
    name, uuid = str(params["name"]), str(params["uuid"]).lower()
    fstype = str(params["fstype"])
    clash = _storage_clash(facts, name)
    if clash is not None:
        return Verdict(refused=clash)
    if facts.fstab_conflict is not None:
        return Verdict(refused=facts.fstab_conflict)
    mounted = facts.mounted
    ours = mounted is not None and (mounted.uuid or "").lower() == uuid
    if mounted is not None and not ours:
        return Verdict(refused=f"{facts.mountpoint} is already used by {mounted.source} "
                               f"({mounted.fstype}); unmount it first or choose another name")
    if not ours:
        device = next((d for d in facts.devices if (d.uuid or "").lower() == uuid), None)
        if device is None:
            return Verdict(refused=f"no block device holds a file system with UUID={uuid}; "
                                   "is the disk plugged in?")
        if device.fstype != fstype:
            return Verdict(refused=f"{device.name} (UUID={uuid}) holds "
                                   f"{device.fstype or 'no file system'}, not {fstype}")
    if ours and facts.in_fstab and facts.storage(name) is not None:
        return Verdict(done=f"UUID={uuid} is mounted at {facts.mountpoint} with its fstab "
                            f"line and storage {name}; nothing to do")
    return Verdict()


def decide_unmount(params: Mapping[str, Any], facts: UsbFacts) -> Verdict:
    """Decide ``host.unmount_usb`` (params already checked)."""
    name = str(params["name"])
    own = facts.storage(name)
    if own is not None and not is_our_storage(own, facts.mountpoint):
        return Verdict(refused=f"storage {name} is not a USB disk storage at "
                               f"{facts.mountpoint}; the agent leaves it alone")
    if facts.fstab_conflict is not None:
        return Verdict(refused=facts.fstab_conflict)
    if facts.busy:
        return Verdict(refused=f"storage {name} is in use by task(s) {', '.join(facts.busy)}; "
                               "try again when they have finished")
    if own is None and facts.mounted is None and not facts.in_fstab:
        return Verdict(done=f"no storage {name}, nothing mounted at {facts.mountpoint} and "
                            "no fstab line; nothing to do")
    return Verdict()


def task_uses_storage(task_type: str, task_id: str, log: Sequence[str] | Iterable[str],
                      storage: str, path: str) -> bool:
    """Whether an active task of ``task_type`` may be using ``storage`` (refusing over guessing).

    A prune or volume deletion names the storage in its id (``<vmid>@<storage>``). A backup,
    restore, copy or download is read from the head of its log: vzdump logs its command line
    (``--storage <id>``), a restore names its archive (``<storage>:backup/...``). A task of such
    a type whose log does not show which storage it uses (a vzdump still waiting for the
    node-wide lock has logged nothing yet, a restore that names no volume) counts as using it;
    so does one whose log shows the storage's mount point ``path``.
    """
    if task_type not in STORAGE_TASK_TYPES:
        return False
    if task_id.endswith(f"@{storage}"):
        return True
    if task_type in ("imgdel", "prunebackups"):
        return False
    text = "\n".join(log)
    for line in text.splitlines():
        if "starting new backup job:" in line:
            command = line.split("starting new backup job:", 1)[1]
            try:
                words = shlex.split(command)
            except ValueError:
                return True
            # Without --storage the target is vzdump.conf's default: cannot tell, so it counts.
            target = next((words[i + 1] for i, w in enumerate(words[:-1])
                           if w == "--storage"), storage)
            return target == storage
    if f"{storage}:" in text or path in text or task_type == "vzdump":
        return True
    return _VOLID.search(text) is None  # names no volume at all: cannot tell
