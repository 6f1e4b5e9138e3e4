"""The real program, killed at one point of a signed op: the child of the signed-op crash test.

``python -m tests.phaseb.crash_agent --crash-point P --op-id ID -- --config C`` runs
``felhom_agent.cli.main`` (what ``python -m felhom_agent`` runs) after hooking one method so
that the process SIGKILLs itself right after it returned:

* ``after_mark``  -- :meth:`FileNonceStore.mark`: the op's nonce is durable, nothing queued;
* ``safety_wait`` -- :meth:`Journal.record_upid` for ``ID.safety-snapshot``: the safety
  snapshot's task runs and its UPID is journaled;
* ``op_wait``     -- :meth:`Journal.record_upid` for ``ID``: the op's own task runs.

Nothing else is changed: the daemon is composed, and recovers on the next start, exactly as
in production.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from typing import Any

from felhom_agent.authz.nonces import FileNonceStore
from felhom_agent.cli import main as agent_main
from felhom_agent.state.journal import Journal, JournalEntry

CRASH_POINTS = ("after_mark", "safety_wait", "op_wait")


def _kill_self() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def install(point: str, op_id: str) -> None:
    """Hook the method that precedes ``point`` (see the module docstring)."""
    if point == "after_mark":
        original_mark = FileNonceStore.mark

        def mark(self: FileNonceStore, *a: Any, **kw: Any) -> None:
            original_mark(self, *a, **kw)
            _kill_self()

        setattr(FileNonceStore, "mark", mark)  # noqa: B010 - the crash hook
        return
    target = op_id + (".safety-snapshot" if point == "safety_wait" else "")
    original_upid = Journal.record_upid

    def record_upid(self: Journal, step_id: str, upid: str) -> JournalEntry:
        entry = original_upid(self, step_id, upid)
        if step_id == target:
            _kill_self()
        return entry

    setattr(Journal, "record_upid", record_upid)  # noqa: B010 - the crash hook


def main(argv: list[str] | None = None) -> int:
    """Install the crash hook, then run the program with the arguments after ``--``."""
    parser = argparse.ArgumentParser(prog="crash_agent")
    parser.add_argument("--crash-point", choices=CRASH_POINTS, required=True)
    parser.add_argument("--op-id", required=True)
    parser.add_argument("rest", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    rest = args.rest[1:] if args.rest[:1] == ["--"] else args.rest
    install(args.crash_point, args.op_id)
    return agent_main(rest)


if __name__ == "__main__":
    sys.exit(main())
