"""The reconciler engine: the thread that plans and submits, recovery on start, the op seam.

``docs/architecture.md`` ("Threads", "Data path", "Durable state"); ``docs/control-core.md``
("Level-triggered planning, edge-triggered execution"): the reconciler is level-triggered -- every
pass reads actual state (:mod:`~felhom_agent.planning.actual`), plans from scratch
(:func:`~felhom_agent.planning.plan.plan`) and submits the actions to the per-guest queue; only the
executor is edge-triggered. A vmid whose lane is busy, or that has an op still pending in the
journal (a task past its wait deadline, an outcome being looked up), gets no new action (no pile-up,
target T8 of ``docs/control-core.md``, "Targets").

The thread wakes on its interval or on :meth:`Engine.wake` (the desired-state provider calls
it); both waits are on a condition that ``stop_event`` also signals, so shutdown is immediate
and an idle engine has no wake-ups beyond its interval (T6). A failing pass (PVE down, 5xx)
is logged and recorded in :meth:`Engine.status` ``errors``; the thread never dies of it.

A :class:`~felhom_agent.durable.DurabilityError` (journal/audit write failed) is fatal: the engine
records it in :attr:`Engine.fatal`, logs it, sets ``stop_event`` so the daemon shuts down, and the
daemon exits non-zero (never retry an fsync: ``docs/architecture.md``, "Durable state").

Recovery (:meth:`Engine.recover`, before :meth:`Engine.start`): the node's task list is read
once, and :func:`~felhom_agent.state.recovery.decide_recovery` decides per pending entry:
re-attach through the queue (journaling an adopted UPID first), re-plan (outcome ``unknown``;
the next pass plans from observed state), mark ``unknown`` (orders are never re-sent), or
re-check later (the reconciler loop resubmits it once its in-flight grace has passed).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable

import attrs

from felhom_agent.backoff import Attempt, Exponential
from felhom_agent.core.provision import ProvisionLimits
from felhom_agent.durable import DurabilityError
from felhom_agent.execution.backup_tracker import BackupSettings, BackupTracker, BackupView
from felhom_agent.execution.executor import (
    RUNNING,
    ExecResult,
    Executor,
    HostJob,
    JobSpec,
    host_job_of_entry,
    job_of_entry,
)
from felhom_agent.execution.queue import HOST_LANE, JobHandle, QueueClosed, SerializerQueue
from felhom_agent.execution.restore_view import restore_entries
from felhom_agent.execution.status import (
    BlockedGuest,
    OpResult,
    ReconcileStatus,
    RefusedAction,
    RestoreEntry,
)
from felhom_agent.kinds.registry import REGISTRY, is_host_kind
from felhom_agent.planning.actual import read_actual
from felhom_agent.planning.plan import Action, Plan, plan
from felhom_agent.planning.providers import DesiredStateProvider, Unsubscribe
from felhom_agent.proxmox.client import ProxmoxClient
from felhom_agent.proxmox.errors import PveError
from felhom_agent.proxmox.models import GuestType
from felhom_agent.proxmox.taskwatch import TaskWatcher
from felhom_agent.state.audit import AuditLog
from felhom_agent.state.journal import Journal, JournalEntry, OpState, ReplayReport
from felhom_agent.state.recovery import (
    MarkUnknown,
    Reattach,
    Recheck,
    RecoveryDecision,
    Replan,
    Rerun,
    decide_recovery,
    is_plan_source,
    plan_source,
)
from felhom_agent.utc import format_utc

__all__ = ["Engine", "PassResult", "RecoveryReport"]

_log = logging.getLogger(__name__)
_RELAY_WAIT_S = 3600.0


@attrs.frozen
class PassResult:
    """One reconcile pass: the plan (``None`` when actual state could not be read), the API
    reads it cost, the handles of what it submitted, resumed ops, and the error if any."""

    plan: Plan | None
    reads: int
    submitted: tuple[JobHandle[ExecResult], ...] = ()
    resumed: int = 0
    error: str | None = None


@attrs.frozen
class RecoveryReport:
    """What :meth:`Engine.recover` did with each pending journal entry (op ids)."""

    replay: ReplayReport
    reattached: tuple[str, ...] = ()
    adopted: tuple[str, ...] = ()
    rechecks: tuple[str, ...] = ()
    replanned: tuple[str, ...] = ()
    marked_unknown: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()
    handles: tuple[JobHandle[ExecResult], ...] = ()
    rerun: tuple[str, ...] = ()


@attrs.define
class _Resume:
    job: JobSpec | HostJob
    not_before: float = 0.0


def _lane(job: JobSpec | HostJob) -> int:
    return HOST_LANE if isinstance(job, HostJob) else job.vmid


#: After a planned provision failed: wait 60 s before the next try, doubling up to an hour.
PROVISION_RETRY = Exponential(60.0, 2.0, 3600.0)


@attrs.define
class _Held:
    """A provision target whose last planned provision failed: not tried before ``until``."""

    failures: int
    until: float
    reason: str


class Engine:
    """The reconciler of one node; see the module docstring.

    Args:
        client: the Proxmox client.
        node: our node name.
        provider: where desired state comes from.
        queue: the per-guest serializer queue (started by the daemon).
        journal, audit: durable records.
        executor: runs each job (built by the composition root).
        watcher: the task watcher the executor waits through; started and stopped here.
        interval_s: seconds between passes when nothing wakes the engine.
        stop_event: set by the daemon to stop; every wait here is interruptible by it.
        clock: wall-clock seconds.
        logger: where passes, recoveries and errors are logged.
        lookup_grace_s: in-flight grace for unanswered calls (see the executor).
        backups: the ``backup.*`` settings and the node's time zone (backup planning).
        provision: the ``provision.*`` limits (provision planning); ``None``: desired guests
            that do not exist are left alone.
    """

    def __init__(
        self,
        *,
        client: ProxmoxClient,
        node: str,
        provider: DesiredStateProvider,
        queue: SerializerQueue,
        journal: Journal,
        audit: AuditLog,
        executor: Executor,
        watcher: TaskWatcher,
        interval_s: float,
        stop_event: threading.Event,
        clock: Callable[[], float] = time.time,
        logger: logging.Logger | None = None,
        lookup_grace_s: float = 40.0,
        backups: BackupSettings | None = None,
        provision: ProvisionLimits | None = None,
    ) -> None:
        self._client = client
        self._node = node
        self._provider = provider
        self._queue = queue
        self._journal = journal
        self._audit = audit
        self._interval = interval_s
        self._stop = stop_event
        self._clock = clock
        self._log = logger or _log
        self._grace = lookup_grace_s
        self.watcher = watcher
        self.executor = executor
        self.backups = BackupTracker(backups or BackupSettings())
        self._provision = provision
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._pass_lock = threading.Lock()
        self._woken = False
        self._status = ReconcileStatus()
        self._resume: dict[str, _Resume] = {}
        self._held: dict[int, _Held] = {}
        self._fatal: DurabilityError | None = None
        self._thread: threading.Thread | None = None
        self._relay: threading.Thread | None = None
        self._unsubscribe: Unsubscribe | None = None

    # ------------------------------------------------------------------ public API

    @property
    def fatal(self) -> DurabilityError | None:
        """The durability failure that stopped the engine, if any (daemon exits non-zero)."""
        with self._lock:
            return self._fatal

    def recover(self) -> RecoveryReport:
        """Decide and act on every pending journal entry (call once, before :meth:`start`).

        Raises:
            DurabilityError: recording an outcome or adopted UPID failed (fatal).
        """
        everything = self._journal.pending()
        replay = self._journal.replay_report
        if not everything:
            return RecoveryReport(replay=replay)
        handles: list[JobHandle[ExecResult]] = []
        rerun = self._rerun_host_ops([e for e in everything if is_host_kind(e.kind)], handles)
        pending = [e for e in everything if not is_host_kind(e.kind)]
        if not pending:
            self._log.info("recovery: %d pending host op(s) run again", len(rerun))
            return RecoveryReport(replay=replay, handles=tuple(handles), rerun=rerun)
        errors: list[str] = []
        rows: list[dict[str, object]] | None = None
        since = min((e.began_at for e in pending if e.began_at is not None), default=None)
        try:
            listed = self._client.tasks(
                source="all", userfilter=self._client.token_id.split("!", 1)[0],
                since=None if since is None else int(since) - 5, limit=1000,
            )
            rows = [attrs.asdict(e) for e in listed.entries]
        except PveError as err:
            errors.append(f"recovery: reading the task list failed: {err}")
            self._log.warning("recovery: reading the task list failed: %s", err)
        types = self._guest_types(pending, errors)
        out: dict[str, list[str]] = {k: [] for k in
                                     ("reattached", "adopted", "rechecks", "replanned", "unknown")}
        now = self._clock()
        for entry in pending:
            if entry.vmid is None:  # a damaged record of a guest kind: nothing to look up
                out["unknown"].append(entry.op_id)
                self._record_unknown(entry, "no vmid recorded; the call may or may not have "
                                     "reached PVE")
                continue
            job = job_of_entry(entry, types.get(entry.vmid))
            if rows is None:
                decision: RecoveryDecision = (
                    Reattach(entry.upid, adopted=False) if entry.upid is not None
                    else Recheck(now, "task list unreadable"))
            else:
                decision = decide_recovery(entry, rows, token_user=self._client.token_id,
                                           now=now, grace_s=self._grace)
            if (isinstance(decision, Recheck | Replan | MarkUnknown) and entry.kind in REGISTRY
                    and REGISTRY[entry.kind].creates_guest):
                # A creating kind without its task: the target guest decides, at once (the
                # executor's lookup), never "unknown" from the task list alone.
                decision = Recheck(now, "the target guest decides")
            if isinstance(decision, Reattach):
                if decision.adopted:
                    self._journal.record_upid(entry.op_id, decision.upid)
                    out["adopted"].append(entry.op_id)
                out["reattached"].append(entry.op_id)
                self._log.info("recovery: op %s (%s %d) re-attached to %s", entry.op_id,
                               entry.kind, entry.vmid, decision.upid)
                handle = self._submit(job)
                if handle is not None:
                    handles.append(handle)
            elif isinstance(decision, Recheck):
                out["rechecks"].append(entry.op_id)
                with self._lock:
                    self._resume[entry.op_id] = _Resume(job, decision.not_before)
            elif isinstance(decision, Rerun):  # only host kinds, handled above
                raise AssertionError(f"op {entry.op_id}: a guest kind cannot be run again")
            else:
                key = "replanned" if isinstance(decision, Replan) else "unknown"
                out[key].append(entry.op_id)
                self._record_unknown(entry, decision.reason)
        report = RecoveryReport(
            replay=replay, reattached=tuple(out["reattached"]), adopted=tuple(out["adopted"]),
            rechecks=tuple(out["rechecks"]), replanned=tuple(out["replanned"]),
            marked_unknown=tuple(out["unknown"]), errors=tuple(errors), handles=tuple(handles),
            rerun=rerun,
        )
        self._log.info("recovery: %d pending op(s): %d re-attached (%d adopted), %d to "
                       "re-check, %d re-planned, %d marked unknown", len(pending),
                       len(report.reattached), len(report.adopted), len(report.rechecks),
                       len(report.replanned), len(report.marked_unknown))
        return report

    def _rerun_host_ops(self, entries: list[JournalEntry],
                        handles: list[JobHandle[ExecResult]]) -> tuple[str, ...]:
        """Submit every pending host op again (``Rerun``: its steps check before acting)."""
        done: list[str] = []
        for entry in entries:
            decision = decide_recovery(entry, (), token_user=self._client.token_id,
                                       now=self._clock(), grace_s=self._grace)
            assert isinstance(decision, Rerun)  # noqa: S101 - the rule for every host kind
            self._log.info("recovery: host op %s (%s) was left pending; running it again",
                           entry.op_id, entry.kind)
            handle = self._submit(host_job_of_entry(entry))
            if handle is not None:
                handles.append(handle)
            done.append(entry.op_id)
        return tuple(done)

    def start(self) -> None:
        """Start the reconciler thread (non-daemon, named ``felhom-reconciler``)."""
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._loop, name="felhom-reconciler",
                                            daemon=False)
            self._relay = threading.Thread(target=self._relay_stop,
                                           name="felhom-reconciler-stop", daemon=True)
        self.watcher.start()
        self._unsubscribe = self._provider.subscribe(self.wake)
        self._relay.start()
        self._thread.start()

    def wake(self) -> None:
        """New desired state arrived: run a pass soon (coalesced with a pending wake)."""
        with self._cond:
            self._woken = True
            self._cond.notify_all()

    def run_pass(self) -> PassResult:
        """One synchronous pass: resume pending ops, read actual, plan, submit.

        Raises:
            DurabilityError: a journal write failed (fatal).
        """
        with self._pass_lock:
            resumed = self._submit_resumes()
            desired = self._provider.current()
            try:
                actual = read_actual(self._client, self._node, desired)
                facts, facts_error = (self.backups.read(self._client, self._clock(), desired)
                                      if desired is not None else (None, None))
                result = plan(desired, actual.guests, busy=self.busy, node=self._node,
                              backups=facts, provision=self._provision,
                              held=self._held_now())
            except PveError as err:
                msg = f"reading actual state failed: {err}"
                self._log.warning("reconcile pass: %s", msg)
                self._set_status(attrs.evolve(self._status_now(), errors=(msg,)))
                return PassResult(plan=None, reads=0, resumed=resumed, error=msg)
            self.backups.update(result, actual.guests, desired, facts, facts_error)
            handles: list[JobHandle[ExecResult]] = []
            for action in result.actions:
                handle = self._submit(self._job_of(action, result.generation))
                if handle is None:
                    break
                handles.append(handle)
            self._set_status(ReconcileStatus(
                generation=result.generation,
                last_plan_at=format_utc(self._clock()),
                actions=len(result.actions),
                blocked=tuple(BlockedGuest(b.vmid, b.reason) for b in result.blocked),
                refused=tuple(RefusedAction(r.vmid, r.kind, r.reason) for r in result.refused),
                errors=() if facts_error is None else (facts_error,),
            ))
            if result.actions:
                self._log.info("reconcile pass (generation %s): %d action(s) submitted, "
                               "%d blocked, %d refused", result.generation, len(handles),
                               len(result.blocked), len(result.refused))
            return PassResult(plan=result, reads=actual.reads, submitted=tuple(handles),
                              resumed=resumed)

    def status(self) -> ReconcileStatus:
        """What the last pass did (for the HostReport ``reconcile``)."""
        return self._status_now()

    def backup_view(self) -> BackupView:
        """The backup state the last pass saw (for the HostReport ``backup`` and ``pbs``)."""
        return self.backups.view()

    def op_results(self, limit: int = 100) -> list[OpResult]:
        """Ops for the HostReport ``ops``: pending first, then the newest outcomes.

        Reconciler actions (``plan:<n>`` sources) are left out: the hub only tracks orders.
        """
        entries = [e for e in self._journal.entries() if not is_plan_source(e.source)]
        pending = [e for e in entries if e.outcome is None]
        done = sorted((e for e in entries if e.outcome is not None),
                      key=lambda e: e.outcome.finished_at if e.outcome else 0.0, reverse=True)
        out: list[OpResult] = []
        for e in [*pending, *done][:max(0, limit)]:
            o = e.outcome
            out.append(OpResult(
                op_id=e.op_id, state=RUNNING if o is None else o.state.value,
                reason=None if o is None else o.reason, upid=e.upid,
                finished_at=None if o is None else format_utc(o.finished_at), vmid=e.vmid,
            ))
        return out

    def restore_results(self, limit: int = 50) -> list[RestoreEntry]:
        """Signed restores for the HostReport ``restore``: running first, then the newest
        (built from the journal, nothing read from PVE)."""
        return restore_entries(self._journal.entries(), limit)

    def submit_op(self, job: JobSpec) -> JobHandle[ExecResult]:
        """Run ``job`` through the queue and the executor (signed ops, selftest).

        Raises:
            QueueClosed: the queue is shutting down.
        """
        group = REGISTRY[job.kind].group(job) if job.kind in REGISTRY else None
        return self._queue.submit(job.vmid, self._runner(job), label=f"{job.kind} {job.vmid}",
                                  source=job.source, group=group)

    def submit_host(self, job: HostJob) -> JobHandle[ExecResult]:
        """Run host job ``job`` on the queue's host lane through the executor.

        Raises:
            QueueClosed: the queue is shutting down.
        """
        return self._queue.submit(HOST_LANE, self._runner(job), label=f"{job.kind} host",
                                  source=job.source)

    def join(self, timeout: float) -> bool:
        """Wait for the reconciler thread to end (after ``stop_event``); True if it did."""
        thread = self._thread
        if thread is None:
            return True
        thread.join(timeout)
        return not thread.is_alive()

    def pending_resumes(self) -> int:
        """Ops waiting to be resumed by a later pass (task past its deadline, re-checks)."""
        with self._lock:
            return len(self._resume)

    def busy(self, vmid: int) -> bool:
        """True while ``vmid`` has queued/running work or an op pending resumption."""
        if self._queue.busy(vmid):
            return True
        with self._lock:
            return any(r.job.vmid == vmid for r in self._resume.values())

    # ------------------------------------------------------------------ internals

    def _loop(self) -> None:
        self._log.info("reconciler started (interval %.0f s)", self._interval)
        while not self._stop.is_set():
            try:
                self.run_pass()
            except DurabilityError as err:
                self._set_fatal(err)
                break
            except Exception as err:  # the thread never dies of a pass
                self._log.exception("reconcile pass failed")
                msg = f"pass failed: {type(err).__name__}: {err}"
                self._set_status(attrs.evolve(self._status_now(), errors=(msg,)))
            with self._cond:
                if not self._woken and not self._stop.is_set():
                    self._cond.wait(self._interval)
                self._woken = False
        if self._unsubscribe is not None:
            self._unsubscribe()
        self._log.info("reconciler stopped")

    def _relay_stop(self) -> None:
        """Turn ``stop_event`` into a condition notify and stop the task watcher."""
        while not self._stop.wait(_RELAY_WAIT_S):
            pass
        self.watcher.stop()
        with self._cond:
            self._cond.notify_all()

    def _runner(self, job: JobSpec | HostJob) -> Callable[[], ExecResult]:
        def run() -> ExecResult:
            try:
                result = (self.executor.run_host(job) if isinstance(job, HostJob)
                          else self.executor.run(job))
            except DurabilityError as err:
                self._set_fatal(err)
                raise
            entry = self._journal.get(job.op_id)
            with self._lock:
                if result.state == RUNNING and entry is not None and entry.pending:
                    self._resume[job.op_id] = _Resume(job)
                else:
                    self._resume.pop(job.op_id, None)
            creates = isinstance(job, JobSpec) and REGISTRY[job.kind].creates_guest
            if isinstance(job, JobSpec) and creates and is_plan_source(job.source):
                self._note_provision(job, result)
            if (creates and result.state == OpState.APPLIED.value
                    and not result.already_applied):
                # A new guest exists: plan its desired config and state now, not next interval.
                self.wake()
            return result
        return run

    def _note_provision(self, job: JobSpec, result: ExecResult) -> None:
        """Back off a target whose planned provision did not apply (a failing clone is not
        repeated every pass); forget it once one applied."""
        with self._lock:
            if result.state == OpState.APPLIED.value:
                self._held.pop(job.vmid, None)
                return
            if not result.final or result.state == OpState.REFUSED.value:
                return
            failures = self._held[job.vmid].failures + 1 if job.vmid in self._held else 1
            until = self._clock() + PROVISION_RETRY(Attempt(failures))
            self._held[job.vmid] = _Held(failures, until, (
                f"provision {result.state}: {result.reason[:200]}; next try after "
                f"{format_utc(until)}"))

    def _held_now(self) -> dict[int, str]:
        now = self._clock()
        with self._lock:
            return {v: h.reason for v, h in self._held.items() if h.until > now}

    def _submit(self, job: JobSpec | HostJob) -> JobHandle[ExecResult] | None:
        try:
            return self.submit_host(job) if isinstance(job, HostJob) else self.submit_op(job)
        except QueueClosed:
            self._log.info("queue closed; not submitting %s %s", job.kind, job.vmid)
            return None

    def _submit_resumes(self) -> int:
        now = self._clock()
        with self._lock:
            due = [r for r in self._resume.values() if r.not_before <= now]
        count = 0
        for r in due:
            if self._queue.busy(_lane(r.job)):
                continue
            with self._lock:
                self._resume.pop(r.job.op_id, None)
            if self._submit(r.job) is None:
                with self._lock:
                    self._resume[r.job.op_id] = r
                break
            count += 1
        return count

    def _job_of(self, action: Action, generation: int | None) -> JobSpec:
        gen = 0 if generation is None else generation
        op_id = f"plan-{gen}-{action.vmid}-{action.kind}-{uuid.uuid4().hex[:12]}"
        return JobSpec(op_id, action.vmid, GuestType(action.guest_type), action.kind,
                       dict(action.params), plan_source(gen))

    def _guest_types(self, pending: list[JournalEntry], errors: list[str]
                     ) -> dict[int | None, GuestType]:
        if all(e.params.get("guest_type") in ("qemu", "lxc") for e in pending):
            return {}
        try:
            return {g.vmid: g.type for g in self._client.guests()}
        except PveError as err:
            errors.append(f"recovery: guest listing failed: {err}")
            return {}

    def _record_unknown(self, entry: JournalEntry, reason: str) -> None:
        self._journal.record_outcome(entry.op_id, OpState.UNKNOWN, reason)
        self._audit.append(op_id=entry.op_id, source=entry.source, kind=entry.kind,
                           vmid=entry.vmid, upid=entry.upid, outcome=OpState.UNKNOWN.value,
                           reason=reason)
        self._log.warning("recovery: op %s (%s %s, %s): unknown - %s", entry.op_id,
                          entry.kind, entry.vmid, entry.source or "-", reason)

    def _set_fatal(self, err: DurabilityError) -> None:
        with self._lock:
            if self._fatal is None:
                self._fatal = err
        self._log.critical("durable state could not be written; stopping: %s", err)
        self._stop.set()

    def _status_now(self) -> ReconcileStatus:
        with self._lock:
            return self._status

    def _set_status(self, status: ReconcileStatus) -> None:
        with self._lock:
            self._status = status
