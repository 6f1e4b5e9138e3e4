"""Idempotent, crash-safe ``/etc/fstab`` edits.

The agent only ever *appends* one line per USB mount, removes only such a line of its own
(:func:`remove_fstab_lines`: same mount point, the agent's fixed options) and never rewrites an
operator's line:

* the same line already present (compared field by field, whitespace-insensitive) → nothing
  to do;
* another line for the same mount point, or the same source on another mount point →
  :class:`FstabConflict`, naming the line;
* otherwise the whole file is rewritten with the line appended, through
  :func:`felhom_agent.durable.atomic_write_bytes` (temp file, fsync, rename, fsync dir), so a
  crash leaves the old file or the new one, never a torn line. The file's mode is kept, and a
  symlinked ``/etc/fstab`` is edited at its target rather than replaced by a regular file.

Callers serialise edits of one file (the :class:`~felhom_agent.privileged.facade.Privileged`
executor holds a lock): a read-modify-write is not atomic against a concurrent writer.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import attrs

from felhom_agent.durable import atomic_write_bytes
from felhom_agent.privileged.errors import FstabConflict, RefusedArgument, RunnerError

__all__ = ["FstabLine", "check_fstab_line", "ensure_fstab_line", "parse_fstab",
           "remove_fstab_lines"]

_OCTAL = re.compile(r"\\([0-7]{3})")


def _unescape(field: str) -> str:
    """Decode fstab/mounts octal escapes (``\\040`` is a space)."""
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), field)


@attrs.frozen
class FstabLine:
    """One parsed fstab entry (fields unescaped) and its line number (1-based)."""

    lineno: int
    source: str
    mountpoint: str
    fstype: str
    options: str
    freq: str
    passno: str

    def fields(self) -> tuple[str, str, str, str, str, str]:
        """The six fields, with the defaults fstab(5) gives to omitted trailing fields."""
        return (self.source, self.mountpoint, self.fstype, self.options, self.freq, self.passno)


def parse_fstab(text: str) -> list[FstabLine]:
    """Parse fstab text, skipping blanks and ``#`` comments; short lines get the defaults."""
    entries: list[FstabLine] = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = [_unescape(p) for p in line.split()]
        if len(parts) < 2:
            continue  # malformed; mount(8) ignores it too, and it cannot collide with ours
        parts += ["auto", "defaults", "0", "0"][len(parts) - 2:] if len(parts) < 6 else []
        entries.append(FstabLine(lineno, *parts[:6]))
    return entries


def _render(fields: tuple[str, ...]) -> bytes:
    for field in fields:
        # Validated values never contain these; a caller bypassing validation is refused here.
        if not field or not field.isascii() or any(c.isspace() or c in "#\\" for c in field):
            raise RefusedArgument("fstab field", field, "must be non-empty ASCII without "
                                  "whitespace, '#' or '\\'")
    return ("\t".join(fields) + "\n").encode("ascii")


def _read(path: Path) -> tuple[Path, bytes, int]:
    """The real file behind ``path`` (symlinks followed), its bytes and its mode."""
    target = Path(os.path.realpath(path))
    try:
        return target, target.read_bytes(), stat.S_IMODE(target.stat().st_mode)
    except FileNotFoundError:
        return target, b"", 0o644
    except OSError as err:
        raise RunnerError(f"cannot read {target}: {err.strerror}") from err


def _present(target: Path, text: str, fields: tuple[str, str, str, str, str, str]) -> bool:
    source, mountpoint = fields[0], fields[1]
    for entry in parse_fstab(text):
        if entry.fields() == fields:
            return True
        if entry.mountpoint.rstrip("/") == mountpoint:
            raise FstabConflict(
                f"{target}:{entry.lineno} already mounts {entry.source} on {mountpoint}; "
                "remove or fix that line first"
            )
        if entry.source == source:
            raise FstabConflict(
                f"{target}:{entry.lineno} already mounts {source} on {entry.mountpoint}; "
                "remove or fix that line first"
            )
    return False


def check_fstab_line(path: Path, fields: tuple[str, str, str, str, str, str]) -> bool:
    """True if ``fields`` is already a line of the fstab at ``path``; False if it may be added.

    Raises:
        FstabConflict: another line uses the mount point or the source.
        RunnerError: the file cannot be read.
    """
    target, old, _mode = _read(path)
    return _present(target, old.decode("utf-8", errors="surrogateescape"), fields)


def ensure_fstab_line(path: Path, fields: tuple[str, str, str, str, str, str]) -> bool:
    """Make sure ``fields`` is a line of the fstab at ``path``; append it if absent.

    Args:
        path: the fstab file (``/etc/fstab``; injectable for tests). A missing file is
            treated as empty and created with mode 0644.
        fields: source, mount point, type, options, freq, passno.

    Returns:
        True if the line was appended, False if it was already there.

    Raises:
        FstabConflict: another line uses the mount point or the source.
        RunnerError: the file cannot be read.
        DurabilityError: the new file could not be written durably (do not retry).
    """
    target, old, mode = _read(path)
    if _present(target, old.decode("utf-8", errors="surrogateescape"), fields):
        return False
    line = _render(fields)
    separator = b"\n" if old and not old.endswith(b"\n") else b""
    atomic_write_bytes(target, old + separator + line, mode=mode)
    return True


def remove_fstab_lines(path: Path, mountpoint: str, options: frozenset[str], *,
                       dry_run: bool = False) -> int:
    """Remove the agent's own line(s) for ``mountpoint``; every other byte stays as it was.

    A line is the agent's when its mount point is ``mountpoint`` and its options are one of
    ``options`` (the fixed option strings the agent writes). Written atomically like
    :func:`ensure_fstab_line`; nothing is written when there is nothing to remove.

    Returns:
        The number of lines removed (0: already gone); with ``dry_run`` the number that
        would be, nothing written.

    Raises:
        FstabConflict: a line for ``mountpoint`` with other options (not the agent's).
        RunnerError: the file cannot be read.
        DurabilityError: the new file could not be written durably (do not retry).
    """
    target, old, mode = _read(path)
    text = old.decode("utf-8", errors="surrogateescape")
    drop: set[int] = set()
    for entry in parse_fstab(text):
        if entry.mountpoint.rstrip("/") != mountpoint:
            continue
        if entry.options not in options:
            raise FstabConflict(
                f"{target}:{entry.lineno} mounts {entry.source} on {mountpoint} with options "
                f"{entry.options!r}, which the agent did not write; remove it by hand"
            )
        drop.add(entry.lineno)
    if not drop or dry_run:
        return len(drop)
    kept = [line for n, line in enumerate(text.splitlines(keepends=True), start=1)
            if n not in drop]
    atomic_write_bytes(target, "".join(kept).encode("utf-8", errors="surrogateescape"),
                       mode=mode)
    return len(drop)
