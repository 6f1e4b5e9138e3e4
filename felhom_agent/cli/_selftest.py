"""``--selftest`` / ``--selftest=read``: read-only health checks against the PVE API.

Besides the API checks (:func:`~felhom_agent.proxmox.selftest.read_checks`) one ``storage``
check reads the node's storages: every storage at or above ``storage.crit_pct`` is a ``WARN``
line (``docs/architecture.md``, "Host storage"); the check still passes, so the exit status
says only whether the agent can work.
"""

from __future__ import annotations

from felhom_agent.cli._common import CheckLine, render_checks
from felhom_agent.compose.root import proxmox_client
from felhom_agent.config import Config
from felhom_agent.host.thresholds import CRIT, alert, usage_pct
from felhom_agent.proxmox.client import ProxmoxClient
from felhom_agent.proxmox.errors import PveError
from felhom_agent.proxmox.selftest import read_checks

__all__ = ["selftest_read_command", "storage_check"]


def storage_check(client: ProxmoxClient, *, warn_pct: int, crit_pct: int) -> CheckLine:
    """The ``storage`` line: a warning naming every storage at its critical fill level."""
    try:
        storages = client.storages()
    except PveError as err:
        return CheckLine("storage", False, f"cannot list storages: {err}")
    full: list[str] = []
    unreachable: list[str] = []
    for s in storages:
        pct = usage_pct(s.used, s.total)
        if not s.reachable and s.enabled:
            unreachable.append(s.storage)
        if alert(pct, warn_pct=warn_pct, crit_pct=crit_pct) == CRIT:
            full.append(f"{s.storage} {pct:g}% used")
    extra = f"; unreachable: {', '.join(unreachable)}" if unreachable else ""
    if full:
        return CheckLine("storage", True, f"at or above {crit_pct}% (storage.crit_pct): "
                         f"{', '.join(full)}{extra}", warning=True)
    return CheckLine("storage", True, f"{len(storages)} storage(s), none at or above "
                     f"{crit_pct}%{extra}")


def selftest_read_command(config: Config, *, as_json: bool) -> tuple[int, str]:
    """Run the read checks; exit 0 when all pass (warnings included), 1 when one failed."""
    with proxmox_client(config) as client:
        checks = [CheckLine(c.name, c.ok, c.detail) for c in read_checks(client)]
        if checks and checks[0].ok and all(c.ok for c in checks[:3]):
            checks.append(storage_check(client, warn_pct=config.storage.warn_pct,
                                        crit_pct=config.storage.crit_pct))
    return render_checks("read", checks, as_json=as_json)
