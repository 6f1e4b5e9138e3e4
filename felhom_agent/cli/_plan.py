"""``--plan [--desired FILE]``: read desired and actual state, print the plan, mutate nothing.

See ``docs/architecture.md`` ("Command line"). Desired state comes from ``--desired FILE``, else the
configured ``reconcile.desired_file``; with neither the command exits 2 and names ``--desired``.
Actual state is read exactly as the reconciler reads it
(:func:`felhom_agent.planning.actual.read_actual`: one listing, config only for guests whose desired
state names keys). Exit status: 0 in sync, 1 drift found (actions, blocked or refused), 2 error
(usage, unreadable desired file, PVE unreachable) with a one-line reason.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from felhom_agent.compose.root import backup_settings, provision_limits, proxmox_client
from felhom_agent.config import Config
from felhom_agent.core.desired import DesiredState, DesiredStateError, loads_desired
from felhom_agent.errors import AgentError, UsageError
from felhom_agent.planning.actual import read_actual
from felhom_agent.planning.backup_read import read_backup_facts
from felhom_agent.planning.plan import plan, render_text
from felhom_agent.proxmox.client import ProxmoxClient
from felhom_agent.proxmox.errors import PveError

__all__ = ["plan_command", "read_desired_file"]

EXIT_IN_SYNC = 0
EXIT_DRIFT = 1
EXIT_ERROR = 2
_MAX_DESIRED_BYTES = 16 * 1024 * 1024


def _error(message: str, *, as_json: bool) -> tuple[int, str]:
    if as_json:
        return EXIT_ERROR, json.dumps({"error": message})
    return EXIT_ERROR, f"plan: error: {message}"


def read_desired_file(path: Path) -> DesiredState:
    """Read and parse a desired-state file (``--plan``, ``--backups``).

    Raises:
        UsageError: unreadable or too large (the message names the file).
        DesiredStateError: malformed (the message names the file and the value's path).
    """
    try:
        with path.open("rb") as fh:
            raw = fh.read(_MAX_DESIRED_BYTES + 1)
    except OSError as err:
        raise UsageError(f"cannot read desired state {path}: {err.strerror or err}") from None
    if len(raw) > _MAX_DESIRED_BYTES:
        raise UsageError(f"desired state {path} is larger than {_MAX_DESIRED_BYTES} bytes")
    try:
        return loads_desired(raw, path=str(path))
    except DesiredStateError as err:
        raise DesiredStateError(f"desired state {path}: {err}", path=err.path) from None


def _never_busy(_vmid: int) -> bool:
    return False


def plan_command(
    config: Config,
    desired_path: Path | None,
    *,
    as_json: bool,
    client_factory: Callable[[Config], ProxmoxClient] = proxmox_client,
) -> tuple[int, str]:
    """Compute the plan once and render it; returns ``(exit status, text)``.

    Args:
        config: the loaded configuration (``proxmox.*``, ``reconcile.desired_file``).
        desired_path: ``--desired FILE``; overrides the configured file.
        as_json: print the ``--plan --json`` document instead of text.
        client_factory: builds the API client (tests pass their own).
    """
    path = desired_path if desired_path is not None else config.reconcile.desired_file
    if path is None:
        return _error("no desired state: pass --desired FILE or set reconcile.desired_file",
                      as_json=as_json)
    try:
        desired = read_desired_file(Path(path))
    except AgentError as err:
        return _error(str(err), as_json=as_json)
    try:
        with client_factory(config) as client:
            actual = read_actual(client, config.proxmox.node, desired)
            facts = None
            if any(g.backup is not None for g in desired.guests.values()):
                b = backup_settings(config)
                facts = read_backup_facts(client, now=time.time(), tz=b.tz,
                                          min_keep=b.min_keep, margin_pct=b.margin_pct)
    except PveError as err:
        return _error(f"cannot read actual state from {config.proxmox.api_url}: "
                      f"{_one_line(str(err))}", as_json=as_json)
    except AgentError as err:
        return _error(_one_line(str(err)), as_json=as_json)
    # --plan is a dry run of a fresh pass: no lane is busy in this process.
    result = plan(desired, actual.guests, busy=_never_busy, node=config.proxmox.node,
                  backups=facts, provision=provision_limits(config))
    code = EXIT_IN_SYNC if result.in_sync else EXIT_DRIFT
    text = json.dumps(result.to_json()) if as_json else render_text(result).rstrip("\n")
    return code, text


def _one_line(text: str) -> str:
    return " ".join(text.split())
