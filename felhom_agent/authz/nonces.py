"""FileNonceStore: the durable record of accepted signed ops, so none is ever replayed.

A signed op carries a random ``nonce`` and an ``op_id``; once an op is accepted both are
recorded here *before* the op is executed, so the same op (or another op reusing either
value) is refused afterwards — also after a restart. Records are needed only until the op
could not pass the expiry check anyway, so the store stays tiny (``docs/sshsig.md`` ("Freshness and
replay")).

File format (``state_dir/nonces.log``), append-only, one frame per line::

    felhom-nonces v1
    <crc32 of the JSON, 8 hex> <one-line JSON record>

* **Append** = ``write`` on an ``O_APPEND`` descriptor, then ``fdatasync``; a created file is
  made durable (header fsynced, directory fsynced) before the first record counts. A failed
  fsync raises :class:`~felhom_agent.durable.DurabilityError` and the store refuses every
  further op: the agent is expected to exit and recover from what is durable.
* **Torn tail**: only the last frame can be incomplete (its fdatasync never returned, so that
  op was never accepted): a ``.broken`` copy is kept, the file is truncated after the last
  good frame and a WARNING is logged.
* **Fail closed**: any other damage (bad header, bad frame before the last, unreadable file,
  another process holding the lock) puts the store in a failed state in which *every* signed
  op is refused with a reason naming the file and the fix. Starting empty instead would let
  every unexpired op be replayed. The daemon keeps running (benign reconcile continues).
  :func:`reset_store` moves a broken file aside, but only once every op it could hold has
  expired.
* **Pruning**: records with ``now > expires_at + max_clock_skew_s`` are dropped by compaction
  (atomic rewrite) at open and when the file grows past a threshold; the newest acceptance is
  always kept, as the persisted high-water mark for the clock guard below.
* **Clock moved back**: ops are refused while ``now`` is more than ``max_clock_skew_s`` before
  the newest recorded acceptance (otherwise expired ops would become valid again).
* **One writer**: an exclusive ``flock`` on ``nonces.log.lock`` for the store's lifetime.

Read-only mode (``--verify-op``) takes no lock, writes nothing, ignores a torn tail and treats
a missing file as empty.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

from felhom_agent.authz.envelope import SignedOp
from felhom_agent.authz.errors import NonceStoreError, OpRejected, Reason
from felhom_agent.authz.nonce_file import (
    HEADER,
    NonceRecord,
    StoreDamaged,
    parse_store,
    reset_store,
)
from felhom_agent.durable import DurabilityError, atomic_write_bytes, fsync_dir
from felhom_agent.utc import format_utc

__all__ = ["HEADER", "FileNonceStore", "NonceRecord", "NonceStoreError", "reset_store"]

MAX_FILE_SIZE: Final = 16 << 20
COMPACT_THRESHOLD: Final = 1 << 20
_LOG = logging.getLogger(__name__)


class FileNonceStore:
    """The durable nonce/op-id store; see the module docstring for the rules.

    Create with :meth:`open`. Thread-safe: :meth:`check` and :meth:`mark` serialise on one
    lock, and :meth:`mark` re-checks under it, so two threads cannot both accept one nonce.
    """

    def __init__(
        self,
        path: Path,
        *,
        max_clock_skew_s: int,
        max_op_lifetime_s: int,
        read_only: bool,
        logger: logging.Logger,
    ) -> None:
        self.path = path
        self._skew = timedelta(seconds=max_clock_skew_s)
        self._lifetime = timedelta(seconds=max_op_lifetime_s)
        self._read_only = read_only
        self._log = logger
        self._lock = threading.Lock()
        self._records: dict[str, NonceRecord] = {}
        self._by_op_id: dict[str, NonceRecord] = {}
        self._high_water: datetime | None = None
        self._fd: int | None = None
        self._lock_fd: int | None = None
        self._failure: str | None = None
        self._size = 0

    @classmethod
    def open(
        cls,
        path: Path,
        *,
        now: datetime,
        max_clock_skew_s: int,
        max_op_lifetime_s: int,
        read_only: bool = False,
        logger: logging.Logger | None = None,
    ) -> FileNonceStore:
        """Open (creating if needed), recover a torn tail, prune and compact.

        Never raises for a damaged or locked store: it comes back *failed* (see
        :attr:`failure`), refusing every op. Raises :class:`DurabilityError` only if creating
        or compacting the file cannot be made durable.
        """
        store = cls(
            path,
            max_clock_skew_s=max_clock_skew_s,
            max_op_lifetime_s=max_op_lifetime_s,
            read_only=read_only,
            logger=logger or _LOG,
        )
        try:
            store._load(now)
        except StoreDamaged as err:
            store._fail(str(err), now)
        return store

    @property
    def failure(self) -> str | None:
        """Why the store refuses every op, or ``None`` when it is usable."""
        return self._failure

    def __len__(self) -> int:
        return len(self._records)

    def __enter__(self) -> FileNonceStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the file and the lock (idempotent)."""
        for fd in (self._fd, self._lock_fd):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._fd = self._lock_fd = None

    def check(self, op: SignedOp, now: datetime) -> None:
        """Refuse ``op`` if the store is failed, the clock went back, or it is a replay.

        Raises:
            OpRejected: ``NONCE_STORE_UNAVAILABLE``, ``CLOCK_MOVED_BACK``, ``NONCE_REPLAY``
                or ``OP_ID_REPLAY``.
        """
        with self._lock:
            self._check_locked(op, now)

    def accepted(self, op_id: str) -> NonceRecord | None:
        """The record of ``op_id`` if this store accepted it and has not pruned it yet.

        ``None`` too when the store is failed (it then holds nothing).
        """
        with self._lock:
            return self._by_op_id.get(op_id)

    def mark(self, op: SignedOp, *, signer: str, payload_sha256: str, now: datetime) -> None:
        """Durably record ``op`` as accepted; call right before it is queued for execution.

        Raises:
            OpRejected: as :meth:`check` (a concurrent or earlier acceptance wins).
            DurabilityError: the record could not be made durable; the store is now failed.
            NonceStoreError: the store was opened read-only.
        """
        if self._read_only:
            raise NonceStoreError(f"{self.path}: opened read-only, cannot mark a nonce")
        record = NonceRecord(
            nonce=op.nonce,
            op_id=op.op_id,
            signer=signer,
            payload_sha256=payload_sha256,
            issued_at=op.issued_at,
            expires_at=op.expires_at,
            accepted_at=now,
        )
        with self._lock:
            self._check_locked(op, now)
            self._append(record.to_frame(), now)
            self._index(record)
            if self._size > COMPACT_THRESHOLD:
                self._compact(now)

    # -- internals -------------------------------------------------------------------------

    def _check_locked(self, op: SignedOp, now: datetime) -> None:
        if self._failure is not None:
            raise OpRejected(Reason.NONCE_STORE_UNAVAILABLE, self._failure)
        if self._high_water is not None and now < self._high_water - self._skew:
            raise OpRejected(
                Reason.CLOCK_MOVED_BACK,
                f"the clock ({format_utc(now)}) is behind the newest accepted op "
                f"({format_utc(self._high_water)}); fix the time (NTP) before signed ops are "
                "accepted",
            )
        seen = self._records.get(op.nonce)
        if seen is not None:
            raise OpRejected(
                Reason.NONCE_REPLAY,
                f"nonce {op.nonce} was already used by op {seen.op_id} "
                f"(accepted {format_utc(seen.accepted_at)})",
            )
        seen = self._by_op_id.get(op.op_id)
        if seen is not None:
            raise OpRejected(
                Reason.OP_ID_REPLAY,
                f"op {op.op_id} was already accepted at {format_utc(seen.accepted_at)}",
            )

    def _fail(self, detail: str, now: datetime) -> None:
        self._failure = (
            f"nonce store {self.path} is unusable ({detail}); no signed op is accepted until "
            f"an operator acts: repair or restore the file, or move it aside once every op it "
            f"may hold has expired (after {format_utc(self._safe_reset_time(now))})"
        )
        self._log.error("%s", self._failure)
        self._records.clear()
        self._by_op_id.clear()

    def _safe_reset_time(self, now: datetime) -> datetime:
        try:
            mtime = max(now, datetime.fromtimestamp(self.path.stat().st_mtime, UTC))
        except OSError:
            mtime = now  # unknown: count from now, the conservative end
        newest = max(mtime, self._high_water) if self._high_water else mtime
        return newest + self._lifetime + 2 * self._skew

    def _index(self, record: NonceRecord) -> None:
        self._records[record.nonce] = record
        self._by_op_id[record.op_id] = record
        if self._high_water is None or record.accepted_at > self._high_water:
            self._high_water = record.accepted_at

    def _append(self, frame: bytes, now: datetime) -> None:
        if self._fd is None:
            raise NonceStoreError(f"{self.path}: store is closed")
        try:
            view = memoryview(frame)
            while view:
                view = view[os.write(self._fd, view) :]
            os.fdatasync(self._fd)
        except OSError as err:
            self._fail(f"append failed: {err.strerror}", now)
            raise DurabilityError(
                f"nonce store append failed ({err.strerror})", path=self.path
            ) from err
        self._size += len(frame)

    def _load(self, now: datetime) -> None:
        if not self._read_only:
            self._take_lock()
        data = self._read_or_create(now)
        records, good_end, torn = parse_store(data)
        for record in records:
            self._index(record)
        if torn and not self._read_only:
            self._repair_tail(data, good_end)
        self._size = good_end
        if len(self._live(records, now)) < len(records) and not self._read_only:
            self._compact(now)

    def _take_lock(self) -> None:
        lock_path = self.path.with_name(self.path.name + ".lock")
        try:
            self._lock_fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as err:
            raise StoreDamaged("locked by another process (is a second agent running?)") from err
        except OSError as err:
            raise StoreDamaged(f"cannot lock {lock_path}: {err.strerror}") from err

    def _read_or_create(self, now: datetime) -> bytes:
        flags = os.O_RDONLY if self._read_only else os.O_RDWR | os.O_APPEND
        try:
            fd = os.open(self.path, flags | os.O_CLOEXEC)
        except FileNotFoundError:
            if self._read_only:
                return HEADER
            return self._create(now)
        except OSError as err:
            raise StoreDamaged(f"cannot open: {err.strerror}") from err
        try:
            size = os.fstat(fd).st_size
            if size > MAX_FILE_SIZE:
                raise StoreDamaged(f"{size} bytes, larger than the {MAX_FILE_SIZE} byte limit")
            data = os.pread(fd, size, 0)
        except OSError as err:
            os.close(fd)
            raise StoreDamaged(f"cannot read: {err.strerror}") from err
        except StoreDamaged:
            os.close(fd)
            raise
        if self._read_only:
            os.close(fd)
        else:
            self._fd = fd
        if not data:
            # Created but the header never became durable: no record can exist yet.
            if not self._read_only:
                self._log.warning("nonce store %s is empty; writing its header", self.path)
                self._append(HEADER, now)
                fsync_dir(self.path.parent)
            return HEADER
        return data

    def _create(self, now: datetime) -> bytes:
        flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
        try:
            self._fd = os.open(self.path, flags, 0o600)
        except OSError as err:
            raise StoreDamaged(f"cannot create: {err.strerror}") from err
        self._append(HEADER, now)
        fsync_dir(self.path.parent)
        self._log.info("created nonce store %s", self.path)
        return HEADER

    def _repair_tail(self, data: bytes, good_end: int) -> None:
        broken = self.path.with_name(self.path.name + ".broken")
        atomic_write_bytes(broken, data)
        if self._fd is None:
            raise NonceStoreError(f"{self.path}: store is closed")
        try:
            os.ftruncate(self._fd, good_end)
            os.fsync(self._fd)
        except OSError as err:
            raise DurabilityError(f"truncate failed ({err.strerror})", path=self.path) from err
        self._log.warning(
            "nonce store %s: torn last frame dropped (%d bytes; copy kept in %s)",
            self.path,
            len(data) - good_end,
            broken,
        )

    def _live(self, records: list[NonceRecord], now: datetime) -> list[NonceRecord]:
        """Records still needed: unexpired ones, plus the newest acceptance even if expired,
        so the clock-moved-back guard survives a restart after everything expired."""
        newest = max(records, key=lambda r: r.accepted_at, default=None)
        return [r for r in records if now <= r.expires_at + self._skew or r is newest]

    def _compact(self, now: datetime) -> None:
        live = self._live(list(self._records.values()), now)
        body = HEADER + b"".join(r.to_frame() for r in live)
        atomic_write_bytes(self.path, body)
        old = self._fd
        try:
            self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CLOEXEC)
        except OSError as err:
            self._fail(f"cannot reopen after compaction: {err.strerror}", now)
            raise DurabilityError("cannot reopen compacted nonce store", path=self.path) from err
        if old is not None:
            os.close(old)
        high_water = self._high_water
        self._records.clear()
        self._by_op_id.clear()
        for record in live:
            self._index(record)
        self._high_water = high_water
        self._size = len(body)
