"""The executor: runs ONE mutation job on a queue worker, crash-safely and exactly once.

``docs/architecture.md`` ("Waiting for tasks", "Durable state"); ``docs/control-core.md`` ("Task
waiting", "Crash consistency"). For a job (:class:`JobSpec`) :meth:`Executor.run` does, in this
order:

1. **Idempotency**: an op id with a stored outcome returns it (``already_applied``); an op id
   that is *pending* in the journal (a crash, a wait that timed out) is resumed, never
   re-sent: re-attached to its UPID, or looked up in the task list.
2. **Re-read** ``status/current`` (plus ``config`` with its ``digest`` for ``set_config``,
   the snapshot list for snapshot kinds, the storage's backups for backup kinds) right before
   mutating: the bulk listing the plan used may lag (a kind with its own ``observe`` hook reads
   what it needs instead: a restore's target may not exist yet, and only its own task proves
   it ran). The kind's pre-call check runs on what
   was read (a backup's space check, a prune's dry run): it may refuse the op (``refused``,
   nothing sent) or find nothing to do. Already in the desired state -> ``applied`` without
   a call. A read PVE answers with a parameter error (400: the op names a storage that does
   not exist) refuses the op too; any other failed read leaves it unrecorded, to be tried
   again.
3. ``journal.begin`` -- durable **before** the call. (An op decided without a call gets no
   ``begin``: its outcome is one record, so a ``begin`` always means "a call may have been
   sent".)
4. **Dispatch.** Retried (bounded backoff, re-reading first) only with proof that no task
   exists: ``got no worker upid``, or a lock error (``is locked``, ``got timeout``) answered
   on the request itself. A transport error, a 59x, or an answer that is neither ``null``
   nor a UPID means *outcome unknown*: the node's task list is searched (type, vmid, our
   token, start time >= begin) before anything else, until the in-flight grace passes.
   Any other error answer is a definitive "no task" failure.
5. The UPID is journaled right after the call; ``null`` is synchronous success (dual mode).
6. **Wait** (the :class:`~felhom_agent.proxmox.taskwatch.TaskWatcher`); a wait never
   re-dispatches. Past the deadline the job is *still running*: the journal keeps it pending.
7. After **any** terminal state the guest is re-read and the job is resolved by what is
   observed: ``already running`` and "failed but applied" tasks are ``applied``; an HA
   ``hastart``/``hastop`` task that ended before the guest changed is waited out with its own
   deadline; ``set_config`` is verified with :func:`config_diff`; ``WARNINGS: n`` is success.
   The task watcher runs that re-read alongside its read of the task's exit status, once the
   task has left the active list (it has ended); only a re-read that shows the desired state
   is taken from there, anything else is read again.
8. The outcome is journaled and one audit line written.

A :class:`~felhom_agent.durable.DurabilityError` from the journal or the audit log is never
caught here: it propagates so the daemon exits non-zero (``docs/architecture.md``, "Durable state").

A task that fails acquiring its first lock is *not* re-dispatched within the op: the journal
holds one UPID per op. The op fails with the lock text; the reconciler re-plans it next pass
(a signed op is re-delivered by the hub as a new decision).

A host job (:class:`HostJob`, a ``host.*`` kind) takes :meth:`Executor.run_host`: the same
idempotency, journal and audit rules without a guest (``vmid`` is ``None`` in every record) and
without a task: its handlers read the host, decide (refused or nothing to do: one record, no
``begin``), and only then is ``begin`` written and the steps run. A host op found pending (the
agent died in its steps) is run again: every step checks before it acts
(``docs/architecture.md``, "Host kinds").
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol

import attrs

from felhom_agent.backoff import Attempt, Exponential, Retry, StopAfterAttempt
from felhom_agent.durable import DurabilityError
from felhom_agent.errors import AgentError
from felhom_agent.host.health import tool_problem
from felhom_agent.kinds.model import (
    HostJob,
    HostTools,
    JobSpec,
    Kind,
    Observed,
    Preflight,
    Settings,
    UnknownKind,
    job_storage,
)
from felhom_agent.kinds.registry import REGISTRY, is_host_kind, lookup
from felhom_agent.privileged.errors import PrivilegedDisabled, PrivilegedError
from felhom_agent.proxmox.client import ProxmoxClient
from felhom_agent.proxmox.errors import (
    Locked,
    ParameterError,
    PveError,
    ServerError,
    TaskFailed,
    TaskTimeout,
    TaskUnknown,
    TransportError,
    UpidError,
)
from felhom_agent.proxmox.models import GuestType
from felhom_agent.proxmox.tasks import Dispatch, TaskOutcome, TaskResult
from felhom_agent.proxmox.upid import Upid, parse_upid
from felhom_agent.state.audit import AuditLog
from felhom_agent.state.journal import Journal, JournalEntry, OpState, Outcome
from felhom_agent.state.recovery import (
    MarkUnknown,
    Reattach,
    Recheck,
    Replan,
    decide_recovery,
    is_plan_source,
)

__all__ = [
    "DispatchRetry",
    "ExecResult",
    "Executor",
    "HostJob",
    "JobSpec",
    "TaskWaiter",
    "host_job_of_entry",
    "job_of_entry",
]

_log = logging.getLogger(__name__)
_HA_TYPES = frozenset({"hastart", "hastop"})
RUNNING = "running"


def host_job_of_entry(entry: JournalEntry) -> HostJob:
    """Rebuild the host job of a pending journal entry (recovery runs it again)."""
    return HostJob(entry.op_id, entry.kind, dict(entry.params), entry.source)


def job_of_entry(entry: JournalEntry, guest_type: GuestType | None = None) -> JobSpec:
    """Rebuild the job of a pending journal entry of a guest kind (recovery).

    Raises:
        ValueError: the entry is a host kind's (no vmid): use :func:`host_job_of_entry`.
    """
    if entry.vmid is None or is_host_kind(entry.kind):
        raise ValueError(f"op {entry.op_id} ({entry.kind}) acts on no guest")
    params = dict(entry.params)
    stored = params.pop("guest_type", None)
    gtype = guest_type or GuestType(stored if stored in ("qemu", "lxc") else "qemu")
    return JobSpec(entry.op_id, entry.vmid, gtype, entry.kind, params, entry.source)


@attrs.frozen
class ExecResult:
    """How a job ended (or that it is still running).

    Attributes:
        state: ``applied``, ``failed``, ``unknown``, ``refused`` or ``running``.
        final: the outcome is journaled; ``running`` (and a job that could not even read
            state first) is not, and the op is resumed later.
        mutated: a mutating call was sent by *this* run.
        already_applied: the op id had a stored outcome; nothing was done.
    """

    op_id: str
    vmid: int | None
    kind: str
    state: str
    reason: str = ""
    upid: str | None = None
    exitstatus: str | None = None
    final: bool = True
    mutated: bool = False
    already_applied: bool = False
    warnings: int = 0
    dispatch_attempts: int = 0


@attrs.frozen
class DispatchRetry:
    """Backoff for re-dispatching when the answer proves no task exists (pure policy)."""

    attempts: int = 4
    first_s: float = 0.5
    factor: float = 2.0
    cap_s: float = 5.0

    @property
    def policy(self) -> Retry:
        """The same rule as a :class:`~felhom_agent.backoff.Retry`."""
        return Retry(Exponential(self.first_s, self.factor, self.cap_s),
                     StopAfterAttempt(self.attempts))

    def __call__(self, attempt: int) -> float | None:
        """Seconds to wait before attempt ``attempt + 1``, or ``None`` when out of attempts."""
        return self.policy.delay(Attempt(attempt))


@attrs.frozen
class _Call:
    """What one call/task produced, carried to the outcome record."""

    upid: Upid | None = None
    exitstatus: str | None = None
    warnings: int = 0
    attempts: int = 0


class TaskWaiter(Protocol):
    """Waits for a task (the TaskWatcher, or the client's single-task wait)."""

    def wait(self, upid: Upid | str, *, timeout_s: float,
             on_exit: Callable[[], object] | None = None) -> TaskResult:
        """Block until the task stops; raise TaskFailed/TaskUnknown/TaskTimeout.
        ``on_exit`` may be run once the task has ended, its value returned as the result's
        ``exit_probe`` (a waiter may ignore it)."""
        ...


class _ClientWaiter:
    """Adapter: the client's own single-task poll loop, interruptible by ``cancel``."""

    def __init__(self, client: ProxmoxClient, cancel: threading.Event) -> None:
        self._client = client
        self._cancel = cancel

    def wait(self, upid: Upid | str, *, timeout_s: float,
             on_exit: Callable[[], object] | None = None) -> TaskResult:
        return self._client.wait(upid, timeout_s=timeout_s, cancel=self._cancel)


def _noted(spec: Kind, job: JobSpec, obs: Observed, note: str) -> str:
    """An applied outcome's reason: the kind's summary (a backup's volid), then ``note``."""
    summary = spec.summary(job, obs) if spec.summary is not None else ""
    return "; ".join(x for x in (summary, note) if x)


def _proves_no_task(err: PveError) -> bool:
    """The request itself answered an error that means PVE forked nothing (safe to resend)."""
    if isinstance(err, Locked):
        return True
    return isinstance(err, ServerError) and err.no_task_created


def _outcome_unknown(err: PveError) -> bool:
    """No usable answer to a mutating call: the task may or may not exist."""
    if isinstance(err, TransportError | UpidError):
        return True
    return err.status is not None and 590 <= err.status <= 599


class Executor:
    """Runs mutation jobs; thread-safe (one job per vmid at a time is the queue's job).

    Args:
        client: the Proxmox client.
        journal: the op journal.
        audit: the audit log.
        task_timeout_s: the wait deadline per task (separate from the HTTP timeout).
        waiter: waits for tasks; default the client's single-task wait.
        cancel: set on shutdown; ends backoff and lookup waits early.
        retry: re-dispatch backoff (only with proof no task exists).
        lookup_grace_s: how long after ``begin`` an unanswered call may still be in flight
            (keep it above the HTTP timeout for mutating calls).
        lookup_interval_s: pause between task-list lookups during that grace.
        settle_timeout_s: how long to wait for an HA guest to reach the state its finished
            ``hastart``/``hastop`` task requested.
        settle_interval_s: pause between status reads while settling.
        clock: wall-clock seconds (compared with PVE task start times).
        monotonic: monotonic seconds (the settle deadline).
        sleep: ``sleep(seconds) -> cancelled``, every wait of the executor (re-dispatch
            backoff, lookup and settle pauses); default ``cancel.wait``. Tests pass a clock's
            sleep that advances ``clock`` and ``monotonic`` instead of waiting.
        settings: the local limits kinds' pre-call checks apply (``backup.*``,
            ``provision.*``).
        host: what host kinds act with (client, fenced root CLI, node); without it a host
            job is refused. Its fenced root CLI is also what a guest kind's ``fenced`` step
            (``guest.create_golden``) runs through, never for an action planned from desired
            state.
        logger: outcome lines.
    """

    def __init__(
        self,
        *,
        client: ProxmoxClient,
        journal: Journal,
        audit: AuditLog,
        task_timeout_s: float,
        waiter: TaskWaiter | None = None,
        cancel: threading.Event | None = None,
        retry: DispatchRetry | None = None,
        lookup_grace_s: float = 40.0,
        lookup_interval_s: float = 1.0,
        settle_timeout_s: float = 60.0,
        settle_interval_s: float = 0.5,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], bool] | None = None,
        settings: Settings | None = None,
        host: HostTools | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        self._client = client
        self._host = host
        self._journal = journal
        self._audit = audit
        self._task_timeout_s = task_timeout_s
        self._cancel = cancel or threading.Event()
        self._waiter = waiter or _ClientWaiter(client, self._cancel)
        self._retry = retry or DispatchRetry()
        self._grace = lookup_grace_s
        self._lookup_every = lookup_interval_s
        self._settle_timeout = settle_timeout_s
        self._settle_every = settle_interval_s
        self._clock = clock
        self._monotonic = monotonic
        self._sleep = sleep if sleep is not None else self._cancel.wait
        self._log = logger or _log
        self._settings = settings or Settings()
        self._token_user = client.token_id

    # ------------------------------------------------------------------ entry point

    def run(self, job: JobSpec) -> ExecResult:
        """Execute ``job`` once (see the module docstring for the rules).

        Raises:
            DurabilityError: the journal or audit log could not be written (fatal).
            UnknownKind: ``job.kind`` is not in the kind table.
        """
        if job.kind not in REGISTRY or REGISTRY[job.kind].host is not None:
            raise UnknownKind(job.kind, tuple(sorted(REGISTRY)))
        spec = lookup(job.kind)
        entry = self._journal.get(job.op_id)
        if entry is not None and entry.outcome is not None:
            return self._stored(job, entry.outcome, entry.upid)
        if entry is not None:
            return self._resume(job, spec, entry)
        if spec.fenced is not None and is_plan_source(job.source):
            # Defence in depth: a root-CLI step runs only as a verified signed op.
            return self._refuse(job, f"{job.kind} runs the fenced root CLI: only a signed op "
                                "may ask for it, never the desired state")
        if spec.complete is not None:
            job = attrs.evolve(job, params=spec.complete(job.params, self._settings))
        try:
            obs = self._observe(job, spec)
        except ParameterError as err:
            # PVE rejected what the op names (a storage that does not exist): trying again
            # cannot help, so the op is refused now -- one record, nothing sent.
            return self._refuse(job, f"cannot read before mutating: {err}")
        except PveError as err:
            # Nothing journaled, nothing sent: the reconciler or the hub will try again.
            return ExecResult(job.op_id, job.vmid, job.kind, OpState.FAILED.value,
                              f"cannot read guest before mutating: {err}", final=False)
        if self._cancel.is_set():
            # Shutting down: no new call is sent (T14); the op is simply not started.
            return ExecResult(job.op_id, job.vmid, job.kind, OpState.FAILED.value,
                              "shutting down; not sent", final=False)
        check = Preflight()
        if spec.preflight is not None:
            try:
                check = spec.preflight(self._client, job, obs, self._settings)
            except ParameterError as err:
                return self._refuse(job, f"pre-call check refused: {err}")
            except PveError as err:
                return ExecResult(job.op_id, job.vmid, job.kind, OpState.FAILED.value,
                                  f"pre-call check failed: {err}", final=False)
        if check.refused is not None:
            return self._refuse(job, check.refused)
        if spec.satisfied is not None and spec.satisfied(job, obs):
            # One record, no ``begin``: a crash can never leave this op looking as if its
            # call may have been sent (recovery would then report it ``unknown``).
            return self._finish(job, OpState.APPLIED, "already in the desired state; no call sent",
                                decided=True)
        if check.done is not None:
            return self._finish(job, OpState.APPLIED, check.done, decided=True)
        entry = self._journal.begin(
            job.op_id, job.vmid, job.kind, job.journal_params(), job.source
        )
        if check.audit is not None:
            self._audit.append(op_id=job.op_id, source=job.source, kind=job.kind,
                               vmid=job.vmid, upid=None, outcome="dry_run", reason=check.audit)
        return self._dispatch(job, spec, obs, entry)

    def run_host(self, job: HostJob) -> ExecResult:
        """Execute host job ``job`` once (see the module docstring).

        Raises:
            DurabilityError: the journal or audit log could not be written (fatal).
            UnknownKind: ``job.kind`` is not a host kind of the registry.
        """
        spec = REGISTRY.get(job.kind)
        handlers = None if spec is None else spec.host
        if handlers is None:
            raise UnknownKind(job.kind, tuple(sorted(REGISTRY)))
        entry = self._journal.get(job.op_id)
        if entry is not None and entry.outcome is not None:
            return ExecResult(job.op_id, None, job.kind, entry.outcome.state.value,
                              entry.outcome.reason, None, already_applied=True)
        rerun = entry is not None
        tools = self._host
        if tools is None:
            return self._finish_host(job, OpState.REFUSED, f"{job.kind}: this agent has no "
                                     "host tools", decided=not rerun)
        try:
            facts = handlers.observe(tools, job)
        except DurabilityError:
            raise
        except PveError as err:
            # Nothing changed yet: like a guest read, the hub (or recovery) runs it again.
            return ExecResult(job.op_id, None, job.kind,
                              RUNNING if rerun else OpState.FAILED.value,
                              f"cannot read the host before acting: {err}", final=False)
        except PrivilegedDisabled as err:
            return self._finish_host(job, OpState.REFUSED, f"{job.kind}: {err}",
                                     decided=not rerun)
        except PrivilegedError as err:  # a fenced read failed (missing tool, timeout...)
            return self._finish_host(job, OpState.FAILED, tool_problem(err, job.kind),
                                     decided=not rerun)
        except AgentError as err:
            return self._finish_host(job, OpState.FAILED, f"{job.kind}: {err}",
                                     decided=not rerun)
        if self._cancel.is_set():
            return ExecResult(job.op_id, None, job.kind, OpState.FAILED.value,
                              "shutting down; not sent", final=False)
        verdict = handlers.decide(job, facts)
        if verdict.refused is not None:
            return self._finish_host(job, OpState.REFUSED, verdict.refused, decided=not rerun)
        if verdict.done is not None:
            return self._finish_host(job, OpState.APPLIED, verdict.done, decided=not rerun)
        if not rerun:
            self._journal.begin(job.op_id, None, job.kind, job.journal_params(), job.source)
        try:
            summary = handlers.apply(tools, job, facts)
        except DurabilityError:
            raise
        except PveError as err:
            state = OpState.UNKNOWN if _outcome_unknown(err) else OpState.FAILED
            return self._finish_host(job, state, f"{job.kind}: {err}", mutated=True)
        except PrivilegedError as err:
            return self._finish_host(job, OpState.FAILED, tool_problem(err, job.kind),
                                     mutated=True)
        except AgentError as err:
            return self._finish_host(job, OpState.FAILED, f"{job.kind}: {err}", mutated=True)
        if rerun:
            summary += "; completed after a restart"
        return self._finish_host(job, OpState.APPLIED, summary, mutated=True)

    def _finish_host(self, job: HostJob, state: OpState, reason: str, *,
                     decided: bool = False, mutated: bool = False) -> ExecResult:
        """Journal and audit a host job's outcome (``vmid`` null); ``decided``: no ``begin``."""
        if decided:
            self._journal.record_decided(job.op_id, vmid=None, kind=job.kind,
                                         source=job.source, state=state, reason=reason)
        else:
            self._journal.record_outcome(job.op_id, state, reason, None)
        self._audit.append(op_id=job.op_id, source=job.source, kind=job.kind, vmid=None,
                           upid=None, outcome=state.value, reason=reason)
        level = logging.INFO if state is OpState.APPLIED else logging.WARNING
        self._log.log(level, "op %s: %s on the host (%s): %s%s", job.op_id, job.kind,
                      job.source, state.value, f" - {reason}" if reason else "")
        return ExecResult(job.op_id, None, job.kind, state.value, reason, mutated=mutated)

    # ------------------------------------------------------------------ phases

    def _dispatch(
        self, job: JobSpec, spec: Kind, obs: Observed, entry: JournalEntry
    ) -> ExecResult:
        if spec.fenced is not None:
            stopped = self._run_fenced(job, spec)
            if stopped is not None:
                return stopped
        attempt = 0
        while True:
            attempt += 1
            dispatch = spec.dispatch
            assert dispatch is not None  # noqa: S101 - a guest kind (checked in run)
            try:
                dispatched: Dispatch = dispatch(self._client, job, obs)
            except PveError as err:
                if _outcome_unknown(err):
                    self._log.warning("op %s: %s %d: outcome unknown (%s); searching the "
                                      "task list", job.op_id, job.kind, job.vmid, err)
                    return self._lookup(job, spec, mutated=True)
                if _proves_no_task(err):
                    delay = self._retry(attempt)
                    if delay is not None and not self._sleep(delay):
                        self._log.info("op %s: no task was created (%s); re-dispatching",
                                       job.op_id, err)
                        fresh = self._try_observe(job, spec)
                        if fresh is not None:
                            obs = fresh
                            if spec.satisfied is not None and spec.satisfied(job, obs):
                                return self._finish(job, OpState.APPLIED,
                                                    "reached the desired state meanwhile",
                                                    _Call(attempts=attempt))
                        continue
                return self._resolve_failure(job, spec, str(err), _Call(attempts=attempt))
            if dispatched.upid is None:
                return self._verify(job, spec, TaskOutcome.SYNCHRONOUS, _Call(attempts=attempt))
            self._journal.record_upid(job.op_id, dispatched.upid.raw)
            return self._wait(job, spec, dispatched.upid, attempt)

    def _run_fenced(self, job: JobSpec, spec: Kind) -> ExecResult | None:
        """The kind's root-CLI step, once, after the begin; ``None`` when it succeeded (its
        command line is audited), else the failed outcome."""
        assert spec.fenced is not None  # noqa: S101 - checked by the caller
        if self._host is None:
            return self._finish(job, OpState.FAILED, "the fenced root CLI is not available to "
                                "this process; nothing run")
        try:
            line = spec.fenced(self._host.fenced, job)
        except PrivilegedError as err:
            return self._finish(job, OpState.FAILED, "root CLI: " + tool_problem(err, job.kind),
                                _Call(attempts=1))
        self._audit.append(op_id=job.op_id, source=job.source, kind=job.kind, vmid=job.vmid,
                           upid=None, outcome="root_cli", reason=line)
        self._log.info("op %s: %s", job.op_id, line)
        return None

    def _wait(self, job: JobSpec, spec: Kind, upid: Upid, attempts: int) -> ExecResult:
        probe = None if spec.satisfied is None else (lambda: self._try_observe(job, spec))
        try:
            res = self._waiter.wait(upid, timeout_s=self._task_timeout_s, on_exit=probe)
        except TaskTimeout as err:
            self._log.warning("op %s: %s", job.op_id, err)
            return ExecResult(job.op_id, job.vmid, job.kind, RUNNING, str(err), upid.raw,
                              final=False, mutated=attempts > 0, dispatch_attempts=attempts)
        except TaskFailed as err:
            return self._resolve_failure(job, spec, self._detailed(job, spec, upid, err.exitstatus),
                                         _Call(upid, err.exitstatus, attempts=attempts))
        except TaskUnknown as err:
            call = _Call(upid, err.exitstatus, attempts=attempts)
            seen = self._matching(job, spec)
            if seen is not None:
                return self._finish(job, OpState.APPLIED, _noted(
                    spec, job, seen, f"{err}; observed state matches"), call)
            return self._finish(job, OpState.UNKNOWN,
                                self._detailed(job, spec, upid, str(err)), call)
        except PveError as err:
            call = _Call(upid, attempts=attempts)
            seen = self._matching(job, spec)
            if seen is not None:
                return self._finish(job, OpState.APPLIED, _noted(
                    spec, job, seen, f"task unreadable ({err}); observed state matches"), call)
            return self._finish(job, OpState.UNKNOWN, f"task unreadable: {err}", call)
        seen = res.exit_probe if isinstance(res.exit_probe, Observed) else None
        return self._verify(job, spec, res.outcome,
                            _Call(upid, res.exitstatus, res.warnings, attempts), seen)

    def _detailed(self, job: JobSpec, spec: Kind, upid: Upid, text: str) -> str:
        """``text`` plus the kind's failure detail (a vzdump's ERROR line, a partial guest)."""
        if spec.failure_detail is None:
            return text
        try:
            detail = spec.failure_detail(self._client, job, upid)
        except PveError as read_err:
            detail = f"(task log unreadable: {read_err})"
        return f"{text}: {detail}" if detail and detail not in text else text

    def _verify(self, job: JobSpec, spec: Kind, outcome: TaskOutcome, call: _Call,
                seen: Observed | None = None) -> ExecResult:
        """A successful end: confirm by observed state (HA guests get time to settle).
        ``seen`` is a re-read made after the task ended (alongside the watcher's status
        read): when it already shows the desired state it decides, otherwise read again."""
        note = f"success with {call.exitstatus}" if outcome is TaskOutcome.WARNINGS else ""
        if spec.satisfied is None:
            return self._finish(job, OpState.APPLIED, note, call)
        if seen is not None and spec.satisfied(job, seen):
            return self._finish(job, OpState.APPLIED, _noted(spec, job, seen, note), call)
        obs = self._try_observe(job, spec)
        if obs is None:
            return self._finish(job, OpState.APPLIED, note or "not re-read (API error)", call)
        if spec.satisfied(job, obs):
            return self._finish(job, OpState.APPLIED, _noted(spec, job, obs, note), call)
        upid = call.upid
        ha = ((upid is not None and upid.type in _HA_TYPES)
              or (obs.status is not None and obs.status.ha_managed))
        if ha and spec.settles:
            if self._settle(job, spec):
                return self._finish(job, OpState.APPLIED, "HA-managed; reached state", call)
            return self._finish(job, OpState.UNKNOWN, "HA-managed; not in the requested "
                                f"state after {self._settle_timeout:g} s", call)
        return self._finish(job, OpState.FAILED, "call succeeded but the observed state "
                            f"differs: {spec.describe(job, obs)}", call)

    def _resolve_failure(self, job: JobSpec, spec: Kind, text: str, call: _Call
                         ) -> ExecResult:
        """A failed call or task: re-read, and count it applied if the guest is there anyway."""
        seen = self._matching(job, spec)
        if seen is not None:
            return self._finish(job, OpState.APPLIED, _noted(
                spec, job, seen, f"failed ({text}) but observed state matches"), call)
        return self._finish(job, OpState.FAILED, text, call)

    def _matching(self, job: JobSpec, spec: Kind) -> Observed | None:
        """Re-read the guest: what was read if it is observably what the job asks for."""
        if spec.satisfied is None:
            return None
        obs = self._try_observe(job, spec)
        return obs if obs is not None and spec.satisfied(job, obs) else None

    def _matches(self, job: JobSpec, spec: Kind) -> bool:
        """Re-read the guest: True if it is observably what the job asks for."""
        return self._matching(job, spec) is not None

    def _settle(self, job: JobSpec, spec: Kind) -> bool:
        deadline = self._monotonic() + self._settle_timeout
        while not self._sleep(min(self._settle_every,
                                  max(0.0, deadline - self._monotonic()))):
            if self._matches(job, spec):
                return True
            if self._monotonic() >= deadline:
                return False
        return False

    # ------------------------------------------------------------------ resume / lookup

    def _resume(self, job: JobSpec, spec: Kind, entry: JournalEntry) -> ExecResult:
        if entry.upid is not None:
            try:
                upid = parse_upid(entry.upid)
            except UpidError as err:
                return self._finish(job, OpState.UNKNOWN, f"journaled UPID unusable: {err}")
            self._log.info("op %s: re-attaching to %s", job.op_id, upid.raw)
            return self._wait(job, spec, upid, 0)
        return self._lookup(job, spec, mutated=False)

    def _lookup(self, job: JobSpec, spec: Kind, *, mutated: bool) -> ExecResult:
        """Find the task of a call whose answer was lost; adopt it, or resolve by state."""
        userid = self._token_user.split("!", 1)[0]
        while True:
            entry = self._journal.get(job.op_id)
            assert entry is not None  # noqa: S101 - begun before any lookup
            since = None if entry.began_at is None else int(entry.began_at) - 5
            try:
                # PVE filters ``vmid`` on the task's id, which for some kinds is not the vmid
                # (a prune's is ``<vmid>@<storage>``): those are matched on our side only.
                listed = self._client.tasks(source="all",
                                            vmid=job.vmid if spec.task_id is None else None,
                                            userfilter=userid,
                                            since=since, limit=100)
            except PveError as err:
                if self._sleep(self._lookup_every):
                    break
                self._log.warning("op %s: task lookup failed (will retry): %s", job.op_id, err)
                if entry.began_at is not None and self._clock() > entry.began_at + 3 * self._grace:
                    break
                continue
            rows = [attrs.asdict(e) for e in listed.entries]
            decision = decide_recovery(entry, rows, token_user=self._token_user,
                                       now=self._clock(), grace_s=self._grace)
            if isinstance(decision, Reattach):
                self._journal.record_upid(job.op_id, decision.upid)
                self._log.info("op %s: adopted %s from the task list", job.op_id, decision.upid)
                return self._wait(job, spec, parse_upid(decision.upid), int(mutated))
            if isinstance(decision, Recheck):
                if spec.creates_guest and self._target_appeared(job, spec):
                    return self._target_decides(job, spec, mutated=mutated)
                pause = min(self._lookup_every, max(0.0, decision.not_before - self._clock()))
                if self._sleep(pause):
                    break
                continue
            assert isinstance(decision, Replan | MarkUnknown)  # noqa: S101 - exhaustive
            if spec.creates_guest:
                return self._target_decides(job, spec, mutated=mutated)
            call = _Call(attempts=int(mutated))
            seen = self._matching(job, spec)
            if seen is not None:
                return self._finish(job, OpState.APPLIED, _noted(
                    spec, job, seen, "no task found; observed state matches"), call)
            reason = decision.reason
            if isinstance(decision, Replan) or is_plan_source(job.source):
                reason += " (the reconciler re-plans it)"
            return self._finish(job, OpState.UNKNOWN, reason, call)
        return ExecResult(job.op_id, job.vmid, job.kind, RUNNING,
                          "outcome unknown; task lookup not possible now", final=False,
                          mutated=mutated)

    def _target_appeared(self, job: JobSpec, spec: Kind) -> bool:
        obs = self._try_observe(job, spec)
        return obs is not None and not obs.absent

    def _target_decides(self, job: JobSpec, spec: Kind, *, mutated: bool) -> ExecResult:
        """A creating kind without its task: the target guest decides, never a task matched
        by vmid (a clone's task names its source, and clones of a VM template run in parallel,
        so the task list cannot tell which clone is this op's).

        The target unlocked and as asked: ``applied``. The vmid free: nothing was created,
        ``failed``. The target locked ``create``/``clone`` while a task of the kind's types by
        our token is still active: the creation goes on, look again (up to the task deadline);
        locked with no such task, or not the guest asked for: ``failed``, the partial guest
        reported and never adopted.
        """
        call = _Call(attempts=int(mutated))
        deadline = self._monotonic() + self._task_timeout_s
        while True:
            obs = self._try_observe(job, spec)
            if obs is None:
                break
            if spec.satisfied is not None and spec.satisfied(job, obs):
                return self._finish(job, OpState.APPLIED, _noted(
                    spec, job, obs, "no task found; the target guest exists as asked"), call)
            if obs.absent:
                return self._finish(job, OpState.FAILED, f"no task found and vmid {job.vmid} "
                                    "is free: nothing was created (the call failed or never "
                                    "reached PVE)", call)
            lock = obs.status.lock if obs.status is not None else None
            if (lock in ("create", "clone") and self._monotonic() < deadline
                    and self._creation_running(job, spec)):
                if self._sleep(self._lookup_every):
                    break
                continue
            return self._finish(job, OpState.FAILED, f"no task found and {spec.describe(job, obs)}"
                                ": not the guest asked for, not adopted", call)
        return ExecResult(job.op_id, job.vmid, job.kind, RUNNING,
                          "outcome unknown; the target cannot be read now", final=False,
                          mutated=mutated)

    def _creation_running(self, job: JobSpec, spec: Kind) -> bool:
        """True while a task of the kind's types, started by our token since the begin, is
        still active on the node (a creation that may still finish)."""
        entry = self._journal.get(job.op_id)
        since = None if entry is None or entry.began_at is None else entry.began_at - 5
        try:
            active = self._client.tasks(source="active",
                                        userfilter=self._token_user.split("!", 1)[0],
                                        limit=1000)
        except PveError:
            return True  # cannot tell: keep looking until the deadline
        return any(t.type in spec.task_types and (since is None or t.starttime >= since)
                   for t in active.entries)

    # ------------------------------------------------------------------ helpers

    def _observe(self, job: JobSpec, spec: Kind) -> Observed:
        entry = self._journal.get(job.op_id)
        if spec.observe is not None:
            return spec.observe(self._client, job, None if entry is None else entry.began_at,
                                None if entry is None else entry.upid)
        status = (self._client.guest_status(job.vmid, job.guest_type)
                  if spec.reads_status else None)
        config = (self._client.guest_config(job.vmid, job.guest_type)
                  if spec.reads_config else None)
        snaps = (self._client.snapshots(job.vmid, job.guest_type)
                 if spec.reads_snapshots else None)
        backups = (self._client.backups(job_storage(job), vmid=job.vmid)
                   if spec.reads_backups else None)
        return Observed(status=status, config=config, snapshots=snaps, backups=backups,
                        since=None if entry is None else entry.began_at)

    def _try_observe(self, job: JobSpec, spec: Kind) -> Observed | None:
        try:
            return self._observe(job, spec)
        except PveError as err:
            self._log.warning("op %s: re-reading vmid %d failed: %s", job.op_id, job.vmid, err)
            return None

    def _refuse(self, job: JobSpec, reason: str) -> ExecResult:
        """A kind's pre-call check refused the op: recorded ``refused``, nothing sent."""
        return self._finish(job, OpState.REFUSED, reason, decided=True)

    def _stored(self, job: JobSpec, outcome: Outcome, upid: str | None) -> ExecResult:
        return ExecResult(job.op_id, job.vmid, job.kind, outcome.state.value, outcome.reason,
                          upid, outcome.exitstatus, already_applied=True)

    def _finish(self, job: JobSpec, state: OpState, reason: str, call: _Call | None = None,
                *, decided: bool = False) -> ExecResult:
        """Journal and audit the outcome; ``decided``: no ``begin`` exists (no call was sent)."""
        call = call or _Call()
        entry = self._journal.get(job.op_id)
        upid = call.upid
        raw = upid.raw if upid is not None else (entry.upid if entry is not None else None)
        if decided:
            # An order's params stay with its outcome (the report's restore entries name the
            # archive); a reconciler action's are not worth the bytes.
            params = None if is_plan_source(job.source) else job.journal_params()
            self._journal.record_decided(job.op_id, vmid=job.vmid, kind=job.kind,
                                         source=job.source, state=state, reason=reason,
                                         params=params)
        else:
            self._journal.record_outcome(job.op_id, state, reason, call.exitstatus)
        self._audit.append(op_id=job.op_id, source=job.source, kind=job.kind, vmid=job.vmid,
                           upid=raw, outcome=state.value, reason=reason)
        level = logging.INFO if state is OpState.APPLIED else logging.WARNING
        self._log.log(level, "op %s: %s %d (%s): %s%s", job.op_id, job.kind, job.vmid,
                      job.source, state.value, f" - {reason}" if reason else "")
        return ExecResult(job.op_id, job.vmid, job.kind, state.value, reason, raw,
                          call.exitstatus, mutated=call.attempts > 0,
                          warnings=call.warnings, dispatch_attempts=call.attempts)
