"""The real program with a fake ``pct`` first on the fenced runner's PATH.

``python -m tests.support.pct_agent --pct-dir DIR -- --config C`` runs
``felhom_agent.cli.main`` (what ``python -m felhom_agent`` runs) after putting ``DIR`` in front
of the PATH the fenced local runner gives the commands it starts
(:data:`felhom_agent.privileged.runner.DEFAULT_ENV`), so ``pct`` resolves to the test's fake
(:mod:`tests.support.fake_pct`). Nothing else in the program is changed: the daemon, its
composition, its fenced runner and its exit status are the production ones.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from felhom_agent.cli import main as agent_main
from felhom_agent.privileged import runner
from tests.support.fake_pct import root_cli_env


def main(argv: list[str] | None = None) -> int:
    """Put the fake first on the runner's PATH, then run the program with the rest."""
    parser = argparse.ArgumentParser(prog="pct_agent")
    parser.add_argument("--pct-dir", type=Path, required=True,
                        help="the directory holding the fake pct")
    parser.add_argument("rest", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    rest = args.rest[1:] if args.rest[:1] == ["--"] else args.rest
    setattr(runner, "DEFAULT_ENV", root_cli_env(args.pct_dir))  # noqa: B010 - a Final
    return agent_main(rest)


if __name__ == "__main__":
    sys.exit(main())
