"""``--backups [--json]``: each guest's backup state, read-only, fit for cron.

The same entries as the daemon's report ``backup`` (and ``pbs``), computed the same way
(:func:`felhom_agent.planning.backup_status.backup_entries` over one fresh read of the node:
storages, one content listing per backup storage, the vzdump tasks, the token's privileges).
Policies come from ``reconcile.desired_file`` when it is set; without it every guest with
backups is listed as ``no_policy``. A guest locked ``backup`` while no vzdump task runs is
``stale_lock`` at once (this one-shot read cannot wait ``backup.stale_lock_s``).

Exit status: 0 all fine; 1 a guest is ``failed``, ``stale_lock`` or overdue (due for longer
than ``every_h``); 2 usage/config errors or PVE unreachable (``docs/architecture.md``,
"Command line").
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from felhom_agent.cli._plan import read_desired_file
from felhom_agent.compose.root import backup_settings, proxmox_client
from felhom_agent.config import Config
from felhom_agent.core.desired import DesiredState
from felhom_agent.errors import AgentError
from felhom_agent.planning.actual import read_actual
from felhom_agent.planning.backup_read import read_backup_facts
from felhom_agent.planning.backup_status import GuestBackupReport, backup_entries, pbs_entries
from felhom_agent.planning.plan import plan
from felhom_agent.proxmox.client import ProxmoxClient
from felhom_agent.utc import format_utc

__all__ = ["backups_command"]

EXIT_OK = 0
EXIT_ATTENTION = 1
EXIT_ERROR = 2
_BAD = ("failed", "stale_lock")


def _attention(entry: GuestBackupReport) -> bool:
    return entry.status in _BAD or entry.overdue


def backups_command(
    config: Config,
    *,
    as_json: bool,
    client_factory: Callable[[Config], ProxmoxClient] = proxmox_client,
    now: Callable[[], float] = time.time,
) -> tuple[int, str]:
    """Read and render every guest's backup state; returns ``(exit status, text)``."""
    try:
        path = config.reconcile.desired_file
        desired = read_desired_file(Path(path)) if path is not None else None
        settings = backup_settings(config)
        with client_factory(config) as client:
            # Every guest of the node is read (its lock and type), not only desired ones.
            actual = read_actual(client, config.proxmox.node,
                                 desired or DesiredState(generation=0))
            facts = read_backup_facts(client, now=now(), tz=settings.tz,
                                      min_keep=settings.min_keep, margin_pct=settings.margin_pct)
    except AgentError as err:
        message = " ".join(str(err).split())
        if as_json:
            return EXIT_ERROR, json.dumps({"error": message})
        return EXIT_ERROR, f"backups: error: {message}"
    result = plan(desired, actual.guests, busy=lambda _vmid: False, node=config.proxmox.node,
                  backups=facts)
    entries = backup_entries(result.backups, actual.guests, desired, facts, stale_for=None,
                             stale_lock_s=settings.stale_lock_s)
    code = EXIT_ATTENTION if any(_attention(e) for e in entries) else EXIT_OK
    errors = [f"{where}: {why}" for where, why in sorted(facts.errors.items())]
    if as_json:
        return code, json.dumps({"ok": code == EXIT_OK, "backup": [e.to_json() for e in entries],
                                 "pbs": list(pbs_entries(facts)), "errors": errors})
    return code, _render(entries, errors, code)


def _render(entries: tuple[GuestBackupReport, ...], errors: list[str], code: int) -> str:
    lines = []
    for e in entries:
        last = "no backup" if e.last is None else (
            f"last {e.last.volid} ({format_utc(e.last.ctime) if e.last.ctime else '?'})")
        flag = " OVERDUE" if e.overdue else ""
        lines.append(f"{e.vmid:>9} {e.type:<4} {e.status.upper():<10}{flag} "
                     f"{e.storage or '-'}: {last}, {e.count} backup(s) - {e.reason}")
    lines.extend(f"error: {m}" for m in errors)
    bad = [e for e in entries if _attention(e)]
    if code == EXIT_OK:
        lines.append(f"backups: {len(entries)} guest(s), all fine")
    else:
        lines.append(f"backups: {len(bad)} of {len(entries)} guest(s) need attention "
                     f"({', '.join(str(e.vmid) for e in bad)})")
    return "\n".join(lines)
