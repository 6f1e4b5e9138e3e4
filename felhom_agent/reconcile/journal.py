"""The durable op journal: intent, UPID and outcome of every mutation, crash-safe.

Reference design §7. Every mutation the agent sends to Proxmox leaves three records in
``<state_dir>/journal.log``:

* ``begin``   (op id, vmid, kind, params, source, time) — durable **before** the call is sent;
* ``upid``    (op id, UPID) — durable right after the call returned a task id;
* ``outcome`` (op id, state ``applied|failed|refused|unknown``, reason, exitstatus, time).

On start the journal is replayed: an op with a ``begin`` but no ``outcome`` is *pending* and
must be recovered (re-attached to its UPID, or looked up in the node's task list — see
:mod:`felhom_agent.reconcile.recovery`, never blindly re-sent); an op with an outcome is
never executed again (:class:`AlreadyApplied`).

File format: one record per line, ``<crc32 of the JSON, 8 lowercase hex> <compact JSON>\\n``,
ASCII only (``ensure_ascii``), so a line can never contain a stray newline. Each line is
written with one ``write`` on an ``O_APPEND`` descriptor and ``fsync``'d before the call
returns, so a caller acts only on records that are on disk. Why not a binary frame: the file
stays greppable for an operator, and the newline is a resynchronisation point — a corrupt line
costs that line only.

Replay never crashes on damage:

* a **torn tail** (a last line without its newline, e.g. SIGKILL or power loss mid-append) is
  truncated in place with one WARNING — it was never acted on, because the ``fsync`` that
  would have let the caller proceed had not returned;
* a **complete line that fails its checksum** or does not parse (bit rot, a stray edit) is
  reported with its line number and skipped; later valid lines are kept. The original file is
  saved as ``journal.log.broken.<time>`` and the journal rewritten without the bad lines, so the
  warning is not repeated on every start. Records of an op whose ``begin`` was lost still form an
  entry, flagged ``damaged`` (that is why ``upid`` and ``outcome`` records repeat vmid and kind).

A failed ``write``/``fsync`` raises :class:`~felhom_agent.durable.DurabilityError` and the
journal refuses every later append: it is never retried (the kernel may have dropped the dirty
pages), the agent exits and recovery runs from what is durable.

The journal is bounded, in memory and on disk. Memory holds every pending op but at most
``keep_outcomes`` finished ones, and none older than ``retain_s``: past the count the oldest
outcome is forgotten, those whose source ``evict_first`` names (the reconciler's ``plan:<n>``
ops, whose op ids are never submitted again) before any other (signed ops, refusals,
selftest). The same rule folds every record, live or replayed, so a restart rebuilds the same
index. When the file grows past ``max_bytes`` it is compacted (rewritten with
:func:`~felhom_agent.durable.atomic_write_bytes`) down to what memory still holds, so the file
is bounded by age *and* count too. Forgetting an outcome is safe for idempotency: a signed op
is refused once past its ``expires_at`` (``authz.max_op_lifetime_s`` + clock skew, minutes)
and its nonce is spent, and only thousands of newer outcomes push a signed one out.
Why a count bound, not only the age: under churn the reconciler finishes an op every few
seconds, and an index kept for ``retain_s`` (a week) grew by ~1.2 KB of live objects per op
(more in RSS, as they pin allocator arenas) with no end in sight (issue 9, the soak's RSS).

One ``threading.Lock`` serialises appends from the worker threads; a ``flock`` on
``journal.lock`` keeps a second agent process from appending to the same file.
"""

from __future__ import annotations

import enum
import errno
import fcntl
import json
import logging
import os
import threading
import zlib
from collections import OrderedDict
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs

from felhom_agent.durable import DurabilityError, atomic_write_bytes, fsync_dir, fsync_file
from felhom_agent.errors import AgentError

__all__ = [
    "JOURNAL_NAME",
    "AlreadyApplied",
    "CompactionResult",
    "Journal",
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
]

JOURNAL_NAME = "journal.log"
_LOCK_NAME = "journal.lock"
_DEFAULT_MAX_BYTES = 4 * 1024 * 1024
_DEFAULT_RETAIN_S = 7 * 24 * 3600.0
_DEFAULT_KEEP_OUTCOMES = 1000


class OpState(enum.StrEnum):
    """Terminal state of an op, as the HostReport ``ops[].state`` spells it."""

    APPLIED = "applied"
    FAILED = "failed"
    REFUSED = "refused"
    UNKNOWN = "unknown"


class JournalError(AgentError):
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


class AlreadyApplied(AgentError):
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
    corruption; its params and source are then unknown (``{}`` and ``""``).
    """

    op_id: str
    vmid: int
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
            "finished_at": None if o is None else _iso(o.finished_at),
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


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


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


def _vmid(record: Mapping[str, Any]) -> int:
    value = record.get("vmid")
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("vmid")
    return value


def _never(_source: str) -> bool:
    return False


class _State:
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
        keep_outcomes: int = _DEFAULT_KEEP_OUTCOMES,
        evict_first: Callable[[str], bool] = _never,
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
        vmid = _vmid(record)
        kind = _str(record, "kind")
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
                # Only a refusal is written without a begin, and it carries its source.
                refusal_source = _opt_str(record, "source")
                old = JournalEntry(op_id, vmid, kind, {}, refusal_source or "", None,
                                   damaged=refusal_source is None)
            entry = self.entries[op_id] = attrs.evolve(old, outcome=outcome)
            self._finished(entry)
        else:
            raise ValueError("t")


def _records_of(entry: JournalEntry) -> list[dict[str, Any]]:
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
        rec = {**base, "t": "outcome", "state": o.state.value, "reason": o.reason,
               "exitstatus": o.exitstatus, "time": o.finished_at}
        if entry.began_at is None and not entry.damaged:
            rec["source"] = entry.source
        out.append(rec)
    return out


class Journal:
    """The append-only op journal of one agent; see the module docstring for the contract.

    Use :meth:`open`; all methods are thread-safe.
    """

    def __init__(
        self,
        *,
        path: Path,
        fd: int,
        lock_fd: int,
        state: _State,
        report: ReplayReport,
        clock: Callable[[], float],
        logger: logging.Logger,
        max_bytes: int,
        retain_s: float,
    ) -> None:
        self._path = path
        self._fd: int | None = fd
        self._lock_fd: int | None = lock_fd
        self._state = state
        self.replay_report = report
        self._clock = clock
        self._log = logger
        self._max_bytes = max_bytes
        self._compact_at = max_bytes
        self._retain_s = retain_s
        self._lock = threading.Lock()
        self._failed: DurabilityError | None = None
        self._size = os.fstat(fd).st_size
        self._records = 0
        self._fsyncs = 0
        self._bytes = 0
        self._compactions = 0

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(
        cls,
        state_dir: Path,
        *,
        clock: Callable[[], float],
        logger: logging.Logger,
        max_bytes: int = _DEFAULT_MAX_BYTES,
        retain_s: float = _DEFAULT_RETAIN_S,
        keep_outcomes: int = _DEFAULT_KEEP_OUTCOMES,
        evict_first: Callable[[str], bool] = _never,
    ) -> Journal:
        """Open (creating if needed) and replay ``state_dir/journal.log``, repairing damage.

        Args:
            state_dir: the agent's state directory (created ``0700`` if missing).
            clock: wall-clock seconds since the epoch (record times are compared with PVE
                task start times during recovery).
            logger: receives one WARNING per repair.
            max_bytes: file size that triggers compaction before the next append.
            retain_s: how long an outcome is kept (in memory, and in the file from the next
                compaction on).
            keep_outcomes: how many outcomes are kept at most (pending ops do not count).
            evict_first: names the sources whose outcomes are forgotten first when past
                ``keep_outcomes`` (the daemon passes the ``plan:<n>`` test).

        Raises:
            JournalLocked: another process has the journal open.
            DurabilityError: the file could not be read, repaired or created durably.
        """
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = state_dir / JOURNAL_NAME
        lock_fd = _acquire_lock(state_dir / _LOCK_NAME, path)
        try:
            # A compaction killed mid-way leaves its temp file; we hold the lock, so it is stale.
            for stale in state_dir.glob(f".{JOURNAL_NAME}.tmp.*"):
                stale.unlink(missing_ok=True)
            state, report = _replay(path, clock=clock, logger=logger,
                                    state=_State(keep_outcomes, evict_first))
            state.forget_older_than(clock() - retain_s)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError as err:
                raise DurabilityError(f"cannot open journal ({err.strerror})", path=path) from err
            try:
                fsync_dir(state_dir)  # the file may have just been created
            except BaseException:
                os.close(fd)
                raise
        except BaseException:
            os.close(lock_fd)
            raise
        return cls(
            path=path, fd=fd, lock_fd=lock_fd, state=state, report=report, clock=clock,
            logger=logger, max_bytes=max_bytes, retain_s=retain_s,
        )

    @property
    def path(self) -> Path:
        """The journal file."""
        return self._path

    # ------------------------------------------------------------------ writing

    def begin(
        self, op_id: str, vmid: int, kind: str, params: Mapping[str, Any], source: str
    ) -> JournalEntry:
        """Durably record the intent of a mutation; call it **before** sending the call.

        Args:
            op_id: unique id (a signed op's ``op_id``, or one the engine generates).
            vmid: the guest.
            kind: the action kind (``start``, ``guest.rollback`` …).
            params: JSON-serialisable parameters (never a ``Secret``).
            source: ``plan:<generation>``, the signer principal, or ``selftest``.

        Raises:
            AlreadyApplied: the op id already has an outcome (idempotency).
            OpConflict: the op id is already pending, or params are not serialisable.
            DurabilityError: the record could not be made durable.
        """
        with self._lock:
            old = self._state.entries.get(op_id)
            if old is not None and old.outcome is not None:
                raise AlreadyApplied(old.outcome)
            if old is not None:
                raise OpConflict(f"op {op_id} is already pending", path=self._path)
            record = {"t": "begin", "op": op_id, "vmid": vmid, "kind": kind,
                      "params": dict(params), "source": source, "time": self._clock()}
            self._append(record)
            return self._state.entries[op_id]

    def record_upid(self, op_id: str, upid: str) -> JournalEntry:
        """Durably record the task id a mutating call returned; repeating the same UPID is a no-op.

        Raises:
            UnknownOp: the op was never begun.
            OpConflict: the op already has a different UPID or an outcome.
            DurabilityError: the record could not be made durable.
        """
        with self._lock:
            entry = self._known(op_id)
            if entry.upid == upid:
                return entry
            if entry.upid is not None or entry.outcome is not None:
                raise OpConflict(f"op {op_id} already has a UPID or an outcome", path=self._path)
            self._append({"t": "upid", "op": op_id, "vmid": entry.vmid, "kind": entry.kind,
                          "upid": upid, "time": self._clock()})
            return self._state.entries[op_id]

    def record_outcome(
        self, op_id: str, state: OpState | str, reason: str, exitstatus: str | None = None
    ) -> Outcome:
        """Durably record the terminal state of a begun op.

        Raises:
            UnknownOp: the op was never begun.
            OpConflict: the op already has an outcome, or ``state`` is not a known state.
            DurabilityError: the record could not be made durable.
        """
        with self._lock:
            entry = self._known(op_id)
            if entry.outcome is not None:
                raise OpConflict(f"op {op_id} already has an outcome", path=self._path)
            self._append({"t": "outcome", "op": op_id, "vmid": entry.vmid, "kind": entry.kind,
                          "state": self._state_value(state), "reason": reason,
                          "exitstatus": exitstatus, "time": self._clock()})
            outcome = self._state.entries[op_id].outcome
            assert outcome is not None  # noqa: S101 - just folded in by _append
            return outcome

    def record_refused(
        self, op_id: str, *, vmid: int, kind: str, source: str, reason: str
    ) -> Outcome:
        """Durably record that an op was refused without ever being begun (one record).

        The hub re-delivers a signed op until a report shows its outcome; storing the refusal
        makes the re-delivery answer from the journal instead of re-verifying and re-refusing.

        Raises:
            AlreadyApplied: the op id already has an outcome.
            OpConflict: the op id is pending (begun without outcome).
            DurabilityError: the record could not be made durable.
        """
        with self._lock:
            old = self._state.entries.get(op_id)
            if old is not None and old.outcome is not None:
                raise AlreadyApplied(old.outcome)
            if old is not None:
                raise OpConflict(f"op {op_id} is pending, cannot refuse it", path=self._path)
            self._append({"t": "outcome", "op": op_id, "vmid": vmid, "kind": kind,
                          "state": OpState.REFUSED.value, "reason": reason, "exitstatus": None,
                          "source": source, "time": self._clock()})
            outcome = self._state.entries[op_id].outcome
            assert outcome is not None  # noqa: S101 - just folded in by _append
            return outcome

    # ------------------------------------------------------------------ reading

    def outcome(self, op_id: str) -> Outcome | None:
        """The stored outcome of ``op_id``, or ``None`` if it has none (unknown or pending)."""
        with self._lock:
            entry = self._state.entries.get(op_id)
            return None if entry is None else entry.outcome

    def check_not_applied(self, op_id: str) -> None:
        """Raise :class:`AlreadyApplied` if ``op_id`` already has an outcome (idempotency gate)."""
        outcome = self.outcome(op_id)
        if outcome is not None:
            raise AlreadyApplied(outcome)

    def get(self, op_id: str) -> JournalEntry | None:
        """The entry of ``op_id``, or ``None``."""
        with self._lock:
            return self._state.entries.get(op_id)

    def pending(self) -> list[JournalEntry]:
        """Ops begun without an outcome, in begin order; ``upid`` may be ``None``."""
        with self._lock:
            return [e for e in self._state.entries.values() if e.outcome is None]

    def entries(self) -> list[JournalEntry]:
        """Every entry held (pending and retained outcomes), in first-record order."""
        with self._lock:
            return list(self._state.entries.values())

    def stats(self) -> JournalStats:
        """Counters since open."""
        with self._lock:
            return JournalStats(self._records, self._fsyncs, self._bytes, self._compactions,
                                self._size, len(self._state.entries), self._state.outcomes,
                                self._state.forgotten)

    # ------------------------------------------------------------------ bounding

    def compact(self, max_age_s: float) -> CompactionResult:
        """Rewrite the journal keeping pending ops and outcomes younger than ``max_age_s``.

        The rewrite is atomic (temp file, fsync, rename, directory fsync): a crash leaves
        either the old or the new file. Dropped entries leave memory too.

        Raises:
            DurabilityError: the rewrite failed; the journal refuses further appends.
        """
        with self._lock:
            return self._compact(max_age_s)

    def _compact(self, max_age_s: float) -> CompactionResult:
        self._check_usable()
        cutoff = self._clock() - max_age_s
        keep = {
            op_id: e for op_id, e in self._state.entries.items()
            if e.outcome is None or e.outcome.finished_at >= cutoff
        }
        data = b"".join(encode_line(r) for e in keep.values() for r in _records_of(e))
        before = self._size
        try:
            atomic_write_bytes(self._path, data)
            new_fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        except DurabilityError as err:
            self._failed = err
            raise
        except OSError as err:
            self._failed = DurabilityError(f"cannot reopen ({err.strerror})", path=self._path)
            raise self._failed from err
        old_fd, self._fd = self._fd, new_fd
        if old_fd is not None:
            os.close(old_fd)
        dropped = len(self._state.entries) - len(keep)
        self._state.replace(keep)
        self._size = len(data)
        self._fsyncs += 2
        self._compactions += 1
        # Never compact on every append when everything is young: wait for the file to double.
        self._compact_at = max(self._max_bytes, 2 * self._size)
        self._log.info(
            "journal compacted: kept %d entries, dropped %d, %d -> %d bytes",
            len(keep), dropped, before, self._size,
        )
        return CompactionResult(len(keep), dropped, before, self._size)

    def close(self) -> None:
        """Close the file and release the lock; idempotent."""
        with self._lock:
            for fd in (self._fd, self._lock_fd):
                if fd is not None:
                    os.close(fd)
            self._fd = self._lock_fd = None

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ internals

    def _known(self, op_id: str) -> JournalEntry:
        entry = self._state.entries.get(op_id)
        if entry is None:
            raise UnknownOp(f"op {op_id} was never begun", path=self._path)
        return entry

    def _state_value(self, state: OpState | str) -> str:
        try:
            return OpState(state).value
        except ValueError:
            raise OpConflict(f"unknown outcome state {state!r}", path=self._path) from None

    def _check_usable(self) -> None:
        if self._failed is not None:
            raise DurabilityError(
                "journal is unusable after an earlier durability failure", path=self._path
            ) from self._failed
        if self._fd is None:
            raise JournalError("journal is closed", path=self._path)

    def _append(self, record: dict[str, Any]) -> None:
        """Write one record and fsync it; caller holds the lock. Never retries."""
        self._check_usable()
        try:
            line = encode_line(record)
        except (TypeError, ValueError) as err:
            # The message names the type only, never a value (params may be sensitive).
            raise OpConflict(f"record is not serialisable: {err}", path=self._path) from None
        if self._size + len(line) > self._compact_at:
            self._compact(self._retain_s)
        fd = self._fd
        assert fd is not None  # noqa: S101 - checked by _check_usable
        try:
            view = memoryview(line)
            while view:
                view = view[os.write(fd, view):]
            fsync_file(fd, self._path)
        except DurabilityError as err:
            self._failed = err
            raise
        except OSError as err:
            self._failed = DurabilityError(f"append failed ({err.strerror})", path=self._path)
            raise self._failed from err
        # Fold in the decoded line, not ``record``: memory then equals what a replay rebuilds
        # (tuples become lists, and so on).
        self._state.apply(json.loads(line[9:]))
        if record["t"] == "outcome":
            self._state.forget_older_than(record["time"] - self._retain_s)
        self._size += len(line)
        self._records += 1
        self._fsyncs += 1
        self._bytes += len(line)


def _acquire_lock(lock_path: Path, journal_path: Path) -> int:
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as err:
        raise DurabilityError(f"cannot open lock file ({err.strerror})", path=lock_path) from err
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        os.close(fd)
        if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise JournalLocked(
                "another process holds the journal lock", path=journal_path
            ) from None
        raise DurabilityError(f"cannot lock ({err.strerror})", path=lock_path) from err
    return fd


def _replay(
    path: Path, *, clock: Callable[[], float], logger: logging.Logger, state: _State
) -> tuple[_State, ReplayReport]:
    """Rebuild the index into ``state`` from ``path`` and repair a torn tail or corrupt lines."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return state, ReplayReport(0, 0, (), None)
    except OSError as err:
        raise DurabilityError(f"cannot read journal ({err.strerror})", path=path) from err
    good: list[bytes] = []
    corrupt: list[int] = []
    end = data.rfind(b"\n") + 1  # bytes after the last newline are a torn tail
    torn = len(data) - end
    for lineno, line in enumerate(data[:end].split(b"\n")[:-1], start=1):
        record = decode_line(line)
        try:
            if record is None:
                raise ValueError("checksum")
            state.apply(record)
        except ValueError:
            corrupt.append(lineno)
            continue
        good.append(line + b"\n")
    broken: Path | None = None
    if corrupt:
        broken = path.with_name(f"{path.name}.broken.{int(clock())}")
        atomic_write_bytes(broken, data)
        atomic_write_bytes(path, b"".join(good))
        logger.warning(
            "journal %s: %d corrupt line(s) skipped (line numbers %s), %d torn tail byte(s) "
            "dropped, %d valid records kept; original saved as %s",
            path, len(corrupt), ",".join(map(str, corrupt[:20])), torn, len(good), broken,
        )
    elif torn:
        _truncate(path, end)
        logger.warning(
            "journal %s: torn tail of %d byte(s) after %d valid records truncated",
            path, torn, len(good),
        )
    return state, ReplayReport(len(good), torn, tuple(corrupt), broken)


def _truncate(path: Path, size: int) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    except OSError as err:
        raise DurabilityError(f"cannot open for truncation ({err.strerror})", path=path) from err
    try:
        try:
            os.ftruncate(fd, size)
        except OSError as err:
            raise DurabilityError(f"truncate failed ({err.strerror})", path=path) from err
        fsync_file(fd, path)
    finally:
        os.close(fd)
