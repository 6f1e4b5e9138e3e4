"""The audit log: one durable JSON line per mutation, with who asked for it and how it ended.

An append-only audit log records every mutation with its source (plan generation or signer
principal) and outcome (``docs/architecture.md``, "Durable state"). Where the op journal
(:mod:`.journal`) is the agent's working memory and is compacted, the audit log is for people: plain
JSON lines (``jq``-friendly, no checksum prefix), one per finished mutation::

    {"time": "2026-11-26T10:00:01.250Z", "op_id": "…", "source": "plan:7", "kind": "start",
     "vmid": 101, "upid": "UPID:pve1:…", "outcome": "applied", "reason": ""}

Every line is written with one ``write`` on an ``O_APPEND`` descriptor and ``fsync``'d before
:meth:`AuditLog.append` returns; a failure raises
:class:`~felhom_agent.durable.DurabilityError` and the log refuses further appends (never
retried, like the journal). A torn last line left by a crash is truncated on open with one
WARNING, so the next record starts on a fresh line.

Bounded by size: when ``audit.log`` would grow past ``max_bytes`` it is renamed to
``audit.log.1`` (replacing the previous old file, so at most two files exist) and a new file
is started; both renames are made durable with a directory ``fsync``.

:meth:`AuditLog.recent` serves the HostReport's ``audit`` list from memory (the newest
``keep_recent`` records, loaded from both files on open), so a heartbeat never reads the disk.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

from felhom_agent.durable import DurabilityError, fsync_dir, fsync_file, truncate_durably
from felhom_agent.utc import format_utc

__all__ = ["AUDIT_NAME", "AuditLog", "AuditRecord"]

AUDIT_NAME = "audit.log"
_DEFAULT_MAX_BYTES = 1024 * 1024
_DEFAULT_KEEP_RECENT = 200


@attrs.frozen
class AuditRecord:
    """One audited mutation. ``source`` is ``plan:<generation>``, a signer principal, or
    ``selftest``; ``outcome`` is the op state (``applied``, ``failed``, ``refused``,
    ``unknown``); ``vmid`` is ``None`` for a host kind (it acts on no guest)."""

    time: str
    op_id: str
    source: str
    kind: str
    vmid: int | None
    upid: str | None
    outcome: str
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The JSON object written to the file and sent in the HostReport ``audit`` list."""
        return attrs.asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> AuditRecord | None:
        """Parse one line's object; ``None`` if it is not an audit record."""
        if not isinstance(data, dict):
            return None
        try:
            vmid = data["vmid"]
            upid = data.get("upid")
            strings = [data[k] for k in ("time", "op_id", "source", "kind", "outcome")]
            reason = data.get("reason", "")
        except KeyError:
            return None
        if (isinstance(vmid, bool) or not (vmid is None or isinstance(vmid, int))
                or not all(isinstance(s, str) for s in [*strings, reason])
                or not (upid is None or isinstance(upid, str))):
            return None
        time, op_id, source, kind, outcome = strings
        return cls(time, op_id, source, kind, vmid, upid, outcome, reason)


class AuditLog:
    """Append-only, fsync'd, size-rotated audit log under ``state_dir``; thread-safe.

    Use :meth:`open`.
    """

    def __init__(
        self,
        *,
        path: Path,
        fd: int,
        recent: collections.deque[AuditRecord],
        clock: Callable[[], float],
        logger: logging.Logger,
        max_bytes: int,
        on_fatal: Callable[[DurabilityError], None] | None = None,
    ) -> None:
        self._path = path
        self._fd: int | None = fd
        self._recent = recent
        self._clock = clock
        self._log = logger
        self._max_bytes = max_bytes
        self._size = os.fstat(fd).st_size
        self._lock = threading.Lock()
        self._failed: DurabilityError | None = None
        self._on_fatal = on_fatal

    @classmethod
    def open(
        cls,
        state_dir: Path,
        *,
        clock: Callable[[], float],
        logger: logging.Logger,
        max_bytes: int = _DEFAULT_MAX_BYTES,
        keep_recent: int = _DEFAULT_KEEP_RECENT,
        on_fatal: Callable[[DurabilityError], None] | None = None,
    ) -> AuditLog:
        """Open (creating if needed) ``state_dir/audit.log``, repairing a torn last line.

        Args:
            state_dir: the agent's state directory (created ``0700`` if missing).
            clock: wall-clock seconds since the epoch, for the record ``time``.
            logger: receives a WARNING for a repaired tail or unreadable lines.
            max_bytes: size past which the file is rotated to ``audit.log.1``.
            keep_recent: how many records :meth:`recent` can return.
            on_fatal: called once with the first durability failure of an append (the
                daemon's fatal-error callback; the error is raised to the caller as well).

        Raises:
            DurabilityError: the file could not be read, repaired or created durably.
        """
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = state_dir / AUDIT_NAME
        recent: collections.deque[AuditRecord] = collections.deque(maxlen=keep_recent)
        skipped = 0
        for file in (path.with_name(path.name + ".1"), path):
            skipped += _load(file, recent, logger=logger, repair=file == path)
        if skipped:
            logger.warning("audit log %s: %d unreadable line(s) ignored", path, skipped)
        fd = _open_append(path)
        return cls(path=path, fd=fd, recent=recent, clock=clock, logger=logger,
                   max_bytes=max_bytes, on_fatal=on_fatal)

    @property
    def path(self) -> Path:
        """The current audit file."""
        return self._path

    def append(
        self,
        *,
        op_id: str,
        source: str,
        kind: str,
        vmid: int | None,
        upid: str | None,
        outcome: str,
        reason: str = "",
    ) -> AuditRecord:
        """Durably append one record (rotating first if the file would pass ``max_bytes``).

        Raises:
            DurabilityError: the record could not be made durable; the log refuses more.
        """
        with self._lock:
            if self._failed is not None:
                raise DurabilityError(
                    "audit log is unusable after an earlier durability failure", path=self._path
                ) from self._failed
            if self._fd is None:
                raise DurabilityError("audit log is closed", path=self._path)
            record = AuditRecord(format_utc(self._clock(), millis=True), op_id, source, kind,
                                 vmid, upid, outcome, reason)
            line = (json.dumps(record.to_dict(), separators=(",", ":"), ensure_ascii=True)
                    + "\n").encode("ascii")
            try:
                if self._size > 0 and self._size + len(line) > self._max_bytes:
                    self._rotate()
                view = memoryview(line)
                while view:
                    view = view[os.write(self._fd, view):]
                fsync_file(self._fd, self._path)
            except DurabilityError as err:
                self._fail(err)
                raise
            except OSError as err:
                raise self._fail(DurabilityError(
                f"append failed ({err.strerror})", path=self._path)) from err
            self._size += len(line)
            self._recent.append(record)
            return record

    def _fail(self, err: DurabilityError) -> DurabilityError:
        """Remember the first durability failure (no more appends) and report it once."""
        first = self._failed is None
        self._failed = self._failed or err
        if first and self._on_fatal is not None:
            self._on_fatal(err)
        return err

    def recent(self, n: int) -> list[AuditRecord]:
        """The newest ``n`` records (at most ``keep_recent``), oldest first."""
        with self._lock:
            if n <= 0:
                return []
            return list(self._recent)[-n:]

    def close(self) -> None:
        """Close the file; idempotent."""
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _rotate(self) -> None:
        """Move the current file to ``.1`` (dropping the older one) and start a new one."""
        assert self._fd is not None  # noqa: S101 - checked by append
        os.close(self._fd)
        self._fd = None
        old = self._path.with_name(self._path.name + ".1")
        try:
            os.replace(self._path, old)
        except OSError as err:
            raise DurabilityError(f"rotation failed ({err.strerror})", path=old) from err
        self._fd = _open_append(self._path)
        self._size = 0
        self._log.info("audit log rotated to %s", old)


def _open_append(path: Path) -> int:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as err:
        raise DurabilityError(f"cannot open audit log ({err.strerror})", path=path) from err
    try:
        fsync_dir(path.parent)  # makes a creation or a rotation rename durable
    except BaseException:
        os.close(fd)
        raise
    return fd


def _load(
    path: Path, into: collections.deque[AuditRecord], *, logger: logging.Logger, repair: bool
) -> int:
    """Read records from ``path`` into ``into``; truncate a torn tail if ``repair``.

    Returns the number of complete but unreadable lines (reported, never fatal).
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return 0
    except OSError as err:
        raise DurabilityError(f"cannot read audit log ({err.strerror})", path=path) from err
    end = data.rfind(b"\n") + 1
    if repair and end < len(data):
        truncate_durably(path, end)
        logger.warning("audit log %s: torn tail of %d byte(s) truncated", path, len(data) - end)
    bad = 0
    for line in data[:end].splitlines():
        try:
            record = AuditRecord.from_dict(json.loads(line))
        except ValueError:
            record = None
        if record is None:
            bad += 1
        else:
            into.append(record)
    return bad
