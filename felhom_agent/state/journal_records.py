"""The op journal's records: their types, the checksummed line codec and the in-memory index.

Split from :mod:`felhom_agent.state.journal`, which keeps the file handling (lock, append
with fsync, replay and repair, compaction) and re-exports everything here. One line of the
file is ``<crc32, 8 lowercase hex> <compact JSON>\n``; :class:`EntryIndex` folds those records into
one :class:`JournalEntry` per op id, bounded as the journal's docstring describes.
"""

from __future__ import annotations

import enum
import json
import zlib
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs

from felhom_agent.errors import ReconcileError
from felhom_agent.kinds.registry import is_host_kind
from felhom_agent.utc import format_utc

__all__ = [
    "DEFAULT_KEEP_OUTCOMES",
    "AlreadyApplied",
    "CompactionResult",
    "EntryIndex",
    "JournalEntry",
    "JournalError",
    "JournalLocked",
    "JournalStats",
    "OpConflict",
    "OpState",
    "Outcome",
    "ReplayReport",
    "UnknownOp",
    "decode_line",
    "encode_line",
    "never_evict",
    "records_of",
]

DEFAULT_KEEP_OUTCOMES = 1000


class OpState(enum.StrEnum):
    """Terminal state of an op, as the HostReport ``ops[].state`` spells it."""

    APPLIED = "applied"
    FAILED = "failed"
    REFUSED = "refused"
    UNKNOWN = "unknown"


class JournalError(ReconcileError):
    """A journal operation was refused; carries the journal path for context."""

    def __init__(self, message: str, *, path: Path) -> None:
        super().__init__(f"{message} (journal {path})")
        self.path = path


class JournalLocked(JournalError, BlockingIOError):
    """Another process holds the journal lock (a second agent on the same ``state_dir``)."""


class UnknownOp(JournalError, LookupError):
    """A ``upid``/``outcome`` was recorded for an op id the journal has never begun."""


class OpConflict(JournalError, ValueError):
    """The record contradicts the journal: an op begun twice, a second UPID, a second outcome."""


@attrs.frozen
class Outcome:
    """The stored result of an op; replayed, never recomputed, when the op id comes again."""

    op_id: str
    state: OpState
    reason: str
    exitstatus: str | None
    finished_at: float


class AlreadyApplied(ReconcileError):
    """The op id already has an outcome: it is not executed again; report ``outcome`` instead.

    Args:
        outcome: the stored outcome of the earlier execution.
    """

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(f"op {outcome.op_id} already has outcome {outcome.state.value}")
        self.outcome = outcome


@attrs.frozen
class JournalEntry:
    """Everything the journal knows about one op (a snapshot; the journal never mutates it).

    ``began_at`` is ``None`` and ``damaged`` is true when the op's ``begin`` line was lost to
    corruption; its params and source are then unknown (``{}`` and ``""``). ``vmid`` is
    ``None`` exactly for a host kind (``host.*``: it acts on no guest).
    """

    op_id: str
    vmid: int | None
    kind: str
    params: Mapping[str, Any]
    source: str
    began_at: float | None
    upid: str | None = None
    upid_at: float | None = None
    outcome: Outcome | None = None
    damaged: bool = False

    @property
    def pending(self) -> bool:
        """True while the op has no outcome (it may be running on the node)."""
        return self.outcome is None

    def to_report(self) -> dict[str, Any]:
        """The HostReport ``ops[]`` item: state ``running`` while pending, times as ``…Z``."""
        o = self.outcome
        return {
            "op_id": self.op_id,
            "state": "running" if o is None else o.state.value,
            "reason": "" if o is None else o.reason,
            "upid": self.upid,
            "finished_at": None if o is None else format_utc(o.finished_at),
            "vmid": self.vmid,
        }


@attrs.frozen
class ReplayReport:
    """What opening the journal found: counts for the log and the HostReport ``errors``."""

    records: int
    torn_bytes: int
    corrupt_lines: tuple[int, ...]
    broken_copy: Path | None

    @property
    def clean(self) -> bool:
        """True when the file needed no repair."""
        return self.torn_bytes == 0 and not self.corrupt_lines


@attrs.frozen
class CompactionResult:
    """Effect of one compaction: entries kept/dropped and the file size before/after."""

    kept: int
    dropped: int
    bytes_before: int
    bytes_after: int


@attrs.frozen
class JournalStats:
    """Counters since open (T13: fsyncs per job ≤ 3; bytes per record), and the memory bound:
    ``held`` entries in memory now (``outcomes`` of them finished), ``forgotten`` since open."""

    records: int
    fsyncs: int
    bytes_written: int
    compactions: int
    size: int
    held: int = 0
    outcomes: int = 0
    forgotten: int = 0


def encode_line(record: Mapping[str, Any]) -> bytes:
    """Frame one record as ``<crc32 hex> <compact JSON>\\n`` (ASCII, sorted keys).

    Raises:
        TypeError, ValueError: the record is not JSON-serialisable (e.g. holds a ``Secret``).
    """
    payload = json.dumps(
        record, separators=(",", ":"), sort_keys=True, ensure_ascii=True, allow_nan=False
    ).encode("ascii")
    return b"%08x %s\n" % (zlib.crc32(payload), payload)


def decode_line(line: bytes) -> dict[str, Any] | None:
    """Return the record of one line (without its newline), or ``None`` if it is corrupt.

    Strict on purpose: exactly 8 lowercase hex digits, one space, a JSON object whose CRC32
    matches — so a flipped case bit in the checksum is caught too.
    """
    if len(line) < 11 or line[8:9] != b" ":
        return None
    payload = line[9:]
    if line[:8] != b"%08x" % zlib.crc32(payload):
        return None
    try:
        record = json.loads(payload)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def _str(record: Mapping[str, Any], key: str) -> str:
    value = record.get(key)
    if not isinstance(value, str):
        raise ValueError(key)
    return value


def _opt_str(record: Mapping[str, Any], key: str) -> str | None:
    value = record.get(key)
    if value is not None and not isinstance(value, str):
        raise ValueError(key)
    return value


def _num(record: Mapping[str, Any], key: str) -> float:
    value = record.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(key)
    return float(value)


def _vmid(record: Mapping[str, Any], kind: str) -> int | None:
    """A guest kind's vmid; ``null`` is read only for a host kind (it has none)."""
    value = record.get("vmid")
    if value is None and is_host_kind(kind):
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("vmid")
    return value


def never_evict(_source: str) -> bool:
    return False


class EntryIndex:
    """The in-memory index rebuilt from records; shared by replay and live appends.

    Bounded (see the module docstring): ``_cheap`` and ``_kept`` list the op ids with an
    outcome in the order their outcome was folded in -- ``_cheap`` those whose source
    ``evict_first`` names -- so trimming to ``keep_outcomes`` and by age pops from the front
    (amortised O(1) per record) instead of scanning every entry. Fold order is finish order
    unless the wall clock stepped back; an outcome stuck behind a younger one then simply
    waits for it (the count bound still holds).
    """

    def __init__(
        self,
        keep_outcomes: int = DEFAULT_KEEP_OUTCOMES,
        evict_first: Callable[[str], bool] = never_evict,
    ) -> None:
        self.entries: dict[str, JournalEntry] = {}
        self._keep = max(1, keep_outcomes)
        self._evict_first = evict_first
        self._cheap: OrderedDict[str, None] = OrderedDict()
        self._kept: OrderedDict[str, None] = OrderedDict()
        self.forgotten = 0

    @property
    def outcomes(self) -> int:
        """How many entries with an outcome are held."""
        return len(self._cheap) + len(self._kept)

    @property
    def keep_outcomes(self) -> int:
        """The count bound."""
        return self._keep

    def kept_since(self, since: float) -> int:
        """How many held outcomes of sources *not* evicted first finished at or after ``since``.

        The count bound drops such an outcome only when nothing evicted first is left and
        ``keep_outcomes`` of them are held; each one that replaces it finished later. So while
        this is below ``keep_outcomes`` no outcome that finished at or after ``since`` has been
        dropped by the count bound (the age bound aside).
        """
        held = (self.entries[op_id].outcome for op_id in self._kept)
        return sum(1 for o in held if o is not None and o.finished_at >= since)

    def replace(self, entries: dict[str, JournalEntry]) -> None:
        """Hold exactly ``entries`` (after a compaction), keeping the eviction order."""
        self.entries = entries
        for order in (self._cheap, self._kept):
            for op_id in [k for k in order if k not in entries]:
                del order[op_id]

    def forget_older_than(self, cutoff: float) -> None:
        """Forget the outcomes that finished before ``cutoff`` (pending ops are never dropped)."""
        for order in (self._cheap, self._kept):
            while order:
                op_id = next(iter(order))
                outcome = self.entries[op_id].outcome
                if outcome is not None and outcome.finished_at >= cutoff:
                    break
                self._drop(order, op_id)

    def _drop(self, order: OrderedDict[str, None], op_id: str) -> None:
        del order[op_id]
        self.entries.pop(op_id, None)
        self.forgotten += 1

    def _finished(self, entry: JournalEntry) -> None:
        """Note that ``entry`` has (a new) outcome and trim to ``keep_outcomes``."""
        for order in (self._cheap, self._kept):
            order.pop(entry.op_id, None)
        order = self._cheap if self._evict_first(entry.source) else self._kept
        order[entry.op_id] = None
        while self.outcomes > self._keep:
            victims = self._cheap or self._kept
            self._drop(victims, next(iter(victims)))

    def apply(self, record: Mapping[str, Any]) -> None:
        """Fold one well-formed record in; raises ValueError on a malformed one."""
        kind_of = record.get("t")
        op_id = _str(record, "op")
        kind = _str(record, "kind")
        vmid = _vmid(record, kind)
        time = _num(record, "time")
        old = self.entries.get(op_id)
        if kind_of == "begin":
            params = record.get("params")
            if not isinstance(params, dict):
                raise ValueError("params")
            source = _str(record, "source")
            if old is None:
                self.entries[op_id] = JournalEntry(op_id, vmid, kind, params, source, time)
            elif old.damaged and old.began_at is None:
                self.entries[op_id] = attrs.evolve(
                    old, params=params, source=source, began_at=time, damaged=False
                )
            # A repeated begin for a known op keeps the first one (never written by us).
        elif kind_of == "upid":
            upid = _str(record, "upid")
            base = old or JournalEntry(op_id, vmid, kind, {}, "", None, damaged=True)
            self.entries[op_id] = attrs.evolve(base, upid=upid, upid_at=time)
        elif kind_of == "outcome":
            outcome = Outcome(
                op_id,
                OpState(_str(record, "state")),
                _str(record, "reason"),
                _opt_str(record, "exitstatus"),
                time,
            )
            if old is None:
                # An op decided without a call (refused, failed before anything was sent,
                # already satisfied) is written as one outcome record carrying its source.
                refusal_source = _opt_str(record, "source")
                params = record.get("params")
                old = JournalEntry(op_id, vmid, kind,
                                   params if isinstance(params, dict) else {},
                                   refusal_source or "", None, damaged=refusal_source is None)
            entry = self.entries[op_id] = attrs.evolve(old, outcome=outcome)
            self._finished(entry)
        else:
            raise ValueError("t")


def records_of(entry: JournalEntry) -> list[dict[str, Any]]:
    """The records that reproduce ``entry`` exactly (used by compaction)."""
    base = {"op": entry.op_id, "vmid": entry.vmid, "kind": entry.kind}
    out: list[dict[str, Any]] = []
    if entry.began_at is not None:
        out.append(
            {**base, "t": "begin", "params": dict(entry.params), "source": entry.source,
             "time": entry.began_at}
        )
    if entry.upid is not None:
        out.append({**base, "t": "upid", "upid": entry.upid, "time": entry.upid_at or 0.0})
    if entry.outcome is not None:
        o = entry.outcome
        rec: dict[str, Any] = {**base, "t": "outcome", "state": o.state.value,
                               "reason": o.reason, "exitstatus": o.exitstatus,
                               "time": o.finished_at}
        if entry.began_at is None and not entry.damaged:
            rec["source"] = entry.source
            if entry.params:
                rec["params"] = dict(entry.params)
        out.append(rec)
    return out
