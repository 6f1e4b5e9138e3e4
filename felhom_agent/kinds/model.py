"""The types a kind is described with: its class, its params, its job, what the gate sees.

:class:`Kind` is one entry of the registry (:mod:`felhom_agent.kinds.registry`). Everything
the rest of the agent needs to know about an operation kind hangs off it: whether unsigned
desired state may cause it (:class:`Safety`), how it is made reversible before it runs
(:class:`Reversibility`), the params a signed op may carry (:class:`Param`), the PVE worker
types it leaves behind (the crash-recovery rule), how it is dispatched and when the observed
guest already *is* what it asks for. See ``docs/architecture.md`` ("Kinds").

The module holds data types only; the handlers that call PVE live in
:mod:`felhom_agent.kinds.handlers`.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import attrs

from felhom_agent.core.normalise import config_diff
from felhom_agent.errors import ReconcileError
from felhom_agent.proxmox.backup_models import BackupVolume
from felhom_agent.proxmox.models import GuestConfig, GuestStatus, GuestType, Snapshot, TaskStatus

if TYPE_CHECKING:
    from felhom_agent.privileged.facade import Privileged
    from felhom_agent.proxmox.client import ProxmoxClient
    from felhom_agent.proxmox.tasks import Dispatch
    from felhom_agent.proxmox.upid import Upid

__all__ = [
    "HOST_PREFIX",
    "GateInput",
    "GateRefused",
    "GuestFacts",
    "HostHandlers",
    "HostJob",
    "HostTools",
    "JobSpec",
    "Kind",
    "Observed",
    "Param",
    "Preflight",
    "Prepared",
    "Reversibility",
    "Safety",
    "Settings",
    "Step",
    "UnknownKind",
    "executor_name",
    "job_storage",
]


class Safety(enum.Enum):
    """Whether unsigned desired state may cause it."""

    BENIGN = "benign"
    DESTRUCTIVE = "destructive"


class Reversibility(enum.Enum):
    """What the reversibility gate must do before a destructive kind runs.

    ``INVERTIBLE``: the same kind with the opposite value undoes it (``backup.protect``
    ``protected: false`` is undone by ``protected: true``); nothing runs first.
    ``SAFETY_BACKUP``: made reversible by a safety backup: a protected backup of the guest as
    it is now, found in the listing, before the op may run (``guest.restore`` over an
    existing guest; a restore into a free vmid destroys nothing and needs none).
    """

    NONE_NEEDED = "none_needed"
    SNAPSHOT = "snapshot"
    INVERTIBLE = "invertible"
    SAFETY_BACKUP = "safety_backup"
    IRREVERSIBLE = "irreversible"


class UnknownKind(ReconcileError, LookupError):
    """A name that is not in the kind registry."""

    def __init__(self, kind: str, known: tuple[str, ...] = ()) -> None:
        suffix = f"; known: {', '.join(known)}" if known else ""
        super().__init__(f"unknown mutation kind {kind!r}{suffix}")
        self.kind = kind


class GateRefused(ReconcileError, ValueError):
    """The op must not run; ``str(err)`` is the reason reported to the hub."""


@attrs.frozen
class Param:
    """One param a signed op of a kind may carry.

    Attributes:
        types: the accepted JSON types (``bool`` is never accepted as an ``int``).
        required: the op is refused without it.
    """

    types: tuple[type, ...]
    required: bool = False


#: The signed names of host kinds start with this (``host.mount_usb``); they act on no guest.
HOST_PREFIX = "host."


def executor_name(kind: str) -> str:
    """The executor name of a kind spelled either way: ``guest.start`` -> ``start``.

    The registry keeps every signed name equal to ``guest.`` + the executor name for guest
    kinds (checked when it is built), so this is a spelling rule, not a second table.
    """
    return kind.removeprefix("guest.")


def _params(value: Mapping[str, Any]) -> dict[str, Any]:
    return dict(value)


@attrs.frozen
class JobSpec:
    """One mutation to execute on a queue worker.

    Attributes:
        op_id: unique id (a signed op's id; the engine makes one per plan action).
        vmid: the guest.
        guest_type: ``qemu``/``lxc`` (the API path).
        kind: the executor name of a registry kind (``start``); a signed name
            (``guest.start``) is accepted and stored as the executor name
            (:func:`executor_name`).
        params: JSON-serialisable kind parameters (``set_config``: the normalised values).
        source: ``plan:<generation>``, a signer principal, or ``selftest``.
    """

    op_id: str
    vmid: int
    guest_type: GuestType = attrs.field(converter=GuestType)
    kind: str = attrs.field(converter=executor_name)
    params: Mapping[str, Any] = attrs.field(factory=dict, converter=_params)
    source: str = ""

    def journal_params(self) -> dict[str, Any]:
        """What the journal's ``begin`` stores: the params plus the guest type (for resume)."""
        return {"guest_type": self.guest_type.value, **self.params}


@attrs.frozen
class HostJob:
    """One host operation (a ``host.*`` kind) to run on the queue's host lane.

    A host kind acts on the node, not on a guest: there is no vmid (``vmid`` is ``None``, as
    in its journal record and audit line) and no guest type.

    Attributes:
        op_id: the signed op's id.
        kind: the kind's name (``host.mount_usb``).
        params: the checked params.
        source: the signer principal.
    """

    op_id: str
    kind: str
    params: Mapping[str, Any] = attrs.field(factory=dict, converter=_params)
    source: str = ""

    @property
    def vmid(self) -> None:
        """Always ``None``: a host job acts on no guest."""
        return None

    def journal_params(self) -> dict[str, Any]:
        """What the journal's ``begin`` stores (the params; enough to run it again)."""
        return dict(self.params)


@attrs.frozen
class HostTools:
    """What host kinds act with: the PVE client, the fenced root CLI and our node's name."""

    client: ProxmoxClient
    fenced: Privileged
    node: str


#: Reads the host state a host job decides on (storage.cfg, the mount table, the fstab).
HostObserver = Callable[[HostTools, HostJob], Any]
#: Decides on what was read, without I/O: refused, nothing to do, or go (``Preflight()``).
HostDecider = Callable[[HostJob, Any], "Preflight"]
#: Does it; every step checks before it acts, so running it again completes it. Returns the
#: reason text of the ``applied`` outcome; raises an ``AgentError`` for a failure.
HostApplier = Callable[[HostTools, HostJob, Any], str]


@attrs.frozen
class HostHandlers:
    """The handlers of a host kind (see :class:`HostJob`).

    Attributes:
        check: the params' values, checked without I/O at the gate; raises
            :class:`GateRefused` (types are checked from the kind's ``params`` first).
        observe: the reads before deciding; a PVE error is transient (the op is not
            recorded), a fenced-CLI error fails it.
        decide: refuse, find nothing to do, or go.
        apply: the steps, after the journal's ``begin``.
    """

    check: Callable[[Mapping[str, Any]], None]
    observe: HostObserver
    decide: HostDecider
    apply: HostApplier


@attrs.frozen
class Observed:
    """The guest as re-read right before or after a call.

    Attributes:
        status: ``status/current`` (``None`` for kinds that do not read it: a backup volume
            may outlive its guest).
        config / snapshots: when the kind reads them.
        backups: the job's storage's backups of this vmid, when the kind reads them.
        since: when the op was begun in the journal (``None`` before): a new backup is
            recognised by ``ctime >= since`` when its notes are missing.
        task: the status of the op's own journalled task, for kinds whose effect only that
            task proves (a restore over an existing guest looks like the guest before it);
            ``None`` when not read or there is no UPID yet.
        absent: for a kind that creates the guest: the vmid is free on the whole cluster
            (``status`` is then ``None``); ``False`` when it is taken or was not asked.
    """

    status: GuestStatus | None
    config: GuestConfig | None = None
    snapshots: tuple[Snapshot, ...] | None = None
    backups: tuple[BackupVolume, ...] | None = None
    since: float | None = None
    task: TaskStatus | None = None
    absent: bool = False

    @property
    def state(self) -> str:
        """The run state, or ``unknown`` when it was not read."""
        return self.status.status if self.status is not None else "unknown"

    def has_snapshot(self, name: str) -> bool:
        """True if a snapshot called ``name`` exists."""
        return any(s.name == name for s in self.snapshots or ())


@attrs.frozen
class GuestFacts:
    """The guest as read right before a signed op is queued (what the gate decides on).

    ``exists`` is False only for a kind whose target may be a free vmid (a restore into a new
    guest): ``type`` is then the type the op will create.
    """

    vmid: int
    type: GuestType
    running: bool
    protected: bool
    snapshots: frozenset[str] = frozenset()
    exists: bool = True


@attrs.frozen
class GateInput:
    """What a kind's own gate reads found (:attr:`Kind.gate_read`).

    Attributes:
        guest: the guest the op acts on (its target; ``exists`` False for a free vmid).
        params: the op's params with what the reads resolved (a default taken from PVE).
    """

    guest: GuestFacts
    params: Mapping[str, Any]


@attrs.frozen
class Step:
    """One queue job of a gated op.

    Attributes:
        op_id: the journal op id of this step.
        kind: the executor kind (``snapshot``, ``stop``, ``rollback`` ...).
        params: the executor params.
        purpose: ``op`` for the op itself, ``safety-snapshot`` or ``stop-first``.
    """

    op_id: str
    kind: str
    params: Mapping[str, Any]
    purpose: str = "op"

    @property
    def is_op(self) -> bool:
        """True for the op itself (the last step)."""
        return self.purpose == "op"


@attrs.frozen
class Prepared:
    """What a kind's gate hook made of a signed op on a guest.

    Attributes:
        params: the executor params of the op step (gate-only params removed).
        pre: steps that must run (and end ``applied``) before the op, in order.
        safety_backup: for a ``SAFETY_BACKUP`` kind, the params of the safety backup the
            gate puts after ``pre`` (``storage``, plus what the kind wants recorded with it;
            the gate makes it ``protected``); ``None`` when the op destroys nothing.
    """

    params: Mapping[str, Any]
    pre: tuple[Step, ...] = ()
    safety_backup: Mapping[str, Any] | None = None


@attrs.frozen
class Settings:
    """The local limits some kinds' hooks apply (from ``backup.*`` and ``provision.*``;
    plain values).

    ``safety_storage``: where a safety backup goes (``None``: the archive's storage).
    ``vmid_min``/``vmid_max``/``pool``: the provisioning range and default pool.
    """

    min_keep: int = 3
    space_margin_pct: int = 20
    safety_storage: str | None = None
    vmid_min: int = 1000
    vmid_max: int = 1999
    pool: str | None = None


@attrs.frozen
class Preflight:
    """What a kind's pre-call check decided (after the re-read, before the journal begin).

    Attributes:
        refused: the op must not run; the reason is recorded as ``refused`` (nothing sent).
        done: nothing needs doing; recorded ``applied`` with this reason (nothing sent).
        audit: a line to put in the audit log before the call (a prune's dry run).
    """

    refused: str | None = None
    done: str | None = None
    audit: str | None = None


Dispatcher = Callable[["ProxmoxClient", JobSpec, Observed], "Dispatch"]
Preflighter = Callable[["ProxmoxClient", JobSpec, Observed, Settings], Preflight]
Detailer = Callable[["ProxmoxClient", JobSpec, "Upid"], "str | None"]
Summariser = Callable[[JobSpec, Observed], str]
TaskId = Callable[[int, Mapping[str, Any]], str]
Predicate = Callable[[JobSpec, Observed], bool]
#: ``(op_id, params, guest) -> Prepared``; raises :class:`GateRefused`.
Preparer = Callable[[str, Mapping[str, Any], GuestFacts], Prepared]
#: ``(client, op vmid, params, settings) -> GateInput``; raises :class:`GateRefused`.
GateReader = Callable[["ProxmoxClient", int, Mapping[str, Any], Settings], GateInput]
#: ``(client, job, began_at, upid) -> Observed``: a kind's own re-read.
Observer = Callable[["ProxmoxClient", JobSpec, "float | None", "str | None"], Observed]
#: ``(params, settings) -> params`` with the local defaults filled in (before the begin).
Completer = Callable[[Mapping[str, Any], Settings], Mapping[str, Any]]
#: ``(privileged, job) -> the command line run``: the kind's fenced root-CLI step.
Fenced = Callable[["Privileged", JobSpec], str]
#: ``job -> the queue limit group of this job`` (or ``None``).
GroupOf = Callable[[JobSpec], "str | None"]


@attrs.frozen
class Kind:
    """One operation kind, defined once.

    Attributes:
        name: the executor name (``start``, ``set_config``); journal and audit use it.
        signed: the signed-op name (``guest.start``), or ``None`` when no signed op may ask
            for it. Every signed name is on the signed-op allow-list.
        plan_action: the reconciler may plan it from unsigned desired state.
        safety: benign or destructive; for config writes, the class when every key is benign.
        reversibility: what the gate does before a destructive run.
        config_write: the params are config keys; a non-benign key makes the write
            destructive with ``SNAPSHOT`` reversibility, and the keys are checked as config.
        params: the params a signed op may carry (ignored when ``config_write``).
        task_types: the PVE worker types the kind can leave behind; crash recovery matches a
            journal entry without a UPID against the node's task list by these.
        dispatch: sends the call; gets the observation just read.
        satisfied: True when the observed guest already is what the job asks; ``None`` when
            the effect is not observable (judged by its task alone).
        reads_config: re-read the config (with digest) before and after.
        reads_snapshots: re-read the snapshot list before and after.
        reads_status: re-read ``status/current`` (kinds acting on a backup volume do not).
        reads_backups: re-read the job's storage's backups of the vmid before and after.
        settles: HA-managed guests change state after the task ended; wait for it.
        prepare: the kind's own gate checks on the guest (refusals, pre-steps, params that
            only the gate reads); ``None`` when there are none.
        gate_read: the kind's own reads before its gate, replacing the plain read of the
            op's guest (a restore's target may not exist yet, and its archive must be found
            in a listing); ``None``: the op's vmid must be a guest on the node.
        observe: the kind's own re-read before and after the call, replacing the ``reads_*``
            ones; ``None``: the flags decide.
        preflight: the kind's own check right before the call (space, a prune's dry run).
        failure_detail: reads why a failed task failed (a vzdump's ``ERROR:`` line).
        summary: the reason text of an applied outcome (the new backup's volid).
        task_id: the ``id`` its PVE task carries (recovery matches it); the vmid when None.
        limit_group: the queue's node-wide limit group (``backup``), or ``None``.
        host: the handlers of a host kind (``host.*``: no guest, no ``dispatch``); a host
            kind is convergent, so crash recovery runs a pending one again to completion.
        group_of: the limit group of one job, when it depends on the params (the clones of
            one container template run one at a time); overrides ``limit_group``.
        creates_guest: the kind creates the op's vmid, which must not exist (``gate_read``
            checks it is free for a signed op, ``observe`` reads the target across the
            cluster); the executor decides a crash without a task by the target guest, and
            the engine plans the new guest's config and state right after it applied.
        complete: fills in local defaults (``provision.pool``) before the op is begun.
        fenced: the kind's step through the fenced root CLI, run once after the begin and
            before ``dispatch``; never for an action planned from desired state.
    """

    name: str
    signed: str | None
    safety: Safety
    reversibility: Reversibility
    task_types: frozenset[str]
    dispatch: Dispatcher | None
    satisfied: Predicate | None
    plan_action: bool = False
    config_write: bool = False
    params: Mapping[str, Param] = attrs.field(factory=dict)
    reads_config: bool = False
    reads_snapshots: bool = False
    reads_status: bool = True
    reads_backups: bool = False
    settles: bool = False
    prepare: Preparer | None = None
    gate_read: GateReader | None = None
    observe: Observer | None = None
    preflight: Preflighter | None = None
    failure_detail: Detailer | None = None
    summary: Summariser | None = None
    task_id: TaskId | None = None
    limit_group: str | None = None
    host: HostHandlers | None = None
    group_of: GroupOf | None = None
    creates_guest: bool = False
    complete: Completer | None = None
    fenced: Fenced | None = None

    @property
    def is_host(self) -> bool:
        """True for a host kind (acts on no guest)."""
        return self.host is not None

    def group(self, job: JobSpec) -> str | None:
        """The queue limit group of ``job``."""
        return self.group_of(job) if self.group_of is not None else self.limit_group

    def describe(self, job: JobSpec, obs: Observed) -> str:
        """A short text of what differs (for failure reasons)."""
        if self.reads_config and obs.config is not None and self.config_write:
            diff = config_diff(job.params, obs.config.values)
            return "config keys still differ: " + ", ".join(sorted(diff))
        if self.reads_snapshots:
            names = [s.name for s in obs.snapshots or ()]
            return f"snapshots now: {', '.join(names) or '(none)'}"
        if self.reads_backups:
            return (f"no backup of vmid {job.vmid} made by op {job.op_id} on "
                    f"{job_storage(job)} ({len(obs.backups or ())} listed)")
        if self.creates_guest:
            if obs.absent:
                return f"vmid {job.vmid} does not exist"
            lock = obs.status.lock if obs.status is not None else None
            template = obs.status is not None and obs.status.template
            return (f"guest {job.vmid} is {obs.state}" + (", a template" if template else "")
                    + (f", locked {lock}" if lock else ""))
        lock = obs.status.lock if obs.status is not None else None
        return f"guest is {obs.state}" + (f", locked ({lock})" if lock else "")

    def pve_task_id(self, vmid: int, params: Mapping[str, Any]) -> str:
        """The ``id`` field of the PVE task this kind leaves for ``vmid``."""
        return self.task_id(vmid, params) if self.task_id is not None else str(vmid)


def job_storage(job: JobSpec) -> str:
    """The storage a backup-volume job acts on: ``params.storage``, else the volid's prefix."""
    storage = job.params.get("storage")
    if isinstance(storage, str) and storage:
        return storage
    volid = job.params.get("volid")
    return volid.split(":", 1)[0] if isinstance(volid, str) and ":" in volid else ""
