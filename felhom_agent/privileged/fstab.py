"""Idempotent, crash-safe ``/etc/fstab`` edits and the "is it mounted?" check.

The agent only ever *appends* one line per USB mount and never rewrites an operator's line:

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

__all__ = ["FstabLine", "ensure_fstab_line", "is_mounted", "parse_fstab"]

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
    target = Path(os.path.realpath(path))
    try:
        old = target.read_bytes()
        mode = stat.S_IMODE(target.stat().st_mode)
    except FileNotFoundError:
        old, mode = b"", 0o644
    except OSError as err:
        raise RunnerError(f"cannot read {target}: {err.strerror}") from err
    text = old.decode("utf-8", errors="surrogateescape")
    source, mountpoint = fields[0], fields[1]
    for entry in parse_fstab(text):
        if entry.fields() == fields:
            return False
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
    line = _render(fields)
    separator = b"\n" if old and not old.endswith(b"\n") else b""
    atomic_write_bytes(target, old + separator + line, mode=mode)
    return True


def is_mounted(mounts_path: Path, mountpoint: str) -> bool:
    """True if ``mountpoint`` appears as a mount target in ``/proc/self/mounts`` format.

    Raises:
        RunnerError: the mounts table cannot be read.
    """
    try:
        text = mounts_path.read_text(encoding="utf-8", errors="surrogateescape")
    except OSError as err:
        raise RunnerError(f"cannot read {mounts_path}: {err.strerror}") from err
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and _unescape(parts[1]) == mountpoint:
            return True
    return False
