"""The real program, killed at one point of a signed op: the child of the signed-op crash test.

``python -m tests.phaseb.crash_agent --crash-point P --op-id ID [OPTIONS] -- --config C`` runs
``felhom_agent.cli.main`` (what ``python -m felhom_agent`` runs) after hooking one method so
that the process SIGKILLs itself right after it returned -- right after one durable write of
the op ``ID`` (a ``guest.rollback``: a safety snapshot step, then the rollback):

* ``after_mark``   -- :meth:`FileNonceStore.mark`: the op's nonce is durable, nothing queued;
* ``safety_begin`` -- :meth:`Journal.begin` of ``ID.safety-snapshot`` (its call not sent yet);
* ``safety_wait``  -- :meth:`Journal.record_upid` of ``ID.safety-snapshot`` (its task runs);
* ``safety_done``  -- :meth:`Journal.record_outcome` of ``ID.safety-snapshot`` (the
  rollback's own step not begun);
* ``op_begin``     -- :meth:`Journal.begin` of ``ID`` (the rollback's call not sent yet);
* ``op_wait``      -- :meth:`Journal.record_upid` of ``ID`` (its task runs);
* ``op_done``      -- :meth:`Journal.record_outcome` of ``ID``;
* ``decided``      -- :meth:`Journal.record_decided` of ``ID`` (an outcome without a call);
* ``backup_begin``, ``backup_wait``, ``backup_done`` -- the same three points of
  ``ID.safety-backup``, the safety backup step of a ``guest.restore`` over a guest;
* ``restore_sent`` -- the client's restore call returned a UPID, not yet journalled (the
  restart must find the task in the node's task list);
* ``none``         -- no crash (a restart with the options below).

Options, each replacing one value the composition root would use:

* ``--lookup-grace-s S`` -- the in-flight grace of calls without a UPID (default 40 s). The
  test passes 0 to the run after a crash: the killed process can have nothing in flight;
* ``--op-clock-offset S`` -- the signed-op consumer sees its clock ``S`` seconds ahead (an op
  that expired while the agent was down).

Nothing else is changed: the daemon is composed, and recovers, exactly as in production.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from felhom_agent.authz.nonces import FileNonceStore
from felhom_agent.cli import main as agent_main
from felhom_agent.execution.engine import Engine
from felhom_agent.proxmox.provision import ProvisionCalls
from felhom_agent.proxmox.tasks import Dispatch
from felhom_agent.signedops.consumer import SignedOpConsumer
from felhom_agent.signedops.gate import SAFETY_BACKUP_SUFFIX, SAFETY_SUFFIX
from felhom_agent.state.journal import Journal

#: crash point -> (step op id suffix, the journal method after which the process dies).
JOURNAL_POINTS = {
    "safety_begin": (SAFETY_SUFFIX, "begin"),
    "safety_wait": (SAFETY_SUFFIX, "record_upid"),
    "safety_done": (SAFETY_SUFFIX, "record_outcome"),
    "op_begin": ("", "begin"),
    "op_wait": ("", "record_upid"),
    "op_done": ("", "record_outcome"),
    "decided": ("", "record_decided"),
    "backup_begin": (SAFETY_BACKUP_SUFFIX, "begin"),
    "backup_wait": (SAFETY_BACKUP_SUFFIX, "record_upid"),
    "backup_done": (SAFETY_BACKUP_SUFFIX, "record_outcome"),
}
CRASH_POINTS = ("none", "after_mark", "restore_sent", *JOURNAL_POINTS)


def _kill_self() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def _hook_journal(method: str, target: str) -> None:
    original: Callable[..., Any] = getattr(Journal, method)

    def wrapped(self: Journal, op_id: str, *args: Any, **kwargs: Any) -> Any:
        result = original(self, op_id, *args, **kwargs)
        if op_id == target:
            _kill_self()
        return result

    setattr(Journal, method, wrapped)


def install(point: str, op_id: str) -> None:
    """Hook the method that precedes ``point`` (see the module docstring)."""
    if point == "after_mark":
        original_mark = FileNonceStore.mark

        def mark(self: FileNonceStore, *a: Any, **kw: Any) -> None:
            original_mark(self, *a, **kw)
            _kill_self()

        setattr(FileNonceStore, "mark", mark)  # noqa: B010 - the crash hook
    elif point == "restore_sent":
        original_restore = ProvisionCalls.restore

        def restore(self: ProvisionCalls, *a: Any, **kw: Any) -> Dispatch:
            dispatched = original_restore(self, *a, **kw)
            _kill_self()
            return dispatched

        setattr(ProvisionCalls, "restore", restore)  # noqa: B010 - the crash hook
    elif point != "none":
        suffix, method = JOURNAL_POINTS[point]
        _hook_journal(method, op_id + suffix)


def _set_grace(grace_s: float) -> None:
    original_init = Engine.__init__

    def init(self: Engine, *args: Any, **kwargs: Any) -> None:
        kwargs["lookup_grace_s"] = grace_s
        original_init(self, *args, **kwargs)

    setattr(Engine, "__init__", init)  # noqa: B010 - the test's grace


def _shift_op_clock(offset_s: float) -> None:
    def now(self: SignedOpConsumer) -> datetime:
        return datetime.fromtimestamp(time.time() + offset_s, UTC)

    setattr(SignedOpConsumer, "_now", now)  # noqa: B010 - the test's clock


def main(argv: list[str] | None = None) -> int:
    """Install the hooks, then run the program with the arguments after ``--``."""
    parser = argparse.ArgumentParser(prog="crash_agent")
    parser.add_argument("--crash-point", choices=CRASH_POINTS, required=True)
    parser.add_argument("--op-id", required=True)
    parser.add_argument("--lookup-grace-s", type=float, default=None)
    parser.add_argument("--op-clock-offset", type=float, default=None)
    parser.add_argument("rest", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    rest = args.rest[1:] if args.rest[:1] == ["--"] else args.rest
    install(args.crash_point, args.op_id)
    if args.lookup_grace_s is not None:
        _set_grace(args.lookup_grace_s)
    if args.op_clock_offset is not None:
        _shift_op_clock(args.op_clock_offset)
    return agent_main(rest)


if __name__ == "__main__":
    sys.exit(main())
