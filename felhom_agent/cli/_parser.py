"""The argument parser: one mode flag at most, common flags, usage errors as exceptions."""

from __future__ import annotations

import argparse
from typing import NoReturn

from felhom_agent import __version__
from felhom_agent.errors import UsageError

__all__ = ["SELFTEST_MODES", "build_parser"]

SELFTEST_MODES = ("read", "task", "hub")

_DESCRIPTION = """\
felhom-agent: the operator-tier host agent of one Proxmox VE node. It reports the host
and its guests to the hub, reconciles guests toward the desired state through a per-guest
queue, and executes only operator-signed destructive operations.

Without a mode flag it runs the daemon (the systemd service)."""

_EPILOG = """\
exit status: 0 success; 1 a check failed, drift found or an op was rejected; 2 usage or
configuration error.
configuration: strict JSON (default /etc/felhom-agent/config.json), overridden by
FELHOM_AGENT_<KEY_PATH> environment variables; see the README's configuration reference."""


class _Parser(argparse.ArgumentParser):
    """argparse that raises :class:`UsageError` instead of printing and exiting."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    """Build the ``felhom-agent`` parser (also used for ``python -m felhom_agent``)."""
    parser = _Parser(
        prog="felhom-agent",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    modes = parser.add_argument_group("modes (at most one; none runs the daemon)")
    exclusive = modes.add_mutually_exclusive_group()
    exclusive.add_argument(
        "--version", action="version", version=f"felhom-agent {__version__}",
        help="print 'felhom-agent X.Y.Z' and exit",
    )
    exclusive.add_argument(
        "--print-config", action="store_true",
        help="print the effective configuration as JSON, secrets shown as \"***\"",
    )
    exclusive.add_argument(
        "--selftest", nargs="?", const="read", choices=SELFTEST_MODES, metavar="MODE",
        help="health checks; MODE read (default): API reachable, pin, token, permissions, "
        "node, guests, tasks; task (needs --vmid): a reversible snapshot/rollback/delete and "
        "description write through the queue, leaving the guest as it was; hub: one report "
        "round trip. One OK/FAIL line per check, exit 0 all passed, 1 one failed",
    )
    modes.add_argument(
        "--vmid", type=int, metavar="N", default=None,
        help="with --selftest=task: the guest to exercise",
    )
    exclusive.add_argument(
        "--verify-op", metavar="OP_FILE", default=None,
        help="check a signed operation (with --signature) against authz.allowed_signers and "
        "the envelope rules, without executing it; exit 0 valid, 1 rejected",
    )
    exclusive.add_argument(
        "--demo", action="store_true",
        help="start a simulated PVE host and hub on 127.0.0.1, run the daemon against them "
        "until converged and print what happened (needs no config)",
    )
    exclusive.add_argument(
        "--plan", action="store_true",
        help="dry run: read desired state (--desired FILE, else reconcile.desired_file) and "
        "actual state, print the plan; exit 0 in sync, 1 drift found, 2 error",
    )
    exclusive.add_argument(
        "--backups", action="store_true",
        help="each guest's backup state (policy from reconcile.desired_file, newest backup, "
        "due/overdue, stale locks), read-only; exit 0 all fine, 1 a guest failed, is overdue "
        "or stale-locked, 2 error",
    )
    modes.add_argument(
        "--desired", metavar="FILE", default=None,
        help="with --plan: the desired-state JSON file to compare against",
    )
    modes.add_argument(
        "--signature", metavar="SIG_FILE", default=None,
        help="the armored SSH signature of OP_FILE (ssh-keygen -Y sign -n felhom-op)",
    )
    common = parser.add_argument_group("common options")
    common.add_argument(
        "--config", metavar="PATH", default=None,
        help="configuration file (default /etc/felhom-agent/config.json)",
    )
    common.add_argument(
        "--log-level", choices=("debug", "info", "warning", "error"), default=None,
        help="override log.level",
    )
    common.add_argument(
        "--log-format", choices=("text", "json"), default=None, help="override log.format",
    )
    common.add_argument(
        "--json", action="store_true",
        help="machine output: one JSON document instead of text (for the report modes)",
    )
    return parser
