"""The pure recovery decision for pending journal entries.

See ``docs/architecture.md`` ("Durable state") and ``docs/control-core.md`` ("Crash consistency").
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from felhom_agent.state.journal import JournalEntry, OpState, Outcome
from felhom_agent.state.recovery import (
    MarkUnknown,
    Reattach,
    Recheck,
    RecoveryDecision,
    Replan,
    TaskInfo,
    decide_recovery,
    is_plan_source,
    plan_source,
)

TOKEN = "felhom@pve!agent"
T0 = 1_790_000_000.0
NOW = T0 + 600


def entry(
    *, kind: str = "start", source: str = "plan:7", upid: str | None = None,
    began_at: float | None = T0, vmid: int = 101,
) -> JournalEntry:
    return JournalEntry("op", vmid, kind, {}, source, began_at, upid=upid,
                        damaged=began_at is None)


def task(
    *, upid: str = "UPID:found", type_: str = "qmstart", id_: str = "101",
    user: str = TOKEN, start: float = T0 + 1, tokenid: str | None = None,
) -> dict[str, Any]:
    row: dict[str, Any] = {"upid": upid, "type": type_, "id": id_, "user": user,
                           "starttime": int(start), "status": "OK"}
    if tokenid is not None:
        row["tokenid"] = tokenid
    return row


CASES: list[tuple[str, JournalEntry, list[Mapping[str, Any]], RecoveryDecision]] = [
    ("journaled UPID always re-attaches, task list ignored",
     entry(upid="UPID:mine", source="alice@ops"), [], Reattach("UPID:mine", adopted=False)),
    ("matching task is adopted", entry(), [task()], Reattach("UPID:found", adopted=True)),
    ("LXC worker type matches too", entry(), [task(type_="vzstart")],
     Reattach("UPID:found", adopted=True)),
    ("HA-managed start matches hastart", entry(kind="guest.start", source="alice@ops"),
     [task(type_="hastart")], Reattach("UPID:found", adopted=True)),
    ("user and tokenid split across fields match", entry(),
     [task(user="felhom@pve", tokenid="agent")], Reattach("UPID:found", adopted=True)),
    ("start within clock skew matches", entry(), [task(start=T0 - 1)],
     Reattach("UPID:found", adopted=True)),
    ("earliest of several candidates wins", entry(),
     [task(upid="UPID:late", start=T0 + 50), task(upid="UPID:early", start=T0 + 3)],
     Reattach("UPID:early", adopted=True)),
    ("plan action with no task is re-planned", entry(), [], Replan("")),
    ("task started before the record is not ours", entry(), [task(start=T0 - 60)], Replan("")),
    ("another user's task is not ours", entry(), [task(user="root@pam")], Replan("")),
    ("the backing user without our token is not ours", entry(),
     [task(user="felhom@pve")], Replan("")),
    ("another guest's task is not ours", entry(), [task(id_="102")], Replan("")),
    ("another kind's task is not ours", entry(), [task(type_="qmstop")], Replan("")),
    ("malformed task rows are ignored", entry(), [{"upid": "UPID:x"}, {"starttime": "soon"}],
     Replan("")),
    ("signed op with no task is marked unknown, never re-sent",
     entry(kind="guest.rollback", source="alice@ops"), [], MarkUnknown("")),
    ("selftest op with no task is marked unknown", entry(source="selftest"), [],
     MarkUnknown("")),
    ("a principal that only looks like a plan is an order", entry(source="plan:x"), [],
     MarkUnknown("")),
    ("synchronous LXC config write leaves no task: re-plan", entry(kind="set_config"),
     [task(type_="vzconfig")], Replan("")),
    ("damaged entry without time cannot match: unknown", entry(began_at=None, source=""),
     [task()], MarkUnknown("")),
]


@pytest.mark.parametrize(("name", "pending", "tasks", "expected"), CASES,
                         ids=[c[0] for c in CASES])
def test_decision_table(
    name: str, pending: JournalEntry, tasks: list[Mapping[str, Any]],
    expected: RecoveryDecision,
) -> None:
    """Each case of the recovery rule maps to its decision (reasons are free text)."""
    got = decide_recovery(pending, tasks, token_user=TOKEN, now=NOW)
    assert type(got) is type(expected)
    if isinstance(expected, Reattach):
        assert got == expected


def test_recent_record_without_task_is_rechecked_not_abandoned() -> None:
    """Inside the grace period a missing task means "look again", for plans and orders alike."""
    for source in ("plan:1", "alice@ops"):
        got = decide_recovery(entry(source=source), [], token_user=TOKEN, now=T0 + 5,
                              grace_s=40)
        assert isinstance(got, Recheck) and got.not_before == T0 + 40
    assert isinstance(
        decide_recovery(entry(), [], token_user=TOKEN, now=T0 + 40, grace_s=40), Replan
    )


def test_entry_with_outcome_is_not_recoverable() -> None:
    """Recovering an op that already has an outcome is a caller bug and raises ValueError."""
    done = JournalEntry("op", 101, "start", {}, "plan:1", T0,
                        outcome=Outcome("op", OpState.APPLIED, "", "OK", T0 + 1))
    with pytest.raises(ValueError, match="has an outcome"):
        decide_recovery(done, [], token_user=TOKEN, now=NOW)


def test_task_info_objects_are_accepted() -> None:
    """The task list may hold TaskInfo objects as well as dicts."""
    info = TaskInfo("UPID:obj", "qmstart", "101", TOKEN, T0 + 2)
    assert decide_recovery(entry(), [info], token_user=TOKEN, now=NOW) == Reattach(
        "UPID:obj", adopted=True
    )


def test_source_helpers() -> None:
    """plan_source builds plan:<n> and is_plan_source accepts exactly that shape."""
    assert plan_source(7) == "plan:7"
    assert is_plan_source("plan:7")
    for other in ("plan:", "plan:7a", "plan:٣", "alice@ops", "selftest", "xplan:7"):
        assert not is_plan_source(other), other
