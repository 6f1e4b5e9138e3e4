"""The command line: ``felhom-agent`` and ``python -m felhom_agent``.

The modes and their documents: ``docs/architecture.md`` ("Command line") and the README.

:func:`main` parses arguments, loads the configuration, configures logging and dispatches to
the mode. Usage and configuration errors print one line to stderr and exit 2 — never a
traceback, never a secret. Streams and the environment are injectable so tests run ``main``
in-process exactly as an operator would.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from felhom_agent.cli._backups import backups_command
from felhom_agent.cli._daemon import daemon_command
from felhom_agent.cli._demo import demo_command
from felhom_agent.cli._parser import build_parser
from felhom_agent.cli._plan import plan_command
from felhom_agent.cli._selftest import selftest_read_command
from felhom_agent.cli._selftest_hub import selftest_hub_command
from felhom_agent.cli._selftest_task import selftest_task_command
from felhom_agent.cli._verify import verify_command
from felhom_agent.config import Config, load_config, redacted_view
from felhom_agent.errors import AgentError, ConfigError, UsageError
from felhom_agent.log import configure_logging
from felhom_agent.vmids import VMID_RANGE, is_vmid

__all__ = ["main"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def main(
    argv: Sequence[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    stdout: IO[str] | None = None,
    stderr: IO[str] | None = None,
) -> int:
    """Run the program and return its exit status."""
    out = sys.stdout if stdout is None else stdout
    err = sys.stderr if stderr is None else stderr
    environ = os.environ if env is None else env
    parser = build_parser()
    try:
        try:
            args = parser.parse_args(argv)
        except SystemExit as stop:  # --help and --version print and exit 0 themselves
            return int(stop.code or 0)
        _check_flag_combinations(args)
        if args.demo:
            configure_logging(level=args.log_level or "warning",
                              fmt=args.log_format or "text", stream=err, env=environ)
            return demo_command(out=out, as_json=args.json)
        config = load_config(Path(args.config) if args.config else None, env=environ)
        configure_logging(
            level=args.log_level or config.log.level,
            fmt=args.log_format or config.log.format,
            secrets=config.secrets(),
            stream=err,
            env=environ,
        )
        return _dispatch(args, config, out, environ)
    except UsageError as error:
        print(f"felhom-agent: usage error: {error}", file=err)
        print("try 'felhom-agent --help'", file=err)
        return EXIT_USAGE
    except ConfigError as error:
        print(f"felhom-agent: config error: {error}", file=err)
        return EXIT_USAGE
    except AgentError as error:
        print(f"felhom-agent: error: {error}", file=err)
        return EXIT_FAILED


def _check_flag_combinations(args: argparse.Namespace) -> None:
    """Flags that only make sense together; checked before the config is even read."""
    if args.verify_op is not None and args.signature is None:
        raise UsageError("--verify-op needs --signature SIG_FILE")
    if args.signature is not None and args.verify_op is None:
        raise UsageError("--signature is only used with --verify-op OP_FILE")
    if args.selftest == "task" and args.vmid is None:
        raise UsageError("--selftest=task needs --vmid N (the guest to exercise)")
    if args.vmid is not None and args.selftest != "task":
        raise UsageError("--vmid is only used with --selftest=task")
    if args.vmid is not None and not is_vmid(args.vmid):
        raise UsageError(f"--vmid {args.vmid} is not a PVE vmid ({VMID_RANGE})")
    if args.desired is not None and not args.plan:
        raise UsageError("--desired is only used with --plan")


def _dispatch(args: argparse.Namespace, config: Config, out: IO[str],
              environ: Mapping[str, str]) -> int:
    if args.print_config:
        print(json.dumps(redacted_view(config), indent=2), file=out)
        return EXIT_OK
    if args.verify_op is not None:
        code, text = verify_command(
            config, Path(args.verify_op), Path(args.signature), as_json=args.json,
            now=lambda: datetime.now(UTC),
        )
        print(text, file=out)
        return code
    if args.backups:
        code, text = backups_command(config, as_json=args.json)
        print(text, file=out)
        return code
    if args.plan:
        code, text = plan_command(
            config, Path(args.desired) if args.desired else None, as_json=args.json
        )
        print(text, file=out)
        return code
    if args.selftest is not None:
        if args.selftest == "task":
            code, text = selftest_task_command(config, args.vmid, as_json=args.json)
        elif args.selftest == "hub":
            code, text = selftest_hub_command(config, as_json=args.json)
        else:
            code, text = selftest_read_command(config, as_json=args.json)
        print(text, file=out)
        return code
    return daemon_command(config, env=environ, log_level=args.log_level,
                          log_format=args.log_format)
