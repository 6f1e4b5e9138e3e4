"""Run the daemon as a program: ``python tests/daemon/run_daemon.py --config X [--grace S]``.

A stand-in for ``python -m felhom_agent --config X`` (the no-mode path) so the end-to-end
tests drive a real child process with real signals; it loads the config and configures
logging exactly as the CLI does, then calls :func:`daemon_command`.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from felhom_agent.cli._daemon import daemon_command
from felhom_agent.config import load_config
from felhom_agent.errors import ConfigError
from felhom_agent.log import configure_logging


def main() -> int:
    """Parse the two flags, load the config, run the daemon."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    parser.add_argument("--grace", type=float, default=None)
    args = parser.parse_args()
    try:
        config = load_config(Path(args.config), env=os.environ)
    except ConfigError as err:
        print(f"config error: {err}", file=sys.stderr)
        return 2
    configure_logging(level=config.log.level, fmt=config.log.format,
                      secrets=config.secrets(), env=os.environ)
    if args.grace is None:
        return daemon_command(config, env=os.environ)
    return daemon_command(config, env=os.environ, grace_s=args.grace)


if __name__ == "__main__":
    sys.exit(main())
