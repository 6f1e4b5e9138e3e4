"""A signed op's step still queued when the agent stops is left for the re-delivery.

Nothing of it was sent and nothing journaled, so after the restart the op is run (it is
"accepted, never sent"); recording it ``failed`` here would make the operator sign it again.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import cast

from felhom_agent.execution.executor import ExecResult, HostJob, JobSpec
from felhom_agent.execution.queue import JobHandle, SerializerQueue
from felhom_agent.proxmox.client import ProxmoxClient
from felhom_agent.signedops.steps import StepRunner
from felhom_agent.state.journal import Journal

LOG = logging.getLogger("test.phaseb.steps")


def test_step_cancelled_by_shutdown_is_left_not_failed(tmp_path: Path) -> None:
    """The queue shuts down with the step queued: ``run`` returns None, no journal record."""
    queue = SerializerQueue(workers=1, logger=LOG)
    queue.start()
    release = threading.Event()
    blocker = queue.submit(101, release.wait, label="busy 101")
    submitted = threading.Event()
    ran: list[str] = []

    class Engine:
        def submit_op(self, job: JobSpec) -> JobHandle[ExecResult]:
            def never() -> ExecResult:
                ran.append(job.op_id)
                return ExecResult(job.op_id, job.vmid, job.kind, "applied")

            handle = queue.submit(job.vmid, never, label=f"{job.kind} {job.vmid}")
            submitted.set()
            return handle

        def submit_host(self, job: HostJob) -> JobHandle[ExecResult]:
            raise AssertionError(f"no host job here: {job.op_id}")

    with Journal.open(tmp_path, clock=lambda: 1_790_000_000.0, logger=LOG) as journal:
        runner = StepRunner(engine=Engine(), client=cast(ProxmoxClient, object()),
                            journal=journal, stop_event=threading.Event(), logger=LOG)
        job = JobSpec("op-1.safety-snapshot", 101, "qemu", "snapshot", {"snapname": "x"},
                      "alice@ops")
        out: list[ExecResult | None] = []
        thread = threading.Thread(target=lambda: out.append(runner.run(job)))
        thread.start()
        assert submitted.wait(10.0)
        report = queue.shutdown(grace_s=0)
        release.set()
        thread.join(10.0)
        assert not thread.is_alive()
        assert out == [None] and ran == []
        assert journal.get(job.op_id) is None
        assert report.unstarted and blocker.wait(10.0)
