"""Running one signed op's steps: read the guest's facts, queue each step, wait for it.

The signed-op consumer (:mod:`felhom_agent.signedops.consumer`) decides *what* runs (the gate's
steps); :class:`StepRunner` does the blocking part on the op's driver thread, never on the
hub loop thread: the guest reads before the gate, ``engine.submit_op`` for each step (the
per-guest queue; the executor journals, waits, re-reads and audits), and the wait for its
handle in chunks, so a stop request ends it at once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any, Final, Protocol

from felhom_agent.backoff import Incrementing, Retry, RetryInterrupted, StopAfterAttempt, retry_call
from felhom_agent.durable import DurabilityError
from felhom_agent.errors import ReconcileError
from felhom_agent.execution.executor import ExecResult, HostJob, JobSpec
from felhom_agent.execution.queue import JobCancelled, JobHandle, QueueError
from felhom_agent.kinds.model import GateInput, Kind, Settings
from felhom_agent.proxmox.backup_models import guest_type_of_volid
from felhom_agent.proxmox.client import ProxmoxClient
from felhom_agent.proxmox.errors import PveError
from felhom_agent.signedops.gate import GateRefused, GuestFacts
from felhom_agent.state.journal import Journal

__all__ = ["OpSubmitter", "StepNotRun", "StepRunner"]

_WAIT_CHUNK_S: Final = 1.0
#: Guest reads: three tries, 1 s then 2 s apart.
_READ_RETRY: Final = Retry(Incrementing(1.0, 1.0), StopAfterAttempt(3))


class OpSubmitter(Protocol):
    """What the consumer needs from the engine: the queue entry for one job."""

    def submit_op(self, job: JobSpec) -> JobHandle[ExecResult]:
        """Queue ``job``; raises QueueClosed when shutting down."""
        ...

    def submit_host(self, job: HostJob) -> JobHandle[ExecResult]:
        """Queue host job ``job`` on the host lane; raises QueueClosed when shutting down."""
        ...


class StepNotRun(ReconcileError, RuntimeError):
    """A step's job ended without a result and without a journal entry (it never ran)."""


def _protected(value: object) -> bool:
    return str(value if value is not None else "0") not in ("0", "", "False", "false")


class StepRunner:
    """Reads guest facts and runs steps through the engine's queue.

    Args:
        engine: queues jobs (``Engine.submit_op``).
        client: reads the guest.
        journal: consulted when a job ends without a result.
        stop_event: set at shutdown; reads and waits end early.
        logger: step problems.
        settings: the local limits a kind's own gate reads apply (``backup.safety_storage``).
    """

    def __init__(self, *, engine: OpSubmitter, client: ProxmoxClient, journal: Journal,
                 stop_event: threading.Event, logger: logging.Logger,
                 settings: Settings | None = None) -> None:
        self._engine = engine
        self._client = client
        self._journal = journal
        self._stop = stop_event
        self._log = logger
        self._settings = settings or Settings()

    def gate_input(self, kind: Kind, vmid: int, params: Mapping[str, Any]) -> GateInput | None:
        """What the gate decides ``kind`` on: the kind's own reads (its ``gate_read``), else
        :meth:`facts` of ``vmid`` with the signed params; None when stopping. A kind that
        acts on a backup volume (it does not read the guest's status) passes its ``volid``:
        its guest may be gone.

        Raises:
            GateRefused: the reads forbid the op (the reason says why).
            PveError: a read failed after a few attempts.
        """
        reader = kind.gate_read
        if reader is None:
            volid = params.get("volid") if not kind.reads_status else None
            guest = self.facts(vmid, volid if isinstance(volid, str) else None)
            return None if guest is None else GateInput(guest=guest, params=params)
        settings = self._settings
        try:
            return retry_call(lambda: reader(self._client, vmid, params, settings),
                              policy=_READ_RETRY,
                              retry_if=lambda err: isinstance(err, PveError),
                              sleep=self._stop.wait)
        except RetryInterrupted:
            return None

    def facts(self, vmid: int, volid: str | None = None) -> GuestFacts | None:
        """Type, run state, protection and snapshot names of ``vmid``; None when stopping.

        A few attempts with a short pause: PVE may blink. ``volid``: the op acts on that
        backup volume, not on the guest -- a guest that no longer exists is then described by
        the volume's name (its type), stopped and unprotected.

        Raises:
            GateRefused: ``vmid`` is not a guest on our node.
            PveError: the guest could not be read.
        """
        def read() -> GuestFacts:
            listed = {g.vmid: g for g in self._client.guests()}
            guest = listed.get(vmid)
            if guest is None:
                gtype = None if volid is None else guest_type_of_volid(volid)
                if gtype is not None:
                    return GuestFacts(vmid=vmid, type=gtype, running=False, protected=False)
                raise GateRefused(f"vmid {vmid} is not a guest on node {self._client.node}")
            status = self._client.guest_status(vmid, guest.type)
            config = self._client.guest_config(vmid, guest.type)
            snaps = self._client.snapshots(vmid, guest.type)
            return GuestFacts(vmid=vmid, type=guest.type, running=status.running,
                              protected=_protected(config.values.get("protection")),
                              snapshots=frozenset(s.name for s in snaps))

        try:
            return retry_call(read, policy=_READ_RETRY,
                              retry_if=lambda err: isinstance(err, PveError),
                              sleep=self._stop.wait)
        except RetryInterrupted:
            return None

    def run(self, job: JobSpec | HostJob) -> ExecResult | None:
        """Queue ``job`` and wait for its result; None when stopping (left to recovery, or,
        when nothing of it was journaled, to the op's re-delivery after the restart).

        Raises:
            StepNotRun: the job failed or was cancelled before it began.
            DurabilityError: the job hit a durability failure (fatal).
        """
        if self._stop.is_set():
            return None
        try:
            handle = (self._engine.submit_host(job) if isinstance(job, HostJob)
                      else self._engine.submit_op(job))
        except QueueError as err:
            self._log.info("step %s not queued: %s", job.op_id, err)
            return None
        while not handle.wait(_WAIT_CHUNK_S):
            if self._stop.is_set():
                return None
        try:
            return handle.result(0)
        except JobCancelled as err:
            # Never started: the queue shut down first. Nothing was sent, so the op is left
            # to its re-delivery after the restart, which runs it (if still valid).
            self._log.info("step %s not started before shutdown: %s", job.op_id, err)
            return None
        except QueueError as err:
            if isinstance(err.__cause__, DurabilityError):
                raise err.__cause__ from err
            self._log.warning("step %s ended without a result: %s", job.op_id, err)
            entry = self._journal.get(job.op_id)
            if entry is not None and entry.outcome is not None:
                return ExecResult(job.op_id, job.vmid, job.kind, entry.outcome.state.value,
                                  entry.outcome.reason)
            if entry is None:
                raise StepNotRun(f"{job.kind} did not run: {err}") from err
            return None
