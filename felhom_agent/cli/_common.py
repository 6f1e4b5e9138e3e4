"""Shared pieces of the CLI modes: the selftest check line and its rendering.

Clients and the rest of the wiring come from the composition root
(:mod:`felhom_agent.compose.root`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import attrs

__all__ = ["CheckLine", "render_checks"]


@attrs.frozen
class CheckLine:
    """One selftest result line (the shape every selftest mode prints).

    ``warning``: the check passed but found something an operator should see (a storage at
    its critical fill level); printed ``WARN``, it does not change the exit status.
    """

    name: str
    ok: bool
    detail: str
    warning: bool = False


def render_checks(mode: str, checks: Sequence[CheckLine], *, as_json: bool) -> tuple[int, str]:
    """Format checks (``docs/architecture.md``, "Command line") and return ``(exit status, text)``.

    Text: one ``OK``/``WARN``/``FAIL`` line per check and a summary line (fit for cron mail).
    JSON: ``{"mode": …, "ok": …, "checks": [{"name", "ok", "detail", "warning"}]}``.
    """
    ok = all(c.ok for c in checks) and bool(checks)
    code = 0 if ok else 1
    if as_json:
        doc = {
            "mode": mode,
            "ok": ok,
            "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail, "warning": c.warning}
                       for c in checks],
        }
        return code, json.dumps(doc)
    width = max((len(c.name) for c in checks), default=0)
    def mark(c: CheckLine) -> str:
        return "FAIL" if not c.ok else ("WARN" if c.warning else "OK  ")

    lines = [f"{mark(c)} {c.name.ljust(width)}  {c.detail}" for c in checks]
    failed = [c.name for c in checks if not c.ok]
    warned = [c.name for c in checks if c.ok and c.warning]
    summary = (
        f"selftest {mode}: all {len(checks)} checks passed"
        if ok
        else f"selftest {mode}: {len(failed)} of {len(checks)} checks FAILED ({', '.join(failed)})"
    )
    if warned:
        summary += f"; {len(warned)} WARNING(S) ({', '.join(warned)})"
    lines.append(summary)
    return code, "\n".join(lines)
