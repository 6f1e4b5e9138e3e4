"""What to do with a pending journal entry after a restart: the pure recovery decision.

``docs/architecture.md`` ("Durable state") and ``docs/control-core.md`` ("Crash consistency"). An op
with a ``begin`` record but no outcome may or may not have reached PVE. :func:`decide_recovery`
compares it with the node's task list (fetched once by the engine) and answers one of:

* :class:`Reattach` -- a UPID is known (journaled, or found in the task list): wait on it,
  never re-issue;
* :class:`Recheck` -- nothing found yet, but the request may still be in flight: look again;
* :class:`Replan` -- a reconciler action that left no task: the reconciler re-plans it from
  observed state;
* :class:`MarkUnknown` -- an order (signed op, selftest) that left no task: record ``unknown``
  and report it, never re-send it;
* :class:`Rerun` -- a host op (``host.*``): it leaves no task to look for, and every one of its
  steps checks before it acts (convergent), so running it again completes what was begun and
  repeats nothing; the host lane runs it again.

No I/O here: the engine does the reads and applies the decision. Which tasks can belong to an
entry is the recovery rule of its kind: the ``task_types`` of its registry entry
(:mod:`felhom_agent.kinds.registry`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs

from felhom_agent.kinds.registry import is_host_kind
from felhom_agent.kinds.registry import task_id as registry_task_id
from felhom_agent.kinds.registry import task_types as registry_task_types
from felhom_agent.state.journal import JournalEntry

__all__ = [
    "PLAN_SOURCE_PREFIX",
    "SELFTEST_SOURCE",
    "MarkUnknown",
    "Reattach",
    "Recheck",
    "RecoveryDecision",
    "Replan",
    "Rerun",
    "TaskInfo",
    "decide_recovery",
    "is_plan_source",
    "plan_source",
]

PLAN_SOURCE_PREFIX = "plan:"
SELFTEST_SOURCE = "selftest"

def plan_source(generation: int) -> str:
    """The journal/audit source of a reconciler action: ``plan:<generation>``."""
    return f"{PLAN_SOURCE_PREFIX}{generation}"


def is_plan_source(source: str) -> bool:
    """True for ``plan:<digits>``: such an op may be re-planned; anything else is an order."""
    rest = source.removeprefix(PLAN_SOURCE_PREFIX)
    return rest != source and rest.isascii() and rest.isdigit()


@attrs.frozen
class TaskInfo:
    """One row of ``GET /nodes/{node}/tasks`` (only the fields recovery compares)."""

    upid: str
    type: str
    id: str
    user: str
    starttime: float
    status: str | None = None
    tokenid: str | None = None

    @classmethod
    def coerce(cls, task: TaskInfo | Mapping[str, Any]) -> TaskInfo | None:
        """Build from a task-list dict; ``None`` for a row missing what matching needs."""
        if isinstance(task, TaskInfo):
            return task
        try:
            return cls(
                upid=str(task["upid"]), type=str(task["type"]), id=str(task.get("id", "")),
                user=str(task["user"]), starttime=float(task["starttime"]),
                status=None if task.get("status") is None else str(task["status"]),
                tokenid=None if task.get("tokenid") is None else str(task["tokenid"]),
            )
        except (KeyError, TypeError, ValueError):
            return None

    def started_by(self, token_user: str) -> bool:
        """True if ``token_user`` (``user@realm!tokenid``) started the task.

        PVE lists either the full ``user@realm!tokenid`` in ``user`` or splits it into
        ``user`` and ``tokenid``; both spellings match.
        """
        full = self.user if self.tokenid is None else f"{self.user}!{self.tokenid}"
        return full == token_user


@attrs.frozen
class Reattach:
    """Wait on ``upid`` (never re-issue); ``adopted`` means it came from the task list and
    should be journaled with :meth:`Journal.record_upid` first."""

    upid: str
    adopted: bool


@attrs.frozen
class Recheck:
    """No task found yet, but the request may still be in flight: look again at ``not_before``."""

    not_before: float
    reason: str


@attrs.frozen
class Replan:
    """A reconciler action that provably left no task: drop it, plan again from actual state."""

    reason: str


@attrs.frozen
class MarkUnknown:
    """An order (signed op, selftest) with no task found: record outcome ``unknown``, report
    it, and never re-send it."""

    reason: str


@attrs.frozen
class Rerun:
    """A pending host op: run it again (its steps check before they act, so it completes
    what was begun and repeats nothing)."""

    reason: str


RecoveryDecision = Reattach | Recheck | Replan | MarkUnknown | Rerun


def decide_recovery(
    entry: JournalEntry,
    tasks: Sequence[TaskInfo | Mapping[str, Any]],
    *,
    token_user: str,
    now: float,
    grace_s: float = 40.0,
    skew_s: float = 2.0,
    task_types: Callable[[str], frozenset[str]] = registry_task_types,
    host_kind: Callable[[str], bool] = is_host_kind,
) -> RecoveryDecision:
    """Decide what to do with a pending journal entry after a restart (pure function).

    Args:
        entry: a pending entry from :meth:`Journal.pending`.
        tasks: the node's task list (``source=all``, recent enough to cover the entry).
        token_user: our token as ``user@realm!tokenid``; tasks of anyone else never match.
        now: the current wall-clock time.
        grace_s: how long after ``began_at`` a request may still be in flight (the HTTP
            timeout for mutating calls plus margin); until then "not found" means "look again".
        skew_s: tolerated clock difference between the agent and the node.
        task_types: the PVE worker types of a kind (the registry's recovery rule).
        host_kind: whether a kind is a host kind (run again, never looked up).

    Raises:
        ValueError: the entry already has an outcome.
    """
    if entry.outcome is not None:
        raise ValueError(f"op {entry.op_id} has an outcome; nothing to recover")
    if host_kind(entry.kind):
        return Rerun("a host op left pending is run again: each step checks before it acts")
    if entry.upid is not None:
        return Reattach(entry.upid, adopted=False)
    if entry.vmid is None:  # only a damaged record could say so; nothing to match a task by
        return MarkUnknown("no vmid recorded; the call may or may not have reached PVE")
    types = task_types(entry.kind)
    task_id = registry_task_id(entry.kind, entry.vmid, entry.params)
    matches: list[TaskInfo] = []
    if entry.began_at is not None:
        for raw in tasks:
            task = TaskInfo.coerce(raw)
            if (task is not None and task.type in types and task.id == task_id
                    and task.started_by(token_user)
                    and task.starttime >= entry.began_at - skew_s):
                matches.append(task)
    if matches:
        first = min(matches, key=lambda t: (t.starttime, t.upid))
        return Reattach(first.upid, adopted=True)
    if entry.began_at is not None and now < entry.began_at + grace_s:
        return Recheck(entry.began_at + grace_s, "no matching task yet; request may be in flight")
    if is_plan_source(entry.source):
        return Replan("no matching task on the node; re-plan from actual state")
    return MarkUnknown(
        "no matching task on the node; the call may or may not have reached PVE"
    )
