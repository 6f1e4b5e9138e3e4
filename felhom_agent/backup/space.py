"""Space first: vzdump does not check free space, so the agent does before it calls it.

The estimate of the next backup is the guest's newest backup on the same storage; the storage
must have that size plus ``backup.space_margin_pct`` percent free. Without an earlier backup,
or when the newest one's size is unknown (PBS reports 1 for "unknown or incomplete"), there is
no estimate and the backup may run (the client already turns PBS's 1 into no size). On PBS
the estimate is the snapshot's logical size, which deduplication usually undercuts: the
check errs on the side of refusing.
"""

from __future__ import annotations

import attrs

from felhom_agent.proxmox.backup_models import BackupVolume

__all__ = ["SpaceCheck", "check_space", "space_needed"]


def space_needed(size: int, margin_pct: int) -> int:
    """``size * (1 + margin/100)``, rounded up to a whole byte (integer arithmetic).

    Both are non-negative: sizes come from PVE, the margin from the validated config.
    """
    return -(-size * (100 + margin_pct) // 100)


@attrs.frozen
class SpaceCheck:
    """Whether a backup to ``storage`` may start as far as free space goes.

    Attributes:
        allowed: ``False``: refuse the backup, send nothing.
        storage: the storage checked.
        need: estimated bytes needed, margin included; ``None`` = no estimate.
        avail: free bytes as the storage status reported (``None``: not reported).
        estimate_from: the volid whose size made the estimate.
        reason: why it was refused, or (when allowed) what was checked, for the log.
    """

    allowed: bool
    storage: str
    need: int | None
    avail: int | None
    estimate_from: str | None
    reason: str


def check_space(*, storage: str, avail: int | None, newest: BackupVolume | None,
                margin_pct: int) -> SpaceCheck:
    """Check the storage's free space against the guest's newest backup there.

    Args:
        storage: the policy's storage id.
        avail: its free bytes from the storage status (``None`` when not reported).
        newest: the guest's newest backup on that storage (``None``: none yet).
        margin_pct: ``backup.space_margin_pct``.

    A known estimate with an unknown ``avail`` is refused: the rule cannot be checked.
    """
    if newest is None or not newest.size_known or newest.size is None:
        why = ("no earlier backup" if newest is None
               else f"the size of {newest.volid} is unknown ({newest.size})")
        return SpaceCheck(True, storage, None, avail, None,
                          f"storage {storage}: {why}, so no space estimate; backup allowed")
    need = space_needed(newest.size, margin_pct)
    detail = (f"newest backup {newest.volid} is {newest.size} bytes, "
              f"+{margin_pct}% margin")
    if avail is None:
        return SpaceCheck(False, storage, need, None, newest.volid,
                          f"storage {storage}: free space unknown (its status reports no "
                          f"avail); need ~{need} bytes ({detail})")
    if avail < need:
        return SpaceCheck(False, storage, need, avail, newest.volid,
                          f"storage {storage} full: need ~{need} bytes, avail {avail} "
                          f"({detail})")
    return SpaceCheck(True, storage, need, avail, newest.volid,
                      f"storage {storage}: need ~{need} bytes, avail {avail} ({detail})")
