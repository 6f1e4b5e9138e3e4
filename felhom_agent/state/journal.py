"""The durable op journal: intent, UPID and outcome of every mutation, crash-safe.

``docs/architecture.md`` ("Durable state"). Every mutation the agent sends to Proxmox leaves three
records in ``<state_dir>/journal.log``:

* ``begin``   (op id, vmid, kind, params, source, time) — durable **before** the call is sent;
* ``upid``    (op id, UPID) — durable right after the call returned a task id;
* ``outcome`` (op id, state ``applied|failed|refused|unknown``, reason, exitstatus, time).

An op decided **without** a call (refused; failed before anything was sent; already in the
desired state) gets one ``outcome`` record that carries its source and no ``begin``
(:meth:`Journal.record_decided`). So a ``begin`` in the file always means "a call may have
been sent", and a crash can never leave a ``begin`` that claims otherwise.

On start the journal is replayed: an op with a ``begin`` but no ``outcome`` is *pending* and
must be recovered (re-attached to its UPID, or looked up in the node's task list — see
:mod:`felhom_agent.state.recovery`, never blindly re-sent); an op with an outcome is
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

import errno
import fcntl
import json
import logging
import os
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from felhom_agent.durable import (
    DurabilityError,
    atomic_write_bytes,
    fsync_dir,
    fsync_file,
    truncate_durably,
)
from felhom_agent.kinds.registry import is_host_kind
from felhom_agent.state.journal_records import (
    DEFAULT_KEEP_OUTCOMES,
    AlreadyApplied,
    CompactionResult,
    EntryIndex,
    JournalEntry,
    JournalError,
    JournalLocked,
    JournalStats,
    OpConflict,
    OpState,
    Outcome,
    ReplayReport,
    UnknownOp,
    decode_line,
    encode_line,
    never_evict,
    records_of,
)

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
_DEFAULT_KEEP_OUTCOMES = DEFAULT_KEEP_OUTCOMES


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
        state: EntryIndex,
        report: ReplayReport,
        clock: Callable[[], float],
        logger: logging.Logger,
        max_bytes: int,
        on_fatal: Callable[[DurabilityError], None] | None = None,
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
        self._on_fatal = on_fatal
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
        evict_first: Callable[[str], bool] = never_evict,
        on_fatal: Callable[[DurabilityError], None] | None = None,
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
            on_fatal: called once with the first durability failure of an append or a
                compaction (the daemon's fatal-error callback; the error is raised as well).

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
                                    state=EntryIndex(keep_outcomes, evict_first))
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
            logger=logger, max_bytes=max_bytes, retain_s=retain_s, on_fatal=on_fatal,
        )

    @property
    def path(self) -> Path:
        """The journal file."""
        return self._path

    # ------------------------------------------------------------------ writing

    def begin(
        self, op_id: str, vmid: int | None, kind: str, params: Mapping[str, Any], source: str
    ) -> JournalEntry:
        """Durably record the intent of a mutation; call it **before** sending the call.

        Args:
            op_id: unique id (a signed op's ``op_id``, or one the engine generates).
            vmid: the guest; ``None`` only for a host kind (``host.*``).
            kind: the action kind (``start``, ``guest.rollback`` …).
            params: JSON-serialisable parameters (never a ``Secret``).
            source: ``plan:<generation>``, the signer principal, or ``selftest``.

        Raises:
            AlreadyApplied: the op id already has an outcome (idempotency).
            OpConflict: the op id is already pending, params are not serialisable, or a
                guest kind has no vmid.
            DurabilityError: the record could not be made durable.
        """
        self._check_vmid(op_id, vmid, kind)
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
        self, op_id: str, *, vmid: int | None, kind: str, source: str, reason: str
    ) -> Outcome:
        """Durably record that an op was refused without ever being begun (one record).

        The hub re-delivers a signed op until a report shows its outcome; storing the refusal
        makes the re-delivery answer from the journal instead of re-verifying and re-refusing.

        Raises:
            AlreadyApplied: the op id already has an outcome.
            OpConflict: the op id is pending (begun without outcome).
            DurabilityError: the record could not be made durable.
        """
        return self._decided(op_id, vmid, kind, source, state=OpState.REFUSED, reason=reason)

    def record_decided(
        self, op_id: str, *, vmid: int | None, kind: str, source: str, state: OpState | str,
        reason: str, params: Mapping[str, Any] | None = None,
    ) -> Outcome:
        """Durably record the outcome of an op that was decided **without any call** (one record).

        For an op that never needs a ``begin``: refused, failed before anything was sent
        (expired, a safety step failed, the guest could not be read), or already in the
        desired state. One record is crash-atomic: either the outcome is on disk or nothing
        is. A ``begin`` followed by an outcome would not be -- a crash between the two leaves
        a ``begin`` without a UPID, which recovery must treat as "the call may have reached
        PVE" (``unknown``) although none was sent. ``params`` (a signed op's, JSON values)
        are kept with the outcome, so a report can say what the refused op asked for.

        Raises:
            AlreadyApplied: the op id already has an outcome.
            OpConflict: the op id is pending (begun without outcome), or ``state`` is unknown.
            DurabilityError: the record could not be made durable.
        """
        return self._decided(op_id, vmid, kind, source, state=state, reason=reason,
                             params=params)

    def _decided(self, op_id: str, vmid: int | None, kind: str, source: str, *,
                 state: OpState | str, reason: str,
                 params: Mapping[str, Any] | None = None) -> Outcome:
        self._check_vmid(op_id, vmid, kind)
        with self._lock:
            old = self._state.entries.get(op_id)
            if old is not None and old.outcome is not None:
                raise AlreadyApplied(old.outcome)
            if old is not None:
                raise OpConflict(f"op {op_id} is pending, cannot decide it without a call",
                                 path=self._path)
            record: dict[str, Any] = {
                "t": "outcome", "op": op_id, "vmid": vmid, "kind": kind,
                "state": self._state_value(state), "reason": reason, "exitstatus": None,
                "source": source, "time": self._clock()}
            if params:
                record["params"] = dict(params)
            self._append(record)
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

    def may_have_forgotten(self, since: float) -> bool:
        """Could an outcome that finished at or after ``since`` have been forgotten?

        False proves that an op id absent from the journal has no outcome recorded since
        ``since``: it is younger than the age bound, and fewer than ``keep_outcomes``
        outcomes of sources not evicted first are held since then (see
        :meth:`EntryIndex.kept_since`). The signed-op consumer asks before it runs an op
        accepted at ``since`` that has no record: only then is "no record" proof that it was
        never sent.
        """
        with self._lock:
            if since < self._clock() - self._retain_s:
                return True
            return self._state.kept_since(since) >= self._state.keep_outcomes

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
        data = b"".join(encode_line(r) for e in keep.values() for r in records_of(e))
        before = self._size
        try:
            atomic_write_bytes(self._path, data)
            new_fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        except DurabilityError as err:
            self._fail(err)
            raise
        except OSError as err:
            raise self._fail(DurabilityError(
                f"cannot reopen ({err.strerror})", path=self._path)) from err
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

    def _check_vmid(self, op_id: str, vmid: int | None, kind: str) -> None:
        # Replay reads a null vmid only for a host kind: never write one it would refuse.
        if vmid is None and not is_host_kind(kind):
            raise OpConflict(f"op {op_id}: kind {kind} needs a vmid", path=self._path)

    def _state_value(self, state: OpState | str) -> str:
        try:
            return OpState(state).value
        except ValueError:
            raise OpConflict(f"unknown outcome state {state!r}", path=self._path) from None

    def _fail(self, err: DurabilityError) -> DurabilityError:
        """Remember the first durability failure (no more appends) and report it once."""
        first = self._failed is None
        self._failed = self._failed or err
        if first and self._on_fatal is not None:
            self._on_fatal(err)
        return err

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
            self._fail(err)
            raise
        except OSError as err:
            raise self._fail(DurabilityError(
                f"append failed ({err.strerror})", path=self._path)) from err
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
    path: Path, *, clock: Callable[[], float], logger: logging.Logger, state: EntryIndex
) -> tuple[EntryIndex, ReplayReport]:
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
        truncate_durably(path, end)
        logger.warning(
            "journal %s: torn tail of %d byte(s) after %d valid records truncated",
            path, torn, len(good),
        )
    return state, ReplayReport(len(good), torn, tuple(corrupt), broken)
