"""The kind table: how each mutation kind is dispatched and how its effect is observed.

One :class:`KindSpec` per kind tells the executor (:mod:`felhom_agent.execution.executor`)
what to read before and after the call (status always; config with digest; snapshots), how
to send the call, and when the observed guest already *is* what the job asks for. That
predicate is what makes the executor decide by observed state: it skips a call that is not
needed, and it turns "``already running``", "failed but applied" and unknown outcomes into the
truth. A kind whose effect cannot be observed (``rollback``: the guest looks the same before
and after) has ``satisfied=None`` and is judged by its task alone.

Phase B's ``destroy`` plugs in as one more entry (satisfied = the guest is gone; its dispatch
checks ``protection`` first) without touching the executor.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import attrs

from felhom_agent.core.normalise import config_diff, split_for_write
from felhom_agent.errors import AgentError
from felhom_agent.proxmox.client import ConfigValue, ProxmoxClient
from felhom_agent.proxmox.errors import ParameterError
from felhom_agent.proxmox.models import GuestConfig, GuestStatus, Snapshot
from felhom_agent.proxmox.tasks import Dispatch

if TYPE_CHECKING:
    from felhom_agent.execution.executor import JobSpec

__all__ = ["KINDS", "KindSpec", "Observed", "UnknownKind"]


class UnknownKind(AgentError, LookupError):
    """A job names a kind the executor has no entry for."""

    def __init__(self, kind: str) -> None:
        super().__init__(f"unknown mutation kind {kind!r}; known: {', '.join(sorted(KINDS))}")
        self.kind = kind


@attrs.frozen
class Observed:
    """The guest as re-read right before or after a call."""

    status: GuestStatus
    config: GuestConfig | None = None
    snapshots: tuple[Snapshot, ...] | None = None

    def has_snapshot(self, name: str) -> bool:
        """True if a snapshot called ``name`` exists."""
        return any(s.name == name for s in self.snapshots or ())


Dispatcher = Callable[[ProxmoxClient, "JobSpec", Observed], Dispatch]
Predicate = Callable[["JobSpec", Observed], bool]


@attrs.frozen
class KindSpec:
    """How one kind is executed.

    Attributes:
        name: the kind (``start``).
        dispatch: sends the call; gets the observation just read (``set_config`` uses its
            ``digest``).
        satisfied: True when the observed guest already is what the job asks; ``None`` when
            the effect is not observable.
        reads_config: re-read the config (with digest) before and after.
        reads_snapshots: re-read the snapshot list before and after.
        settles: HA-managed guests change state after the task ended; wait for it.
    """

    name: str
    dispatch: Dispatcher
    satisfied: Predicate | None
    reads_config: bool = False
    reads_snapshots: bool = False
    settles: bool = False

    def describe(self, job: JobSpec, obs: Observed) -> str:
        """A short text of what differs (for failure reasons)."""
        if self.reads_config and obs.config is not None:
            diff = config_diff(job.params, obs.config.values)
            return "config keys still differ: " + ", ".join(sorted(diff))
        if self.reads_snapshots:
            names = [s.name for s in obs.snapshots or ()]
            return f"snapshots now: {', '.join(names) or '(none)'}"
        return f"guest is {obs.status.status}"


def _timeout(params: Mapping[str, Any]) -> int | None:
    value = params.get("timeout")
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _snapname(job: JobSpec) -> str:
    return str(job.params.get("snapname", ""))


def _start(c: ProxmoxClient, job: JobSpec, obs: Observed) -> Dispatch:
    return c.start(job.vmid, job.guest_type, timeout=_timeout(job.params))


def _stop(c: ProxmoxClient, job: JobSpec, obs: Observed) -> Dispatch:
    return c.stop(job.vmid, job.guest_type, timeout=_timeout(job.params))


def _shutdown(c: ProxmoxClient, job: JobSpec, obs: Observed) -> Dispatch:
    force = job.params.get("force_stop")
    return c.shutdown(job.vmid, job.guest_type, timeout=_timeout(job.params),
                      force_stop=force if isinstance(force, bool) else None)


def _set_config(c: ProxmoxClient, job: JobSpec, obs: Observed) -> Dispatch:
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


def _config_matches(job: JobSpec, obs: Observed) -> bool:
    return obs.config is not None and not config_diff(job.params, obs.config.values)


def _snapshot(c: ProxmoxClient, job: JobSpec, obs: Observed) -> Dispatch:
    desc = job.params.get("description")
    vmstate = job.params.get("vmstate")
    return c.create_snapshot(job.vmid, job.guest_type, _snapname(job),
                             description=desc if isinstance(desc, str) else None,
                             vmstate=vmstate if isinstance(vmstate, bool) else None)


def _rollback(c: ProxmoxClient, job: JobSpec, obs: Observed) -> Dispatch:
    start = job.params.get("start")
    return c.rollback_snapshot(job.vmid, job.guest_type, _snapname(job),
                               start=start if isinstance(start, bool) else None)


def _delete_snapshot(c: ProxmoxClient, job: JobSpec, obs: Observed) -> Dispatch:
    force = job.params.get("force")
    return c.delete_snapshot(job.vmid, job.guest_type, _snapname(job),
                             force=force if isinstance(force, bool) else None)


def _flag(job: JobSpec, name: str) -> bool | None:
    value = job.params.get(name)
    return value if isinstance(value, bool) else None


def _destroy(c: ProxmoxClient, job: JobSpec, obs: Observed) -> Dispatch:
    # Last guard right before the call (the gate checked it already, but the config may have
    # changed since): a protected guest is never destroyed. Raising a PveError without a
    # status makes the executor record a plain failure; nothing is sent.
    values = obs.config.values if obs.config is not None else {}
    if str(values.get("protection", "0")) not in ("0", "", "False", "false"):
        raise ParameterError(f"guest {job.vmid} is protected (protection: 1); not destroyed",
                             status=None, errors={"protection": "set"})
    return c.destroy(job.vmid, job.guest_type, purge=_flag(job, "purge"),
                     destroy_unreferenced_disks=_flag(job, "destroy_unreferenced_disks"))


KINDS: Mapping[str, KindSpec] = {
    spec.name: spec
    for spec in (
        KindSpec("start", _start, lambda j, o: o.status.status == "running", settles=True),
        KindSpec("stop", _stop, lambda j, o: o.status.status == "stopped", settles=True),
        KindSpec("shutdown", _shutdown, lambda j, o: o.status.status == "stopped",
                 settles=True),
        KindSpec("set_config", _set_config, _config_matches, reads_config=True),
        KindSpec("snapshot", _snapshot, lambda j, o: o.has_snapshot(_snapname(j)),
                 reads_snapshots=True),
        KindSpec("rollback", _rollback, None),
        KindSpec("delete_snapshot", _delete_snapshot,
                 lambda j, o: not o.has_snapshot(_snapname(j)), reads_snapshots=True),
        # Judged by its task: afterwards the guest is gone and cannot be re-read.
        KindSpec("destroy", _destroy, None, reads_config=True),
    )
}
