"""Waiting for PVE tasks: the poll policy, the terminal-state rules, and the dual-mode rule.

Every mutation PVE forks returns a UPID and HTTP 200 -- which is *not* success: locks and
permissions are often checked inside the task (``docs/pve-facts.md``, "Calls: synchronous or a
task"). :func:`wait_task` polls ``GET /nodes/{node-from-upid}/tasks/{upid}/status`` until
``stopped`` and maps ``exitstatus`` (``docs/pve-facts.md``, "Task status"; ``docs/architecture.md``,
"Waiting for tasks"):

* ``OK`` -> success; ``WARNINGS: n`` -> success with warnings (never a retry trigger);
* ``unexpected status`` (or empty) -> :class:`TaskUnknown` (decide by re-reading the guest);
* anything else -> :class:`TaskFailed` carrying PVE's text;
* deadline passed or ``cancel`` set -> :class:`TaskTimeout`: *still running*, keep the UPID.

Right after dispatch the status read may answer 400 ``{"upid": "no such task"}`` until the
worker has created its log file; that is tolerated for ``no_such_task_grace_s``. Transient
failures (transport, 5xx) while polling are tolerated until the deadline: the task runs on
regardless of our connection.

The dual-mode rule: a mutating call answers either a UPID (wait on it) or ``null``
(synchronous success) -- :class:`Dispatch` holds which, :func:`complete` applies it.
"""

from __future__ import annotations

import enum
import logging
import re
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import attrs

from felhom_agent.backoff import Attempt, FirstThen, Proportional
from felhom_agent.proxmox.errors import (
    ParameterError,
    ServerError,
    TaskFailed,
    TaskTimeout,
    TaskUnknown,
    TransportError,
)
from felhom_agent.proxmox.models import TaskStatus
from felhom_agent.proxmox.upid import Upid, parse_upid

__all__ = [
    "Dispatch",
    "PollPolicy",
    "TaskOutcome",
    "TaskResult",
    "TaskStatusSource",
    "complete",
    "result_from_exitstatus",
    "wait_task",
]

log = logging.getLogger(__name__)

_WARNINGS_RE = re.compile(r"WARNINGS: (\d+)")


@attrs.frozen
class PollPolicy:
    """How long after the previous poll's slot the next poll is due: fast first, then
    proportional to the task's age, capped.

    The delay after the first poll is ``base_s + growth * elapsed`` (capped at ``cap_s``), so
    the detection lag stays a fixed fraction of the task's age while the number of polls grows
    only logarithmically with the task's duration: a 0.2 s task is seen after ~2 polls, a 5 s
    task after ~12, a 30-minute backup is polled every ``cap_s``.

    Pure: no clock, no sleep -- test it by calling it. The shape is
    :class:`felhom_agent.backoff.FirstThen` over :class:`~felhom_agent.backoff.Proportional`.
    """

    first_s: float = 0.1
    base_s: float = 0.1
    growth: float = 0.25
    cap_s: float = 5.0

    def __call__(self, polls_done: int, elapsed_s: float) -> float:
        """Seconds to wait before poll number ``polls_done + 1`` (``elapsed_s`` since start).

        The first poll also waits ``first_s``: a task is never done the instant it was forked.
        """
        wait = FirstThen(self.first_s, Proportional(self.base_s, self.growth, self.cap_s))
        return wait(Attempt(polls_done, elapsed_s))


class TaskOutcome(enum.StrEnum):
    """How a mutation ended successfully."""

    OK = "ok"
    WARNINGS = "warnings"
    SYNCHRONOUS = "synchronous"  # the call answered null: done inside the request


@attrs.frozen
class TaskResult:
    """A successful end: the outcome, PVE's exitstatus, the warning count and wait figures.

    ``exit_probe`` is what the waiter's ``on_exit`` hook returned while the status read that
    found the task stopped was in flight (the task watcher's ``wait``); None when none ran.
    """

    upid: Upid | None
    outcome: TaskOutcome
    exitstatus: str | None = None
    warnings: int = 0
    polls: int = 0
    waited_s: float = 0.0
    exit_probe: object = None


class TaskStatusSource(Protocol):
    """Anything that can read a task's status (the client; a fake in unit tests)."""

    def task_status(self, upid: Upid) -> TaskStatus:
        """Read ``GET /nodes/{upid.node}/tasks/{upid}/status``."""
        ...


@attrs.frozen
class Dispatch:
    """What a mutating call answered: a UPID to wait on, or ``None`` (synchronous success)."""

    upid: Upid | None

    @property
    def synchronous(self) -> bool:
        """True when the call completed inside the request (it answered ``null``)."""
        return self.upid is None

    @classmethod
    def from_data(cls, data: Any) -> Dispatch:
        """Apply the dual-mode rule to a call's ``data``.

        Raises:
            UpidError: ``data`` is neither ``null`` nor a well-formed UPID.
        """
        if data is None:
            return cls(upid=None)
        return cls(upid=parse_upid(data))


def result_from_exitstatus(
    upid: Upid, exitstatus: str | None, *, polls: int = 0, waited_s: float = 0.0
) -> TaskResult:
    """Map a stopped task's ``exitstatus`` to a result, or raise.

    Raises:
        TaskUnknown: ``unexpected status`` or no exitstatus at all.
        TaskFailed: any other non-success text.
    """
    text = (exitstatus or "").strip()
    if text == "OK":
        return TaskResult(upid, TaskOutcome.OK, text, 0, polls, waited_s)
    match = _WARNINGS_RE.fullmatch(text)
    if match is not None:
        return TaskResult(upid, TaskOutcome.WARNINGS, text, int(match[1]), polls, waited_s)
    if not text or text == "unexpected status":
        raise TaskUnknown(text, upid=upid.raw)
    raise TaskFailed(text, upid=upid.raw)


def wait_task(
    source: TaskStatusSource,
    upid: Upid | str,
    *,
    timeout_s: float,
    policy: PollPolicy | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], object] | None = None,
    cancel: threading.Event | None = None,
    no_such_task_grace_s: float = 5.0,
) -> TaskResult:
    """Poll a task on the node named in its UPID until it stops; never re-dispatches.

    Args:
        source: reads task status (normally the :class:`ProxmoxClient`).
        upid: the task id; a string is parsed strictly first.
        timeout_s: the overall wait deadline (separate from the HTTP timeout).
        policy: the poll backoff (default :class:`PollPolicy`).
        clock: monotonic seconds (injectable).
        sleep: sleeps between polls (injectable; default ``cancel.wait`` or ``time.sleep``).
        cancel: set it to end the wait early (shutdown); raises :class:`TaskTimeout`.
        no_such_task_grace_s: how long ``no such task`` counts as "not started yet".

    Raises:
        UpidError: ``upid`` is malformed (raised by :func:`parse_upid`).
        TaskFailed, TaskUnknown: the task stopped without success.
        TaskTimeout: the deadline passed or ``cancel`` was set; the task may still run.
        PveError: a non-transient API error (auth, permission, a persistent ``no such task``).
    """
    parsed = upid if isinstance(upid, Upid) else parse_upid(upid)
    policy = policy or PollPolicy()
    if sleep is None:
        sleep = cancel.wait if cancel is not None else time.sleep
    start = clock()
    deadline = start + timeout_s
    polls = 0
    last_status: str | None = None
    last_error: Exception | None = None
    # Polls follow an absolute schedule (start + the policy's delays), so request round
    # trips do not accumulate into the lag; a poll that overran its slot is followed by at
    # least half a delay's pause, so a slow server is never hammered.
    next_at = start
    while True:
        now = clock()
        delay = policy(polls, next_at - start)
        next_at = max(next_at + delay, now + delay / 2)
        sleep(max(0.0, min(next_at, deadline) - now))
        if cancel is not None and cancel.is_set():
            raise TaskTimeout(
                f"wait interrupted; task {parsed.raw} may still be running",
                upid=parsed.raw,
                last_status=last_status,
            ) from last_error
        polls += 1
        try:
            status = source.task_status(parsed)
        except ParameterError as err:
            if not (err.no_such_task and clock() - start < no_such_task_grace_s):
                raise
            last_status, last_error = "no such task (not started yet)", err
        except (TransportError, ServerError) as err:
            log.warning("polling task %s failed (will retry): %s", parsed.raw, err)
            last_status, last_error = f"poll failed: {err}", err
        else:
            last_error = None
            if not status.running:
                return result_from_exitstatus(
                    parsed, status.exitstatus, polls=polls, waited_s=clock() - start
                )
            last_status = status.status
        if clock() >= deadline:
            raise TaskTimeout(
                f"task {parsed.raw} still running after {timeout_s:g} s "
                f"(last status: {last_status})",
                upid=parsed.raw,
                last_status=last_status,
            ) from last_error


def complete(
    source: TaskStatusSource,
    dispatch: Dispatch,
    *,
    timeout_s: float,
    **wait_kwargs: Any,
) -> TaskResult:
    """The dual-mode rule: wait on a dispatched UPID, or report synchronous success."""
    if dispatch.upid is None:
        return TaskResult(upid=None, outcome=TaskOutcome.SYNCHRONOUS)
    return wait_task(source, dispatch.upid, timeout_s=timeout_s, **wait_kwargs)
