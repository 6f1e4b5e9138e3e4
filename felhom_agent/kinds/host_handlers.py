"""The handlers of the host kinds: ``host.mount_usb`` and ``host.unmount_usb``.

Each :data:`MOUNT_USB` / :data:`UNMOUNT_USB` is referenced by one entry of
:mod:`felhom_agent.kinds.registry`. The rules (``docs/architecture.md``, "Host storage"):

* **host.mount_usb** ``{uuid, name, fstype, content}``: the fenced mount of ``UUID=<uuid>`` at
  ``<mount_root>/<name>`` and its fstab line (``nofail,x-systemd.device-timeout=10s``, written
  atomically), then the PVE storage ``<name>`` over the API: ``type=dir``, that path,
  ``content=backup``, ``is_mountpoint=yes``, ``nodes=<our node>`` -- so PVE never writes into
  the empty directory of an unplugged disk. Refused before anything changes when the device is
  absent or holds another file system type, the mount point holds something else, the fstab
  has another line there, or the storage id or path is taken. Mounting the same UUID again is
  one mount, one line, one storage.
* **host.unmount_usb** ``{name}``: refused while a task uses the storage; removes the PVE
  storage entry (the data stays on the disk), unmounts, removes the agent's fstab line.

Both are convergent -- every step checks before it acts -- so an op interrupted by a crash is
run again by recovery and completes (``docs/architecture.md``, "Durable state").
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from felhom_agent.host.usb import (
    UsbFacts,
    decide_mount,
    decide_unmount,
    is_our_storage,
    mount_params_problem,
    mountpoint,
    task_uses_storage,
    unmount_params_problem,
)
from felhom_agent.kinds.model import GateRefused, HostHandlers, HostJob, HostTools, Preflight
from felhom_agent.privileged.errors import FstabConflict
from felhom_agent.privileged.ops import UsbMount, UsbUnmount
from felhom_agent.proxmox.errors import ServerError

__all__ = ["MOUNT_USB", "UNMOUNT_USB"]

#: Lines of an active task's log read to see which storage it uses.
_LOG_HEAD: Final = 20


def _usb(tools: HostTools, params: Mapping[str, Any]) -> UsbMount:
    root = tools.fenced.mount_root
    return UsbMount(source=f"UUID={str(params['uuid']).lower()}",
                    mountpoint=mountpoint(root, str(params["name"])),
                    fstype=str(params["fstype"]), root=root)


def _off(tools: HostTools, params: Mapping[str, Any]) -> UsbUnmount:
    root = tools.fenced.mount_root
    return UsbUnmount(mountpoint=mountpoint(root, str(params["name"])), root=root)


# ------------------------------------------------------------------ host.mount_usb


def _check_mount(params: Mapping[str, Any]) -> None:
    problem = mount_params_problem(params)
    if problem is not None:
        raise GateRefused(f"invalid params for host.mount_usb: {problem}")


def _observe_mount(tools: HostTools, job: HostJob) -> UsbFacts:
    usb = _usb(tools, job.params)
    try:
        in_fstab, conflict = tools.fenced.fstab_has(usb), None
    except FstabConflict as err:
        in_fstab, conflict = False, str(err)
    mounted = tools.fenced.mounted_at(usb.mountpoint)
    return UsbFacts(mountpoint=usb.mountpoint, storages=tools.client.storage_config(),
                    mounted=mounted, in_fstab=in_fstab, fstab_conflict=conflict,
                    devices=tools.fenced.block_devices() if mounted is None else ())


def _decide_mount(job: HostJob, facts: Any) -> Preflight:
    verdict = decide_mount(job.params, facts)
    return Preflight(refused=verdict.refused, done=verdict.done)


def _apply_mount(tools: HostTools, job: HostJob, facts: Any) -> str:
    usb = _usb(tools, job.params)
    name = str(job.params["name"])
    outcome = tools.fenced.mount_usb(usb)
    said = [f"{usb.source} {'mounted' if outcome.mounted_now else 'was mounted'} at "
            f"{usb.mountpoint}", "fstab line added" if outcome.fstab_appended
            else "fstab line was there"]
    assert isinstance(facts, UsbFacts)  # noqa: S101 - what _observe_mount returned
    if facts.storage(name) is None:
        try:
            tools.client.add_mountpoint_dir_storage(name, usb.mountpoint,
                                                    content=[str(job.params["content"])],
                                                    nodes=[tools.node])
        except ServerError:
            # Added by an earlier run whose answer was lost (a crash): ours is fine.
            again = next((s for s in tools.client.storage_config() if s.storage == name), None)
            if again is None or not is_our_storage(again, usb.mountpoint):
                raise
            said.append(f"storage {name} was there")
        else:
            said.append(f"storage {name} added (is_mountpoint)")
    else:
        said.append(f"storage {name} was there")
    return "; ".join(said)


# ------------------------------------------------------------------ host.unmount_usb


def _check_unmount(params: Mapping[str, Any]) -> None:
    problem = unmount_params_problem(params)
    if problem is not None:
        raise GateRefused(f"invalid params for host.unmount_usb: {problem}")


def _busy(tools: HostTools, name: str, path: str) -> tuple[str, ...]:
    users: list[str] = []
    for task in tools.client.tasks(source="active", limit=500).entries:
        lines: tuple[str, ...] = ()
        if task.type in ("vzdump", "qmrestore", "vzrestore", "imgcopy", "download"):
            lines = tuple(line.t for line in
                          tools.client.task_log(task.upid, start=0, limit=_LOG_HEAD).lines)
        if task_uses_storage(task.type, task.id, lines, name, path):
            users.append(task.upid)
    return tuple(users)


def _observe_unmount(tools: HostTools, job: HostJob) -> UsbFacts:
    off = _off(tools, job.params)
    name = str(job.params["name"])
    try:
        in_fstab, conflict = tools.fenced.fstab_lines(off) > 0, None
    except FstabConflict as err:
        in_fstab, conflict = True, str(err)
    return UsbFacts(mountpoint=off.mountpoint, storages=tools.client.storage_config(),
                    mounted=tools.fenced.mounted_at(off.mountpoint), in_fstab=in_fstab,
                    fstab_conflict=conflict, busy=_busy(tools, name, off.mountpoint))


def _decide_unmount(job: HostJob, facts: Any) -> Preflight:
    verdict = decide_unmount(job.params, facts)
    return Preflight(refused=verdict.refused, done=verdict.done)


def _apply_unmount(tools: HostTools, job: HostJob, facts: Any) -> str:
    off = _off(tools, job.params)
    name = str(job.params["name"])
    said: list[str] = []
    present = next((s for s in tools.client.storage_config() if s.storage == name), None)
    if present is not None:
        tools.client.delete_storage(name)
        said.append(f"storage {name} removed (its data stays on the disk)")
    outcome = tools.fenced.unmount_usb(off)
    said.append(f"{off.mountpoint} {'unmounted' if outcome.unmounted_now else 'was not mounted'}")
    said.append("fstab line removed" if outcome.fstab_removed else "no fstab line")
    return "; ".join(said)


MOUNT_USB: Final = HostHandlers(check=_check_mount, observe=_observe_mount,
                                decide=_decide_mount, apply=_apply_mount)
UNMOUNT_USB: Final = HostHandlers(check=_check_unmount, observe=_observe_unmount,
                                  decide=_decide_unmount, apply=_apply_unmount)
