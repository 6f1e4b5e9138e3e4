"""Child program of the signed-op crash test: the engine and the verifying sink, no hub.

``python -m tests.phaseb.crash_child --config C --payload P --signature S [--crash-point X]``
builds the daemon's parts from config ``C`` (journal, audit, client, queue, engine), runs
journal recovery, hands the signed op in ``P``/``S`` to the consumer once and waits until it is
done, then prints one JSON line: the recovery decisions and the op's reported result. With
``--crash-point`` it SIGKILLs itself:

* ``after_mark``  -- right after the op's nonce is durably marked (nothing queued yet);
* ``safety_wait`` -- right after the safety snapshot's UPID is journaled (task running);
* ``op_wait``     -- right after the op's own UPID is journaled (its task running).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from felhom_agent.authz.nonces import FileNonceStore
from felhom_agent.compose.engine_seam import default_engine_factory
from felhom_agent.compose.root import build_parts, signed_op_sink
from felhom_agent.config import load_config
from felhom_agent.execution.engine import Engine
from felhom_agent.hub.envelope import SignedOp as DeliveredOp
from felhom_agent.state.journal import JournalEntry

CRASH_POINTS = ("after_mark", "safety_wait", "op_wait")


def _kill_self() -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def main(argv: list[str] | None = None) -> int:
    """Recover, hand the op over once, wait, report (or die at the crash point)."""
    p = argparse.ArgumentParser()
    p.add_argument("--config", type=Path, required=True)
    p.add_argument("--payload", type=Path, required=True)
    p.add_argument("--signature", type=Path, required=True)
    p.add_argument("--crash-point", choices=CRASH_POINTS, default=None)
    p.add_argument("--deadline-s", type=float, default=30.0)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    log = logging.getLogger("phaseb-crash-child")
    payload = args.payload.read_text()
    op_id = json.loads(payload)["op_id"]
    config = load_config(args.config, env={})
    stop = threading.Event()
    parts = build_parts(config, stop_event=stop, on_fatal=None,
                        engine_factory=default_engine_factory, clock=time.time, logger=log)
    engine = parts.engine
    assert isinstance(engine, Engine)
    if args.crash_point == "after_mark":
        original_mark = FileNonceStore.mark

        def mark(self: FileNonceStore, *a: Any, **kw: Any) -> None:
            original_mark(self, *a, **kw)
            _kill_self()

        setattr(FileNonceStore, "mark", mark)  # noqa: B010 - the crash hook
    elif args.crash_point is not None:
        target = op_id + (".safety-snapshot" if args.crash_point == "safety_wait" else "")
        original_upid = parts.journal.record_upid

        def record_upid(step_id: str, upid: str) -> JournalEntry:
            entry = original_upid(step_id, upid)
            if step_id == target:
                _kill_self()
            return entry

        setattr(parts.journal, "record_upid", record_upid)  # noqa: B010 - crash hook
    parts.queue.start()
    report = engine.recover()
    for handle in report.handles:
        handle.wait(args.deadline_s)
    consumer = signed_op_sink(config, engine, client=parts.client, journal=parts.journal,
                              audit=parts.audit, logger=log, stop_event=stop)
    consumer.handle([DeliveredOp(payload=payload, signature=args.signature.read_text())])
    consumer.wait_idle(args.deadline_s)
    parts.queue.wait_idle(args.deadline_s)
    results = [r for r in [*consumer.results(), *engine.op_results()] if r.op_id == op_id]
    out = {"reattached": list(report.reattached), "unknown": list(report.marked_unknown),
           "result": [{"state": r.state, "reason": r.reason} for r in results],
           "pending": [e.op_id for e in parts.journal.pending()]}
    print(json.dumps(out), flush=True)
    stop.set()
    parts.queue.shutdown(5.0)
    consumer.close()
    parts.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
