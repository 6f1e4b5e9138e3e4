"""``python -m felhom_agent.sim hub --scenario FILE [--listen 127.0.0.1:0]``.

Starts the hub simulator, prints exactly one JSON line when it is ready --
``{"url": "http://127.0.0.1:PORT"}``, plus ``"token"`` when the scenario named none and one
was generated, plus ``"fingerprint"`` when the scenario serves TLS -- then serves until
SIGTERM or SIGINT and exits 0. A malformed scenario or ``--listen`` exits 2 with a message
naming the file, the key and the value.

Signals are taken with ``sigwait`` (blocked first, so every simulator thread inherits the
mask): no Python signal handler runs on top of a lock the main thread might hold.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import signal
import sys
import threading
from pathlib import Path
from typing import TextIO

from felhom_agent.sim.hub.scenario import HubScenario, ScenarioError
from felhom_agent.sim.hub.server import HubSimulator

__all__ = ["main"]

_STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT})


class _Usage(Exception):
    """A command-line problem: exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise _Usage(message)


def _listen(value: str) -> tuple[str, int]:
    host, sep, port_text = value.rpartition(":")
    try:
        port = int(port_text)
        loopback = ipaddress.IPv4Address(host).is_loopback
    except ValueError:
        raise _Usage(f"--listen {value!r}: expected 127.0.0.1:PORT") from None
    if not sep or not loopback or not 0 <= port <= 65535:
        raise _Usage(f"--listen {value!r}: the hub simulator listens on 127.0.0.0/8 only")
    return host, port


def main(
    argv: list[str],
    *,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    stop_event: threading.Event | None = None,
) -> int:
    """Run the hub simulator command; return the exit status.

    Args:
        argv: the arguments after ``hub``.
        stdout: where the ready line goes (default ``sys.stdout``).
        stderr: where errors go (default ``sys.stderr``).
        stop_event: stop when set instead of waiting for a signal (in-process tests).
    """
    out = stdout if stdout is not None else sys.stdout
    err = stderr if stderr is not None else sys.stderr
    parser = _Parser(prog="felhom-agent-sim hub", description="simulated felhom hub")
    parser.add_argument("--scenario", required=True, type=Path, help="scenario JSON file")
    parser.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT (default 127.0.0.1:0)")
    try:
        args = parser.parse_args(argv)
        listen = _listen(args.listen)
        scenario = HubScenario.from_file(args.scenario)
    except _Usage as exc:
        print(f"hub simulator: {exc}", file=err)
        return 2
    except ScenarioError as exc:
        print(f"hub simulator: bad scenario {exc}", file=err)
        return 2

    use_signals = stop_event is None
    previous_mask: set[int | signal.Signals] = set()
    if use_signals:
        previous_mask = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    try:
        try:
            hub = HubSimulator(scenario, listen=listen)
            hub.start()
        except OSError as exc:
            print(f"hub simulator: cannot listen on {args.listen}: {exc.strerror}", file=err)
            return 2
        with hub:
            ready: dict[str, str] = {"url": hub.url}
            if hub.token_generated:
                ready["token"] = hub.token
            if hub.fingerprint is not None:
                ready["fingerprint"] = hub.fingerprint
            print(json.dumps(ready), file=out, flush=True)
            if stop_event is not None:
                stop_event.wait()
            else:
                signal.sigwait(_STOP_SIGNALS)
    finally:
        if use_signals:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous_mask)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
