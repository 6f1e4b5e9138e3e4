"""Storage usage alerts: ``usage_pct`` and ``alert`` of one storage (pure).

``docs/architecture.md`` ("Host storage"). A storage PVE could not activate has no sizes: its
usage is unknown (``None``) and it raises no usage alert -- it is reported unreachable instead,
never as empty or as full.
"""

from __future__ import annotations

from typing import Final

__all__ = ["CRIT", "WARN", "alert", "usage_pct"]

WARN: Final = "warn"
CRIT: Final = "crit"


def usage_pct(used: int | None, total: int | None) -> float | None:
    """``used / total`` in percent, rounded to 0.1; ``None`` when unknown or ``total`` is 0."""
    if used is None or total is None or total <= 0:
        return None
    return round(100.0 * used / total, 1)


def alert(pct: float | None, *, warn_pct: int, crit_pct: int) -> str | None:
    """``"crit"`` at or above ``crit_pct``, ``"warn"`` at or above ``warn_pct``, else None."""
    if pct is None:
        return None
    if pct >= crit_pct:
        return CRIT
    if pct >= warn_pct:
        return WARN
    return None
