"""``--selftest=task --vmid N``: a reversible write test of the whole mutation path.

On guest N: snapshot → rollback → delete that snapshot, then a description write that is
verified (normalised) and restored. Every step is a job on the per-guest serializer queue,
run by the same :class:`~felhom_agent.execution.executor.Executor` the daemon uses: journalled
before it is sent, waited on through the task's UPID, resolved by re-reading the guest. The
guest ends as it began, run state included: a rollback leaves a guest stopped (there is no
RAM state in the snapshot), so a guest that was running is rolled back with ``start=1``.

If a step fails, the later writes are skipped and the cleanup still runs (delete the test
snapshot if it exists, restore the description, restore the run state), each cleanup step a
line of its own, so the operator sees exactly what state the guest was left in.

The parts are the daemon's own, built by the same composition root
(:func:`felhom_agent.compose.root.build_parts`): the journal in ``state_dir`` with the daemon's
eviction rule, the audit log, the queue, the executor and the task watcher it waits through.
Each step is submitted with :meth:`Engine.submit_op`, exactly as a signed op's step is, so the
test exercises the path the daemon uses; the reconciler thread is not started. A crash
mid-test is recovered by the daemon like any other op. The test refuses to run while the
daemon holds the journal: two processes mutating one guest would bypass the single choke
point.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

from felhom_agent.cli._common import CheckLine, render_checks
from felhom_agent.compose.engine_seam import EngineLike, default_engine_factory
from felhom_agent.compose.root import build_parts, proxmox_client
from felhom_agent.config import Config
from felhom_agent.core.normalise import config_diff
from felhom_agent.durable import DurabilityError
from felhom_agent.errors import AgentError
from felhom_agent.execution.executor import ExecResult, JobSpec
from felhom_agent.proxmox.client import ProxmoxClient
from felhom_agent.proxmox.models import GuestType
from felhom_agent.state.journal import JournalError, JournalLocked
from felhom_agent.utc import format_utc

__all__ = ["selftest_task_command"]

_log = logging.getLogger("felhom_agent.selftest")


class _Steps:
    """Runs selftest jobs one by one through the queue and collects their check lines."""

    def __init__(self, engine: EngineLike, vmid: int, gtype: GuestType, wait_s: float) -> None:
        self.engine = engine
        self.vmid = vmid
        self.gtype = gtype
        self.wait_s = wait_s
        self.checks: list[CheckLine] = []

    def run(self, name: str, kind: str, params: dict[str, Any]) -> bool:
        job = JobSpec(f"selftest-{secrets.token_hex(8)}", self.vmid, self.gtype, kind, params,
                      "selftest")
        try:
            handle = self.engine.submit_op(job)
            result: ExecResult = handle.result(timeout=self.wait_s)
        except AgentError as err:
            self.checks.append(CheckLine(name, False, str(err)))
            return False
        ok = result.state == "applied"
        detail = f"{kind} {result.state}"
        if result.upid:
            detail += f" (UPID {result.upid})"
        if result.reason:
            detail += f": {result.reason}"
        if result.warnings:
            detail += f"; {result.warnings} warning(s)"
        self.checks.append(CheckLine(name, ok, detail))
        return ok

    def check(self, name: str, ok: bool, detail: str) -> bool:
        self.checks.append(CheckLine(name, ok, detail))
        return ok


def selftest_task_command(config: Config, vmid: int, *, as_json: bool,
                          clock: Callable[[], float] = time.time) -> tuple[int, str]:
    """Run the reversible task test on ``vmid``; exit 0 when every step passed, else 1."""
    with proxmox_client(config) as client:
        pre = _preflight(client, vmid)
    if isinstance(pre, CheckLine):
        return render_checks("task", [pre], as_json=as_json)
    stop = threading.Event()
    try:
        parts = build_parts(config, stop_event=stop, on_fatal=None,
                            engine_factory=default_engine_factory, clock=clock, logger=_log,
                            workers=1)
    except JournalLocked:
        line = CheckLine("journal", False, f"{config.state_dir} is held by a running agent; "
                         "stop the felhom-agent service first (its queue must be the only "
                         "writer to the guests)")
        return render_checks("task", [line], as_json=as_json)
    except (DurabilityError, JournalError) as err:
        return render_checks("task", [CheckLine("journal", False, str(err))], as_json=as_json)
    parts.queue.start()
    parts.watcher.start()
    try:
        steps = _Steps(parts.engine, vmid, pre, config.proxmox.task_timeout_s * 3 + 120)
        _exercise(parts.client, steps)
    finally:
        parts.queue.shutdown(grace_s=config.proxmox.task_timeout_s)
        stop.set()
        parts.close()
    return render_checks("task", steps.checks, as_json=as_json)


def _preflight(client: ProxmoxClient, vmid: int) -> GuestType | CheckLine:
    try:
        guests = {g.vmid: g for g in client.guests()}
    except AgentError as err:
        return CheckLine("guest", False, f"cannot list guests: {err}")
    guest = guests.get(vmid)
    if guest is None:
        return CheckLine("guest", False, f"guest {vmid} is not on node {client.node}")
    if guest.template:
        return CheckLine("guest", False, f"guest {vmid} is a template; pick a normal guest")
    if guest.lock:
        return CheckLine("guest", False, f"guest {vmid} is locked ({guest.lock}); try later")
    return guest.type


def _exercise(client: ProxmoxClient, steps: _Steps) -> None:
    vmid, gtype = steps.vmid, steps.gtype
    try:
        status = client.guest_status(vmid, gtype).status
        description = client.guest_config(vmid, gtype).values.get("description", "")
    except AgentError as err:
        steps.check("read", False, f"cannot read guest {vmid}: {err}")
        return
    was_running = status == "running"
    steps.check("read", True, f"guest {vmid} ({gtype.value}) is {status}")
    snapname = f"felhom-selftest-{secrets.token_hex(4)}"
    marker = f"felhom selftest {format_utc(time.time())}"
    changed_description = False
    snap_made = steps.run("snapshot", "snapshot", {"snapname": snapname,
                                                    "description": "felhom-agent selftest"})
    ok = snap_made and steps.run("rollback", "rollback",
                                 {"snapname": snapname, **({"start": True} if was_running else {})})
    if snap_made:
        ok = steps.run("delete-snapshot", "delete_snapshot", {"snapname": snapname}) and ok
    if ok:
        new = f"{description.rstrip()}\n{marker}".strip()
        changed_description = True
        ok = steps.run("config-write", "set_config", {"description": new})
        ok = ok and _verify_description(client, steps, new, "config-verify")
    if changed_description:
        steps.run("config-restore", "set_config", {"description": description})
        _verify_description(client, steps, description, "config-restored")
    _restore_run_state(client, steps, was_running)


def _verify_description(client: ProxmoxClient, steps: _Steps, expected: str, name: str) -> bool:
    try:
        actual = client.guest_config(steps.vmid, steps.gtype).values
    except AgentError as err:
        return steps.check(name, False, f"cannot re-read config: {err}")
    diff = config_diff({"description": expected}, actual)
    if diff:
        return steps.check(name, False, "description read back differs after normalisation")
    return steps.check(name, True, "description read back equal (normalised)")


def _restore_run_state(client: ProxmoxClient, steps: _Steps, was_running: bool) -> None:
    try:
        now = client.guest_status(steps.vmid, steps.gtype).status
    except AgentError as err:
        steps.check("run-state", False, f"cannot read status: {err}")
        return
    wanted = "running" if was_running else "stopped"
    if now == wanted:
        steps.check("run-state", True, f"guest is {now}, as before the test")
        return
    kind = "start" if was_running else "stop"
    steps.run("run-state", kind, {})
