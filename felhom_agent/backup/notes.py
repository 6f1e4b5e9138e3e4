"""The op id in a backup's notes: how the agent finds the volume its vzdump call made.

Every agent backup is started with ``notes-template`` ``felhom op=<op id>``; PVE writes that as
the new volume's notes (the ``.notes`` sidecar, or the PBS snapshot comment), and the content
listing shows the first line. After the task ends -- or after a crash, when the reply was lost
-- the op's volume is the one whose notes carry its id. Without such a volume (notes can fail
to apply: PVE only warns), the fallback is a backup of the same guest created at or after the
dispatch time that carries no other op's id.

A **safety backup** (the one the gate takes of a guest before a restore overwrites it) is
the same: its op id is the gate step's own (``<op id>.safety-backup``) and its notes say so
with one word more, ``felhom safety op=<step op id>``. It is one notes format -- ``felhom``,
an optional label, ``op=<id>`` -- read by one parser, so a safety backup is found by its step
op id exactly like any other backup, and an operator browsing the storage sees why it exists.

The op id is restricted to characters that PVE's template expansion leaves alone (no braces,
backslashes, spaces or line breaks), so what PVE writes is exactly what the parser reads back.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import Final, Literal

import attrs

from felhom_agent.core.backup_policy import BackupPolicyError
from felhom_agent.proxmox.backup_models import BackupVolume

__all__ = [
    "NOTES_PREFIX",
    "OP_ID_RE",
    "SAFETY_BACKUP_SUFFIX",
    "SAFETY_NOTES_PREFIX",
    "FoundBackup",
    "find_op_backup",
    "notes_template",
    "op_id_in_notes",
]

NOTES_PREFIX: Final = "felhom op="
#: The notes of a safety backup (the op id is the gate step's, ending in the suffix below).
SAFETY_NOTES_PREFIX: Final = "felhom safety op="
#: The op id suffix of the gate's safety-backup step (``<signed op id>.safety-backup``).
SAFETY_BACKUP_SUFFIX: Final = ".safety-backup"
#: Op ids the template can carry: the agent's plan ids and lowercase UUIDs fit.
OP_ID_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:+-]{0,127}")
_IN_NOTES: Final = re.compile(
    r"(?:^|\s)felhom (?:safety )?op=([A-Za-z0-9][A-Za-z0-9._:+-]{0,127})(?=\s|$)")


def notes_template(op_id: str) -> str:
    """The ``notes-template`` vzdump parameter for op ``op_id``: ``felhom op=<op id>``, or
    ``felhom safety op=<op id>`` when ``op_id`` is a safety-backup step's.

    Raises:
        BackupPolicyError: the op id has characters the template cannot carry verbatim.
    """
    if not OP_ID_RE.fullmatch(op_id):
        raise BackupPolicyError(
            f"op id {op_id!r} cannot go into a backup's notes: it must be 1-128 letters, "
            "digits or '._:+-', starting with a letter or digit"
        )
    prefix = SAFETY_NOTES_PREFIX if op_id.endswith(SAFETY_BACKUP_SUFFIX) else NOTES_PREFIX
    return prefix + op_id


def op_id_in_notes(notes: str | None) -> str | None:
    """The op id in a volume's notes (the first ``felhom op=...`` or ``felhom safety op=...``
    on the first line), if any.

    Text around it is allowed (an operator may have added to the notes).
    """
    if not notes:
        return None
    # The first line as PVE means it: up to a newline (not str.splitlines' wider set).
    match = _IN_NOTES.search(notes.split("\n", 1)[0])
    return match.group(1) if match else None


@attrs.frozen
class FoundBackup:
    """The volume an op's backup produced, and how it was recognised.

    Attributes:
        volume: the backup.
        by: ``notes`` (its notes carry the op id) or ``ctime`` (same guest, created at or after
            the dispatch, no other op's id in its notes).
    """

    volume: BackupVolume
    by: Literal["notes", "ctime"]


def find_op_backup(
    volumes: Iterable[BackupVolume],
    *,
    op_id: str,
    vmid: int,
    guest_type: str,
    storage: str,
    dispatched_at: float | None = None,
) -> FoundBackup | None:
    """Find the backup op ``op_id`` made of the guest on ``storage`` ("done means found").

    Args:
        volumes: the storage's content listing (others are ignored).
        op_id: the op whose backup is looked for.
        vmid / guest_type: the guest (a backup must match both).
        storage: the storage the op wrote to.
        dispatched_at: when the vzdump call was sent (POSIX seconds); ``None`` disables the
            ctime fallback. ``ctime`` is whole seconds, so the comparison is with the
            dispatch second.

    Returns:
        The volume with the op id in its notes (the newest, should there be several); else the
        oldest backup of the guest created at or after the dispatch second whose notes name no
        other op (an undated backup, ``ctime`` None, never matches by time); else ``None``.
    """
    mine = [v for v in volumes if v.storage == storage and v.belongs_to(vmid, guest_type)]
    by_notes = [v for v in mine if op_id_in_notes(v.notes) == op_id]
    if by_notes:
        return FoundBackup(max(by_notes, key=lambda v: (v.ctime is not None, v.ctime or 0)),
                           "notes")
    if dispatched_at is None:
        return None
    since = math.floor(dispatched_at)
    later = [(v.ctime, v) for v in mine
             if v.ctime is not None and v.ctime >= since and op_id_in_notes(v.notes) is None]
    if later:
        return FoundBackup(min(later, key=lambda cv: cv[0])[1], "ctime")
    return None
