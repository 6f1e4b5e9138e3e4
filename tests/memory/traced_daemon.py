"""The daemon program with ``tracemalloc`` on: ``python -m tests.memory.traced_daemon``.

``--config X --snap-dir D --snap-every S``: like ``tests/daemon/run_daemon.py`` but it starts
``tracemalloc`` (25 frames) before the agent is imported and dumps a snapshot to
``D/snap-<n>.tm`` every ``S`` seconds, so a driver (:mod:`tests.memory.probe`) can compare
what the daemon holds minutes apart, grouped by traceback.
"""

from __future__ import annotations

import tracemalloc

tracemalloc.start(25)

import argparse  # noqa: E402 - tracemalloc must see the agent's imports
import os  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
from pathlib import Path  # noqa: E402

from felhom_agent.cli._daemon import daemon_command  # noqa: E402
from felhom_agent.config import load_config  # noqa: E402
from felhom_agent.log import configure_logging  # noqa: E402


def _snapshots(directory: Path, every_s: float, stop: threading.Event) -> None:
    """Dump a snapshot every ``every_s`` seconds until ``stop`` is set."""
    n = 0
    while not stop.wait(every_s):
        n += 1
        tracemalloc.take_snapshot().dump(str(directory / f"snap-{n:03d}.tm"))


def main() -> int:
    """Parse the flags, start the snapshot thread, run the daemon."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    parser.add_argument("--snap-dir", type=Path, required=True)
    parser.add_argument("--snap-every", type=float, default=60.0)
    args = parser.parse_args()
    config = load_config(Path(args.config), env=os.environ)
    configure_logging(level=config.log.level, fmt=config.log.format,
                      secrets=config.secrets(), env=os.environ)
    stop = threading.Event()
    args.snap_dir.mkdir(parents=True, exist_ok=True)
    thread = threading.Thread(target=_snapshots, args=(args.snap_dir, args.snap_every, stop),
                              name="tracemalloc-snapshots", daemon=True)
    thread.start()
    try:
        return daemon_command(config, env=os.environ, grace_s=2.0)
    finally:
        stop.set()


if __name__ == "__main__":
    sys.exit(main())
