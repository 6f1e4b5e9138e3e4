"""The report's ``restore`` entries, built from the journal like ``ops``.

A signed restore leaves up to four journal entries: the op itself (``<op id>``: its
``begin``, UPID and outcome; or one record when it was decided without a call -- refused by
the gate, or failed because a step before it failed), and its gate steps
``<op id>.stop-first`` and ``<op id>.safety-backup``. :func:`restore_entries` folds them into
one entry per restore: the target, the archive, the state, and the safety backup's volid
(named in that step's applied outcome). While only the safety backup is journalled, the
restore is ``running`` (its archive is in that step's params). Nothing is read from PVE:
the report costs nothing per restore (``docs/architecture.md``, "Restore").
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

from felhom_agent.backup.notes import SAFETY_BACKUP_SUFFIX
from felhom_agent.execution.status import RestoreEntry
from felhom_agent.kinds.backup_handlers import volid_in_summary
from felhom_agent.kinds.restore_handlers import RESTORE_ARCHIVE_PARAM
from felhom_agent.state.journal import JournalEntry, OpState
from felhom_agent.state.recovery import is_plan_source
from felhom_agent.utc import format_utc
from felhom_agent.vmids import is_vmid

__all__ = ["RESTORE_KIND", "restore_entries"]

#: The executor name of the restore kind (as the journal records it).
RESTORE_KIND: Final = "restore"


def _archive(params: Mapping[str, Any], key: str) -> str | None:
    value = params.get(key)
    return value if isinstance(value, str) else None


def _safety_volid(entry: JournalEntry | None) -> str | None:
    if entry is None or entry.outcome is None or entry.outcome.state is not OpState.APPLIED:
        return None
    return volid_in_summary(entry.outcome.reason)


def restore_entries(entries: Iterable[JournalEntry], limit: int = 50) -> list[RestoreEntry]:
    """One entry per signed restore in ``entries``: running ones first, then the newest.

    Args:
        entries: every journal entry held (:meth:`Journal.entries`).
        limit: the most entries returned.
    """
    by_id = {e.op_id: e for e in entries}
    out: list[tuple[float, RestoreEntry]] = []
    running = float("inf")
    for entry in by_id.values():
        if entry.vmid is None:
            continue  # a host op: never a restore
        if entry.kind == RESTORE_KIND and not is_plan_source(entry.source):
            target = entry.params.get("target_vmid")
            outcome = entry.outcome
            safety = _safety_volid(by_id.get(entry.op_id + SAFETY_BACKUP_SUFFIX))
            out.append((running if outcome is None else outcome.finished_at, RestoreEntry(
                op_id=entry.op_id, vmid=target if is_vmid(target) else entry.vmid,
                archive=_archive(entry.params, "archive"),
                state="running" if outcome is None else outcome.state.value,
                safety_backup=safety, upid=entry.upid,
                finished_at=None if outcome is None else format_utc(outcome.finished_at),
                reason=None if outcome is None else outcome.reason)))
        elif entry.op_id.endswith(SAFETY_BACKUP_SUFFIX):
            op_id = entry.op_id.removesuffix(SAFETY_BACKUP_SUFFIX)
            if op_id in by_id or RESTORE_ARCHIVE_PARAM not in entry.params:
                continue  # the restore's own entry speaks for it
            safety = _safety_volid(entry)
            out.append((running, RestoreEntry(
                op_id=op_id, vmid=entry.vmid,
                archive=_archive(entry.params, RESTORE_ARCHIVE_PARAM), state="running",
                safety_backup=safety,
                reason="safety backup running" if entry.outcome is None else
                f"safety backup {entry.outcome.state.value}; the restore is next")))
    out.sort(key=lambda pair: pair[0], reverse=True)
    return [e for _, e in out[:max(0, limit)]]
