"""The verifying signed-op consumer: envelope -> verify -> gate -> queue -> journal -> report.

``docs/architecture.md`` ("Data path", "Signed operations", "Durable state"). It implements the
daemon's :class:`~felhom_agent.daemon.signed_ops.SignedOpSink`. Per delivered op, on the hub loop
thread (CPU and one fsync only, never a PVE call):

1. an op id the journal already knows (done *or* pending) is skipped: the engine's
   ``op_results`` reports its stored outcome (``AlreadyApplied``) -- a re-delivery never runs
   twice; an op id accepted by this process and still in progress is skipped too;
2. :meth:`OpVerifier.verify <felhom_agent.authz.verifier.OpVerifier.verify>` (SSHSIG,
   allowed_signers, envelope, nonce store). A rejection is reported ``refused`` with its
   reason and remembered in memory only (bounded): an unverified payload must not be able to
   write our journal, nor pre-empt a genuine op with the same op id;
3. :func:`~felhom_agent.signedops.gate.check_op` (params, classification, ``irreversible``);
   a refusal of a *verified* op is journalled (``record_refused``) and audited;
4. the nonce is marked durably (:meth:`OpVerifier.mark`) -- **before** anything runs;
5. the op goes to its guest's driver thread and ``handle`` returns.

A driver thread per vmid (started on demand, ended when its ops are done, so signed ops of
one guest keep their delivery order; one more for the host ops, ``"vmid": null``) reads the
guest's facts (type, run state, protection, snapshots), asks
:func:`~felhom_agent.signedops.gate.plan_steps`, then submits each step
through ``engine.submit_op`` (the per-guest queue; the executor journals, waits and audits
with the signer principal as source) and waits for it before the next. A host op reads no
guest and has no pre-step: it is one job on the queue's host lane (``Engine.submit_host``).
A pre-step that does not end ``applied`` stops the op: it is recorded ``failed`` with the
reason. Between two steps
a reconciler action for the same guest may slip into the lane; it can only be benign.

An op whose nonce is marked but whose op id has no journal record was never sent to PVE
(the process died after the mark, or the op ended before any call without a record). The
hub delivers it again until a report shows its outcome; the verifier answers "replay", and
:func:`~felhom_agent.signedops.unstarted.decide_unstarted` decides: if it is the very op that
was accepted (same nonce, same payload hash) it **runs** -- once, the op id guards it, and
pre-steps already in the journal are resumed, never sent twice -- or, past its
``expires_at``, it is recorded ``failed`` ("expired before it ran"). An op whose own ``begin``
is in the journal is the engine's recovery business (re-attach, or ``unknown`` when no task is
found: only such an op may have reached PVE).

Every outcome decided here without a call (refused, failed before the op's own call,
expired) is one journal record (:meth:`Journal.record_decided`), never a ``begin`` followed
by an outcome: a crash between those two would leave a ``begin`` that claims a call may have
been sent when none was.

A :class:`~felhom_agent.durable.DurabilityError` (nonce store, journal, audit) goes to
``on_fatal`` (the daemon exits non-zero) and nothing further is accepted.
"""

from __future__ import annotations

import collections
import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import attrs

from felhom_agent.authz.delivered import DeliveredOp
from felhom_agent.authz.errors import AllowedSignersError, OpRejected, Reason
from felhom_agent.authz.nonces import FileNonceStore
from felhom_agent.authz.signers import AllowedSigners, load_allowed_signers
from felhom_agent.authz.verifier import OpVerifier, VerifiedOp, VerifyPolicy
from felhom_agent.durable import DurabilityError
from felhom_agent.execution.executor import HostJob, JobSpec
from felhom_agent.execution.status import OpResult
from felhom_agent.kinds.model import Settings
from felhom_agent.kinds.registry import lookup
from felhom_agent.proxmox.client import ProxmoxClient
from felhom_agent.proxmox.errors import PveError
from felhom_agent.signedops.gate import STEP_SUFFIXES, GateRefused, check_op, plan_steps
from felhom_agent.signedops.steps import OpSubmitter, StepNotRun, StepRunner
from felhom_agent.signedops.unstarted import (
    CannotTell,
    ExpiredUnstarted,
    Journalled,
    NotAccepted,
    RunUnstarted,
    decide_unstarted,
)
from felhom_agent.state.audit import AuditLog
from felhom_agent.state.journal import AlreadyApplied, Journal, OpConflict, OpState
from felhom_agent.utc import format_utc

__all__ = ["OpSubmitter", "OpTiming", "SignedOpConsumer"]

_KEEP: Final = 200
#: Verifier answers that may hide an op accepted here that never began (see _redelivered).
_REDELIVERY: Final = frozenset({Reason.NONCE_REPLAY, Reason.OP_ID_REPLAY, Reason.EXPIRED})
RUNNING: Final = "running"


@attrs.frozen
class OpTiming:
    """How long one accepted op took: verify+mark on the hub thread, and end to end."""

    op_id: str
    kind: str
    accept_s: float
    total_s: float
    state: str


@attrs.frozen
class _Accepted:
    verified: VerifiedOp
    received: float
    accepted: float


def _op_id_hint(payload: str) -> str | None:
    """The (unverified) op id, only to name a refusal or skip a known op."""
    try:
        doc = json.loads(payload)
    except ValueError:
        return None
    op_id = doc.get("op_id") if isinstance(doc, dict) else None
    return op_id if isinstance(op_id, str) and 0 < len(op_id) <= 64 else None


class SignedOpConsumer:
    """Verifies, gates and executes signed ops; see the module docstring.

    Args:
        engine: queues jobs (``Engine.submit_op``).
        client: reads guest facts before the gate.
        journal, audit: durable records (refusals, failures before a call).
        policy: host id, namespace and time limits.
        nonce_store: the durable replay store (opened by the caller; closed by :meth:`close`).
        signers: the trusted keys, or ``None`` with ``signers_error`` when allowed_signers
            could not be loaded (every op is then refused with that reason until a reload).
        clock: POSIX seconds; monotonic: for timings and waits.
        stop_event: set at shutdown: no new step is submitted, waits end.
        on_fatal: called once with a durability failure.
        settings: the local limits a kind's own gate reads apply (``backup.safety_storage``).
    """

    def __init__(
        self,
        *,
        engine: OpSubmitter,
        client: ProxmoxClient,
        journal: Journal,
        audit: AuditLog,
        policy: VerifyPolicy,
        nonce_store: FileNonceStore,
        signers: AllowedSigners | None,
        signers_error: str | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        stop_event: threading.Event | None = None,
        on_fatal: Callable[[BaseException], None] | None = None,
        logger: logging.Logger | None = None,
        keep: int = _KEEP,
        settings: Settings | None = None,
    ) -> None:
        self._journal = journal
        self._audit = audit
        self._policy = policy
        self._store = nonce_store
        self._signers = signers
        self._signers_error = signers_error
        self._clock = clock
        self._mono = monotonic
        self._stop = stop_event if stop_event is not None else threading.Event()
        self._on_fatal = on_fatal
        self._log = logger if logger is not None else logging.getLogger(__name__)
        self._steps = StepRunner(engine=engine, client=client, journal=journal,
                                 stop_event=self._stop, logger=self._log, settings=settings)
        self._keep = max(1, keep)
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._refused: collections.OrderedDict[str, OpResult] = collections.OrderedDict()
        self._active: dict[str, OpResult] = {}
        self._lanes: dict[int | None, collections.deque[_Accepted]] = {}
        self._timings: collections.deque[OpTiming] = collections.deque(maxlen=self._keep)
        self._fatal: BaseException | None = None

    # ------------------------------------------------------------------ SignedOpSink

    def handle(self, ops: Sequence[DeliveredOp]) -> None:
        """Verify, gate and hand on this envelope's ops; returns without waiting for PVE."""
        for delivered in ops:
            if self._fatal is not None:
                return
            try:
                self._handle_one(delivered)
            except DurabilityError as err:
                self._fail_hard(err)
                return
            except Exception:  # one bad op must not keep the others of the envelope out
                self._log.exception("signed op: unexpected error while accepting it")

    def results(self) -> Sequence[OpResult]:
        """Refusals decided before the journal, and accepted ops not yet in the journal."""
        with self._lock:
            refused = list(self._refused.values())
            active = list(self._active.values())
        return [r for r in (*refused, *active)
                if r.op_id and self._journal.get(r.op_id) is None]

    def reconfigure(self, *, allowed_signers: Path, policy: VerifyPolicy) -> None:
        """Reload the allowed signers file and the verify policy (SIGHUP).

        A bad signers file keeps the old signers (logged). The nonce store keeps the skew and
        lifetime it was opened with until the next start (its pruning horizon).
        """
        path = allowed_signers
        try:
            signers = load_allowed_signers(path)
        except AllowedSignersError as err:
            self._log.error("allowed signers not reloaded, keeping the previous ones: %s", err)
            with self._lock:
                self._policy = policy
            return
        with self._lock:
            self._signers = signers
            self._signers_error = None
            self._policy = policy
        self._log.info("allowed signers reloaded from %s", path)

    # ------------------------------------------------------------------ extras

    def wait_idle(self, timeout: float) -> bool:
        """Block until every accepted op finished its steps; False on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: not self._active, timeout)

    def timings(self) -> list[OpTiming]:
        """Accept and end-to-end durations of recent ops (for measurements)."""
        with self._lock:
            return list(self._timings)

    def close(self) -> None:
        """Release the nonce store (after the daemon stopped)."""
        self._store.close()

    # ------------------------------------------------------------------ hub thread

    def _handle_one(self, delivered: DeliveredOp) -> None:
        received = self._mono()
        hint = _op_id_hint(delivered.payload)
        if hint is not None:
            with self._lock:
                known = hint in self._active
            if known or self._journal.get(hint) is not None:
                return  # in progress here, or its outcome is reported from the journal
        key = hashlib.sha256(
            delivered.payload.encode("utf-8", "surrogatepass") + b"\0"
            + delivered.signature.encode("utf-8", "surrogatepass")).hexdigest()
        with self._lock:
            if key in self._refused:
                return
            signers = self._signers
            signers_error = self._signers_error
            policy = self._policy
        if signers is None:
            self._remember_refusal(key, hint, f"allowed-signers: {signers_error}")
            return
        verifier = OpVerifier(signers=signers, policy=policy, now=self._now,
                              nonce_store=self._store, has_outcome=self._has_outcome)
        payload = delivered.payload.encode("utf-8", "surrogatepass")
        try:
            verified = verifier.verify(payload, delivered.signature)
        except OpRejected as err:
            if err.reason in _REDELIVERY and hint is not None and self._redelivered(
                    verifier, hint, payload, delivered.signature, received, key=key, err=err):
                return
            self._remember_refusal(key, hint, str(err))
            return
        op = verified.op
        try:
            check_op(op)
        except GateRefused as err:
            self._record(verified, OpState.REFUSED, str(err))
            return
        try:
            verifier.mark(verified)
        except OpRejected as err:
            self._remember_refusal(key, op.op_id, str(err))
            return
        self._log.info("signed op %s accepted: %s, signed by %s", op.op_id, op.summary(),
                       verified.principal)
        self._enqueue(_Accepted(verified, received, self._mono()))

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    def _has_outcome(self, op_id: str) -> bool:
        return self._journal.outcome(op_id) is not None

    def _redelivered(self, verifier: OpVerifier, op_id: str, payload: bytes, signature: str,
                     received: float, *, key: str, err: OpRejected) -> bool:
        """A re-delivery of an op this host accepted whose op id has no journal record?

        Such an op was never sent: run it now, or record it expired (one record). Returns
        False when it is not that op (the caller keeps the replay refusal ``err``).
        """
        accepted = self._store.accepted(op_id)
        if accepted is None:
            return False
        now = self._now()
        # Verified as of now while it is valid (a key revoked since is honoured); once
        # expired, as of its acceptance, only to prove these are the bytes accepted then.
        at = now if now <= accepted.expires_at else accepted.accepted_at
        try:
            verified = attrs.evolve(verifier, now=lambda: at, nonce_store=None,
                                    has_outcome=None).verify(payload, signature)
        except OpRejected:
            return False
        op = verified.op
        decision = decide_unstarted(
            op, payload_sha256=verified.payload_sha256, accepted=accepted,
            journalled=self._journal.get(op.op_id) is not None, now=now,
            forgotten=self._journal.may_have_forgotten(accepted.accepted_at.timestamp()))
        if isinstance(decision, NotAccepted):
            return False
        if isinstance(decision, CannotTell):
            self._remember_refusal(key, op.op_id, f"{err}; {decision.reason}")
            return True
        if isinstance(decision, Journalled):
            return True
        if isinstance(decision, ExpiredUnstarted):
            self._record(verified, OpState.FAILED, decision.reason)
            return True
        assert isinstance(decision, RunUnstarted)  # noqa: S101 - exhaustive
        try:
            check_op(op)
        except GateRefused as refused:
            self._record(verified, OpState.REFUSED, str(refused))
            return True
        self._log.info("signed op %s was accepted at %s but never sent; running it now: %s",
                       op.op_id, format_utc(accepted.accepted_at), op.summary())
        self._enqueue(_Accepted(verified, received, self._mono()))
        return True

    def _remember_refusal(self, key: str, op_id: str | None, reason: str) -> None:
        if op_id is None:
            self._log.warning("signed op without a readable op_id refused (cannot be "
                              "reported): %s", reason)
        else:
            self._log.warning("signed op %s refused: %s", op_id, reason)
        # An op without op id is kept only so the same bytes are not re-verified; never reported.
        with self._lock:
            self._refused[key] = OpResult(op_id=op_id or "", state="refused", reason=reason,
                                          finished_at=format_utc(self._clock()))
            while len(self._refused) > self._keep:
                self._refused.popitem(last=False)

    def _enqueue(self, acc: _Accepted) -> None:
        op = acc.verified.op
        with self._lock:
            self._active[op.op_id] = OpResult(op_id=op.op_id, state="running",
                                              reason="accepted; queued", vmid=op.vmid)
            lane = self._lanes.get(op.vmid)
            start = lane is None
            if lane is None:
                lane = self._lanes[op.vmid] = collections.deque()
            lane.append(acc)
        if start:
            threading.Thread(target=self._drive, args=(op.vmid,), daemon=True,
                             name=f"felhom-signed-op-{op.vmid or 'host'}").start()

    # ------------------------------------------------------------------ driver threads

    def _drive(self, vmid: int | None) -> None:
        while True:
            with self._lock:
                lane = self._lanes[vmid]
                if not lane or self._stop.is_set() or self._fatal is not None:
                    del self._lanes[vmid]
                    return
                acc = lane.popleft()
            state = "running"
            try:
                state = self._execute(acc)
            except DurabilityError as err:
                self._fail_hard(err)
            except Exception:  # a driver must never die silently with an op in flight
                self._log.exception("signed op %s: unexpected error", acc.verified.op.op_id)
            self._done(acc, state)

    def _done(self, acc: _Accepted, state: str) -> None:
        op = acc.verified.op
        with self._lock:
            if state != "running" or self._journal.get(op.op_id) is not None:
                self._active.pop(op.op_id, None)
            self._timings.append(OpTiming(op.op_id, op.kind, acc.accepted - acc.received,
                                          self._mono() - acc.received, state))
            self._idle.notify_all()

    def _execute(self, acc: _Accepted) -> str:
        """Run the op's steps; return its state (``running`` if left to a later resume)."""
        verified = acc.verified
        op = verified.op
        if op.vmid is None:
            return self._execute_host(acc)
        try:
            read = self._steps.gate_input(lookup(op.kind), op.vmid, op.params)
        except GateRefused as err:
            return self._record(verified, OpState.REFUSED, str(err))
        except PveError as err:
            return self._record(verified, OpState.FAILED, f"cannot read guest {op.vmid}: {err}")
        if read is None:
            return "running"  # stopping
        guest = read.guest
        journalled = frozenset(op.op_id + suffix for suffix in STEP_SUFFIXES
                               if self._journal.get(op.op_id + suffix) is not None)
        try:
            steps = plan_steps(op, check_op(op), guest, journalled, read.params)
        except GateRefused as err:
            return self._record(verified, OpState.REFUSED, str(err))
        for step in steps:
            self._set_stage(op.op_id, f"{step.purpose}: {step.kind}")
            job = JobSpec(step.op_id, guest.vmid, guest.type, step.kind, step.params,
                          verified.principal)
            try:
                result = self._steps.run(job)
            except StepNotRun as err:
                return self._record(verified, OpState.FAILED, f"{err}; {op.kind} was not run")
            if result is None or (not result.final and self._stop.is_set()):
                return "running"  # stopping; a step never sent is run after the restart
            if step.is_op:
                return result.state
            if result.state != OpState.APPLIED.value:
                what = {"safety-snapshot": f"safety snapshot {step.params.get('snapname')}",
                        "safety-backup": f"safety backup to {step.params.get('storage')}",
                        }.get(step.purpose, "stopping the guest first")
                detail = result.reason or result.state
                return self._record(verified, OpState.FAILED,
                                    f"{what} failed ({result.state}: {detail}); {op.kind} "
                                    "was not run")
        return "running"

    def _execute_host(self, acc: _Accepted) -> str:
        """A host op: one job on the host lane; its state (``running``: left to later)."""
        verified = acc.verified
        op = verified.op
        self._set_stage(op.op_id, f"op: {op.kind}")
        job = HostJob(op.op_id, op.kind, op.params, verified.principal)
        try:
            result = self._steps.run(job)
        except StepNotRun as err:
            return self._record(verified, OpState.FAILED, f"{err}; {op.kind} was not run")
        if result is None or (not result.final and self._stop.is_set()):
            return "running"
        return result.state

    # ------------------------------------------------------------------ records

    def _record(self, verified: VerifiedOp, state: OpState, reason: str) -> str:
        """Journal (one record, no ``begin``) and audit an outcome decided without the op's
        own call; an op id the journal already knows keeps its record."""
        op = verified.op
        kind = op.kind.removeprefix("guest.")
        source = verified.principal
        try:
            self._journal.record_decided(op.op_id, vmid=op.vmid, kind=kind, source=source,
                                         state=state, reason=reason, params=op.params)
        except (AlreadyApplied, OpConflict) as err:
            self._log.warning("signed op %s: not recorded %s (%s): %s", op.op_id, state.value,
                              reason, err)
            return RUNNING if isinstance(err, OpConflict) else err.outcome.state.value
        self._audit.append(op_id=op.op_id, source=source, kind=kind, vmid=op.vmid, upid=None,
                           outcome=state.value, reason=reason)
        self._log.warning("signed op %s (%s %s, %s): %s - %s", op.op_id, op.kind,
                          "host" if op.vmid is None else op.vmid, source, state.value, reason)
        return state.value

    def _set_stage(self, op_id: str, stage: str) -> None:
        with self._lock:
            if op_id in self._active:
                self._active[op_id] = attrs.evolve(self._active[op_id], reason=stage)

    def _fail_hard(self, err: DurabilityError) -> None:
        with self._lock:
            first = self._fatal is None
            self._fatal = self._fatal or err
            self._idle.notify_all()
        if not first:
            return
        self._log.critical("signed ops: durable state could not be written; no further op "
                           "is accepted: %s", err)
        if self._on_fatal is not None:
            self._on_fatal(err)
        else:
            self._stop.set()

