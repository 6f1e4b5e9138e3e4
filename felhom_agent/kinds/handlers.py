"""The handlers of the registry's kinds: how each is dispatched, observed and gated.

Each function here is referenced by exactly one entry of :mod:`felhom_agent.kinds.registry`:
``dispatch`` sends the PVE call with the observation just read, ``satisfied`` says when the
observed guest already *is* what the job asks for (that predicate is what makes the executor
decide by observed state: it skips a call that is not needed, and it turns "``already
running``", "failed but applied" and unknown outcomes into the truth), and ``prepare`` holds a
kind's own gate checks (a protected guest is never destroyed; a rollback needs its snapshot).
See ``docs/architecture.md`` ("Kinds").
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from felhom_agent.core.backup_policy import BackupMode
from felhom_agent.core.normalise import config_diff, split_for_write
from felhom_agent.kinds.model import (
    GateRefused,
    GuestFacts,
    JobSpec,
    Observed,
    Prepared,
    Step,
)
from felhom_agent.proxmox.client import ConfigValue, ProxmoxClient
from felhom_agent.proxmox.errors import ParameterError
from felhom_agent.proxmox.tasks import Dispatch
from felhom_agent.storageids import is_storage_id

__all__ = [
    "STOP_SUFFIX",
    "config_matches",
    "delete_snapshot",
    "destroy",
    "is_backup_volid",
    "is_running",
    "is_stopped",
    "prepare_backup",
    "prepare_destroy",
    "prepare_rollback",
    "prepare_volume",
    "rollback",
    "set_config",
    "shutdown",
    "snapshot",
    "snapshot_absent",
    "snapshot_present",
    "start",
    "stop",
]

#: Op-id suffix of the ``stop`` step a destroy with ``stop_first`` runs first.
STOP_SUFFIX = ".stop-first"


def _timeout(params: Mapping[str, Any]) -> int | None:
    value = params.get("timeout")
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _snapname(job: JobSpec) -> str:
    return str(job.params.get("snapname", ""))


def start(c: ProxmoxClient, job: JobSpec, obs: Observed) -> Dispatch:
    """``POST .../status/start``."""
    return c.start(job.vmid, job.guest_type, timeout=_timeout(job.params))


def stop(c: ProxmoxClient, job: JobSpec, obs: Observed) -> Dispatch:
    """``POST .../status/stop`` (hard stop)."""
    return c.stop(job.vmid, job.guest_type, timeout=_timeout(job.params))


def shutdown(c: ProxmoxClient, job: JobSpec, obs: Observed) -> Dispatch:
    """``POST .../status/shutdown`` (clean, optionally forced after its timeout)."""
    force = job.params.get("force_stop")
    return c.shutdown(job.vmid, job.guest_type, timeout=_timeout(job.params),
                      force_stop=force if isinstance(force, bool) else None)


def set_config(c: ProxmoxClient, job: JobSpec, obs: Observed) -> Dispatch:
    """Write the keys that still differ, with the ``digest`` just read."""
    # Only the keys that still differ are written, with the digest just read: a replay
    # after an unseen success fails harmlessly with "checksum mismatch".
    assert obs.config is not None  # noqa: S101 - reads_config
    diff = config_diff(job.params, obs.config.values)
    values, delete = split_for_write(diff)
    sendable: dict[str, ConfigValue] = {
        k: v for k, v in values.items() if isinstance(v, str | int | float | bool)
    }
    return c.set_guest_config(job.vmid, job.guest_type, sendable, delete=delete,
                              digest=obs.config.digest or None)


def config_matches(job: JobSpec, obs: Observed) -> bool:
    """``set_config`` is satisfied when no managed key differs any more."""
    return obs.config is not None and not config_diff(job.params, obs.config.values)


def snapshot(c: ProxmoxClient, job: JobSpec, obs: Observed) -> Dispatch:
    """``POST .../snapshot`` with the job's name (disk-only unless ``vmstate``)."""
    desc = job.params.get("description")
    vmstate = job.params.get("vmstate")
    return c.create_snapshot(job.vmid, job.guest_type, _snapname(job),
                             description=desc if isinstance(desc, str) else None,
                             vmstate=vmstate if isinstance(vmstate, bool) else None)


def rollback(c: ProxmoxClient, job: JobSpec, obs: Observed) -> Dispatch:
    """``POST .../snapshot/{name}/rollback``."""
    start = job.params.get("start")
    return c.rollback_snapshot(job.vmid, job.guest_type, _snapname(job),
                               start=start if isinstance(start, bool) else None)


def delete_snapshot(c: ProxmoxClient, job: JobSpec, obs: Observed) -> Dispatch:
    """``DELETE .../snapshot/{name}``."""
    force = job.params.get("force")
    return c.delete_snapshot(job.vmid, job.guest_type, _snapname(job),
                             force=force if isinstance(force, bool) else None)


def _flag(job: JobSpec, name: str) -> bool | None:
    value = job.params.get(name)
    return value if isinstance(value, bool) else None


def destroy(c: ProxmoxClient, job: JobSpec, obs: Observed) -> Dispatch:
    """``DELETE /nodes/{node}/{type}/{vmid}``, never of a protected guest."""
    # Last guard right before the call (the gate checked it already, but the config may have
    # changed since): a protected guest is never destroyed. Raising a PveError without a
    # status makes the executor record a plain failure; nothing is sent.
    values = obs.config.values if obs.config is not None else {}
    if str(values.get("protection", "0")) not in ("0", "", "False", "false"):
        raise ParameterError(f"guest {job.vmid} is protected (protection: 1); not destroyed",
                             status=None, errors={"protection": "set"})
    return c.destroy(job.vmid, job.guest_type, purge=_flag(job, "purge"),
                     destroy_unreferenced_disks=_flag(job, "destroy_unreferenced_disks"))


def is_running(job: JobSpec, obs: Observed) -> bool:
    """``start`` is satisfied by a running guest."""
    return obs.state == "running"


def is_stopped(job: JobSpec, obs: Observed) -> bool:
    """``stop`` and ``shutdown`` are satisfied by a stopped guest."""
    return obs.state == "stopped"


def snapshot_present(job: JobSpec, obs: Observed) -> bool:
    """``snapshot`` is satisfied once the named snapshot exists."""
    return obs.has_snapshot(_snapname(job))


def snapshot_absent(job: JobSpec, obs: Observed) -> bool:
    """``delete_snapshot`` is satisfied once the named snapshot is gone."""
    return not obs.has_snapshot(_snapname(job))


def prepare_destroy(op_id: str, params: Mapping[str, Any], guest: GuestFacts) -> Prepared:
    """A protected guest is never destroyed; a running one only with ``stop_first``.

    ``stop_first`` is the gate's param: it becomes a journalled ``stop`` step
    (``<op_id>.stop-first``) and is not sent to PVE.
    """
    if guest.protected:
        raise GateRefused(f"guest {guest.vmid} is protected (protection: 1); "
                          "a protected guest is never destroyed")
    rest = dict(params)
    stop_first = rest.pop("stop_first", False) is True
    pre: tuple[Step, ...] = ()
    if guest.running:
        if not stop_first:
            raise GateRefused(f"guest {guest.vmid} is running (set params.stop_first: "
                              "true to stop it first)")
        pre = (Step(op_id + STOP_SUFFIX, "stop", {}, "stop-first"),)
    return Prepared(rest, pre)


def prepare_rollback(op_id: str, params: Mapping[str, Any], guest: GuestFacts) -> Prepared:
    """A rollback needs its snapshot on the guest now (not when it was signed)."""
    if params["snapname"] not in guest.snapshots:
        raise GateRefused(f"snapshot {params['snapname']!r} does not exist on guest "
                          f"{guest.vmid}")
    return Prepared(params)


_MODES = tuple(m.value for m in BackupMode)
_VOLID = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{1,63}:backup/\S{1,200}")


def prepare_backup(op_id: str, params: Mapping[str, Any], guest: GuestFacts) -> Prepared:
    """A signed backup names a valid storage id and one of vzdump's modes."""
    mode = params.get("mode", "snapshot")
    if mode not in _MODES:
        raise GateRefused(f"invalid params for guest.backup: mode {str(mode)[:20]!r} is not one "
                          f"of {', '.join(_MODES)}")
    if not is_storage_id(str(params["storage"])):
        storage = str(params["storage"])[:70]
        raise GateRefused(f"invalid params for guest.backup: storage {storage!r} is not a "
                          "storage id")
    return Prepared(params)


def is_backup_volid(volid: str) -> bool:
    """Whether ``volid`` is spelled like a backup volume id (``<storage>:backup/...``)."""
    return _VOLID.fullmatch(volid) is not None


def prepare_volume(op_id: str, params: Mapping[str, Any], guest: GuestFacts) -> Prepared:
    """An op on one backup names it by a backup volid (``<storage>:backup/...``)."""
    volid = str(params["volid"])
    if not is_backup_volid(volid):
        raise GateRefused(f"invalid params: volid {volid[:80]!r} is not a backup volume id "
                          "(<storage>:backup/...)")
    return Prepared(params)
