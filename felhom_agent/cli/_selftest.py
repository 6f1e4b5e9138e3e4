"""``--selftest`` / ``--selftest=read``: read-only health checks against the PVE API."""

from __future__ import annotations

from felhom_agent.cli._common import CheckLine, render_checks
from felhom_agent.compose.root import proxmox_client
from felhom_agent.config import Config
from felhom_agent.proxmox.selftest import read_checks

__all__ = ["selftest_read_command"]


def selftest_read_command(config: Config, *, as_json: bool) -> tuple[int, str]:
    """Run the read checks; exit 0 when all pass, 1 when one failed."""
    with proxmox_client(config) as client:
        checks = [CheckLine(c.name, c.ok, c.detail) for c in read_checks(client)]
    return render_checks("read", checks, as_json=as_json)
