"""Crash-safe file primitives shared by the journal, the nonce store and the audit log.

Two shapes (``docs/architecture.md``, "Durable state"):

* :func:`atomic_write_bytes` — whole-file replacement: write a temp file in the same
  directory, ``fsync`` it, ``os.replace`` it over the target, then ``fsync`` the directory so
  the rename itself is durable. A reader sees the old file or the new one, never a mix.
* :func:`fsync_dir` — the directory half of that, also used after creating an append-only log.

A failed ``fsync`` is never retried (the kernel may have dropped the dirty pages and cleared
the error; a retry would "succeed" over lost data): it raises :class:`DurabilityError` and the
caller is expected to stop and let recovery run from what is durable.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from felhom_agent.errors import AgentError

__all__ = ["DurabilityError", "atomic_write_bytes", "fsync_dir", "fsync_file", "truncate_durably"]


class DurabilityError(AgentError, OSError):
    """Data could not be made durable (write or fsync failed); do not retry, exit and recover.

    Args:
        message: what failed.
        path: the file or directory concerned.
    """

    def __init__(self, message: str, *, path: Path) -> None:
        super().__init__(f"{message}: {path}")
        self.path = path


def fsync_file(fd: int, path: Path) -> None:
    """``fsync`` an open descriptor, mapping failure to :class:`DurabilityError`."""
    try:
        os.fsync(fd)
    except OSError as err:
        raise DurabilityError(f"fsync failed ({err.strerror})", path=path) from err


def fsync_dir(directory: Path) -> None:
    """``fsync`` a directory so that renames and creations inside it survive a crash."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as err:
        raise DurabilityError(f"cannot open directory ({err.strerror})", path=directory) from err
    try:
        fsync_file(fd, directory)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes, *, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` atomically and durably.

    The temp file is created with ``mode`` (default owner-only: state files can hold op
    parameters) in the target's directory, so ``os.replace`` never crosses filesystems.

    Raises:
        DurabilityError: writing, syncing or renaming failed; the old file is left intact.
    """
    directory = path.parent
    tmp = directory / f".{path.name}.tmp.{os.getpid()}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    except OSError as err:
        raise DurabilityError(f"cannot create temp file ({err.strerror})", path=tmp) from err
    try:
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
        except OSError as err:
            raise DurabilityError(f"write failed ({err.strerror})", path=tmp) from err
        fsync_file(fd, tmp)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    os.close(fd)
    try:
        os.replace(tmp, path)
    except OSError as err:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise DurabilityError(f"rename failed ({err.strerror})", path=path) from err
    fsync_dir(directory)


def truncate_durably(path: Path, size: int) -> None:
    """Cut ``path`` to ``size`` bytes and ``fsync`` it (a torn tail of an append-only log).

    Raises:
        DurabilityError: the file could not be opened, truncated or synced.
    """
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
