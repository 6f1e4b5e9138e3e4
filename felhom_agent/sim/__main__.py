"""``python -m felhom_agent.sim <simulator> ...``: dispatch to one simulator's program.

Each subcommand module exposes ``main(argv) -> int`` taking the arguments after the
subcommand name; a new simulator is one line in :data:`SUBCOMMANDS`. Modules are imported
lazily so one simulator's import cost (or breakage) never affects the other.
"""

from __future__ import annotations

import importlib
import sys

SUBCOMMANDS = {
    "pve": "felhom_agent.sim.pve.program",
    "hub": "felhom_agent.sim.hub.cli",
}

USAGE = "usage: python -m felhom_agent.sim {" + ",".join(SUBCOMMANDS) + "} [options]"


def main(argv: list[str] | None = None) -> int:
    """Run the named simulator; exit 2 on an unknown or missing subcommand."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(USAGE, file=sys.stderr if not args else sys.stdout)
        return 2 if not args else 0
    module_name = SUBCOMMANDS.get(args[0])
    if module_name is None:
        print(f"{USAGE}\nunknown simulator {args[0]!r}", file=sys.stderr)
        return 2
    module = importlib.import_module(module_name)
    result: int = module.main(args[1:])
    return result


if __name__ == "__main__":
    sys.exit(main())
