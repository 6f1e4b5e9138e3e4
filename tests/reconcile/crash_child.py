"""Engine test support: simulator scenarios, state dirs -- and the crash child.

Imported by the executor/engine/taskwatch/crash tests for the shared builders (the pinned
clients are in :mod:`tests.support.pve`). Run as a
program (``python -m tests.reconcile.crash_child``) it is the child process of the crash
tests: it opens the journal in ``--state``, runs recovery and reconcile passes against the
simulator named by ``--url/--fingerprint/--token`` (secret in ``FELHOM_TEST_TOKEN_SECRET``)
until the desired state in ``--desired`` is reached, and prints one JSON line with what it
did. With ``--crash-point P --crash-at N`` it SIGKILLs itself the N-th time execution passes
the point P:

* ``before_post``  -- journal ``begin`` is durable, the mutating call is not sent;
* ``after_post``   -- the call returned a UPID (the task runs), the UPID is not journaled;
* ``during_wait``  -- the UPID is journaled, the task is being waited on;
* ``after_outcome`` -- the outcome is journaled (the audit line may be missing).
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from felhom_agent.compose.root import build_executor
from felhom_agent.execution.engine import Engine
from felhom_agent.execution.queue import SerializerQueue
from felhom_agent.planning.providers import FileProvider
from felhom_agent.sim.pve import PveScenario, PveSimulator
from felhom_agent.sim.pve.defaults import default_scenario_dict
from felhom_agent.state.audit import AuditLog
from felhom_agent.state.journal import Journal
from tests.support.pve import client_for

CRASH_POINTS = ("before_post", "after_post", "during_wait", "after_outcome")
SECRET_ENV = "FELHOM_TEST_TOKEN_SECRET"


def scenario(
    *,
    qemu: int = 0,
    lxc: int = 0,
    first_vmid: int = 200,
    task_s: float = 0.05,
    workers: int = 8,
    ha: tuple[int, ...] = (),
) -> PveScenario:
    """The default scenario plus ``qemu`` stopped VMs and ``lxc`` stopped CTs (vmids from
    ``first_vmid``); tasks take ``task_s``; ``workers`` concurrent API requests."""
    data: dict[str, Any] = copy.deepcopy(default_scenario_dict())
    data["auth_failure_delay_s"] = 0
    data["workers"] = workers
    data["lock_wait_s"] = 0.5
    data["task_durations"] = {"default": task_s}
    vmid = first_vmid
    for kind, count in (("qemu", qemu), ("lxc", lxc)):
        for _ in range(count):
            data["guests"].append({
                "vmid": vmid, "type": kind, "name": f"g{vmid}", "status": "stopped",
                "config": {"cores": 1, "memory": 512}, "ha_managed": vmid in ha,
            })
            vmid += 1
    return PveScenario.from_dict(data)


def open_state(state: Path, logger: logging.Logger) -> tuple[Journal, AuditLog]:
    """Open the journal and audit log of ``state``."""
    return (Journal.open(state, clock=time.time, logger=logger),
            AuditLog.open(state, clock=time.time, logger=logger))


def mutations(sim: PveSimulator, vmid: int) -> list[str]:
    """Task types the simulator ran for ``vmid`` (its mutation log), oldest first."""
    return [t["type"] for t in sim.tasks() if t["id"] == str(vmid)]


# ---------------------------------------------------------------------- the child program


def _kill_self() -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


class _Crasher:
    """Counts passes through crash points; SIGKILLs the process at the chosen one."""

    def __init__(self, point: str | None, at: int) -> None:
        self.point = point
        self.at = at
        self._n = 0
        self._lock = threading.Lock()

    def hit(self, point: str) -> None:
        if point != self.point:
            return
        with self._lock:
            self._n += 1
            if self._n == self.at:
                _kill_self()


def _wrap(obj: object, name: str, before: Callable[[], None] | None = None,
          after: Callable[[], None] | None = None) -> None:
    original = getattr(obj, name)

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if before is not None:
            before()
        result = original(*args, **kwargs)
        if after is not None:
            after()
        return result

    setattr(obj, name, wrapped)


def main(argv: list[str] | None = None) -> int:
    """The crash-test child: recover, reconcile until converged (or killed), report."""
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--fingerprint", required=True)
    p.add_argument("--node", required=True)
    p.add_argument("--token", required=True)
    p.add_argument("--state", type=Path, required=True)
    p.add_argument("--desired", type=Path, required=True)
    p.add_argument("--crash-point", choices=CRASH_POINTS, default=None)
    p.add_argument("--crash-at", type=int, default=1)
    p.add_argument("--deadline-s", type=float, default=20.0)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    log = logging.getLogger("crash-child")
    crasher = _Crasher(args.crash_point, args.crash_at)
    client = client_for(args.url, args.fingerprint, args.node, args.token,
                        os.environ[SECRET_ENV])
    journal, audit = open_state(args.state, log)
    for method in ("start", "stop", "set_guest_config"):
        _wrap(client, method, before=lambda: crasher.hit("before_post"),
              after=lambda: crasher.hit("after_post"))
    _wrap(journal, "record_upid", after=lambda: crasher.hit("during_wait"))
    _wrap(journal, "record_outcome", after=lambda: crasher.hit("after_outcome"))
    stop = threading.Event()
    queue = SerializerQueue(workers=4, logger=log)
    queue.start()
    provider = FileProvider(args.desired, logger=log)
    watcher, executor = build_executor(client=client, journal=journal, audit=audit,
                                       task_timeout_s=10.0, stop_event=stop,
                                       clock=time.time, logger=log, lookup_grace_s=1.0)
    engine = Engine(client=client, node=args.node, provider=provider, queue=queue,
                    journal=journal, audit=audit, executor=executor, watcher=watcher,
                    interval_s=1.0, stop_event=stop, logger=log, lookup_grace_s=1.0)
    report = engine.recover()
    for h in report.handles:
        h.wait(args.deadline_s)
    deadline = time.monotonic() + args.deadline_s
    passes = submitted = 0
    while time.monotonic() < deadline:
        result = engine.run_pass()
        passes += 1
        submitted += len(result.submitted)
        for h in result.submitted:
            h.wait(args.deadline_s)
        queue.wait_idle(args.deadline_s)
        if result.plan is not None and result.plan.in_sync and not engine.pending_resumes():
            break
        stop.wait(0.2)  # a Recheck grace or a pending resume needs the next pass
    stop.set()
    queue.shutdown(5.0)
    out = {"reattached": list(report.reattached), "adopted": list(report.adopted),
           "rechecks": list(report.rechecks), "replanned": list(report.replanned),
           "unknown": list(report.marked_unknown), "passes": passes, "submitted": submitted,
           "pending": [e.op_id for e in journal.pending()]}
    print(json.dumps(out), flush=True)
    journal.close()
    audit.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
