"""``python -m felhom_agent.sim pve [--scenario FILE] [--listen HOST:PORT] [--request-latency S]``.

Starts the simulator, prints exactly one JSON ready line on stdout --
``{"url": ..., "fingerprint": ..., "node": ...}``, plus ``token_id`` and ``token_secret``
when the built-in default scenario is served -- then serves until SIGTERM or SIGINT and
exits 0. A malformed scenario file or listen address exits 2 with one line on stderr naming
the file, key and value. ``--request-latency`` overrides the scenario's ``request_latency_s``
(seconds each request holds its worker slot, like pveproxy's processing time).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import math
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

import attrs

from felhom_agent.sim.pve.scenario import PveScenario, ScenarioError
from felhom_agent.sim.pve.simulator import PveSimulator

__all__ = ["main"]


class _ArgParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def _listen(value: str) -> tuple[str, int]:
    """Parse ``HOST:PORT``; only loopback addresses, since the default scenario prints a
    token holding every privilege."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"--listen must be 127.0.0.1:PORT, got {value!r}")
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise argparse.ArgumentTypeError(f"--listen {value!r}: only loopback addresses")
    return host, int(port)


def _seconds(value: str) -> float:
    """A finite number of seconds >= 0."""
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not math.isfinite(seconds) or seconds < 0:
        raise argparse.ArgumentTypeError(f"must be a number of seconds >= 0, got {value!r}")
    return seconds


def main(argv: list[str] | None = None) -> int:
    """Run the PVE simulator program; returns the exit status."""
    parser = _ArgParser(prog="python -m felhom_agent.sim pve",
                        description="Serve a simulated Proxmox VE node over HTTPS.")
    parser.add_argument("--scenario", type=Path, help="scenario JSON file (default: built-in)")
    parser.add_argument("--listen", type=_listen, default=("127.0.0.1", 0),
                        help="HOST:PORT to listen on (default 127.0.0.1:0)")
    parser.add_argument("--request-latency", type=_seconds, default=None, metavar="SECONDS",
                        help="every request takes at least this long (overrides the "
                             "scenario's request_latency_s)")
    args = parser.parse_args(argv)
    try:
        scenario = (PveScenario.from_file(args.scenario) if args.scenario is not None
                    else PveScenario.default())
    except ScenarioError as err:
        print(f"felhom_agent.sim pve: {err}", file=sys.stderr)
        return 2
    if args.request_latency is not None:
        scenario = attrs.evolve(scenario, request_latency_s=args.request_latency)
    stop = threading.Event()

    def _on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    host, port = args.listen
    try:
        sim = PveSimulator(scenario, host=host, port=port).start()
    except OSError as err:
        print(f"felhom_agent.sim pve: cannot listen on {host}:{port}: {err.strerror}",
              file=sys.stderr)
        return 2
    try:
        ready: dict[str, str] = {"url": sim.url, "fingerprint": sim.fingerprint,
                                 "node": sim.node}
        if args.scenario is None:
            ready.update(token_id=sim.token_id, token_secret=sim.token_secret)
        sys.stdout.write(json.dumps(ready) + "\n")
        sys.stdout.flush()
        while not stop.wait(timeout=1.0):
            pass
    finally:
        sim.stop()
    return 0
