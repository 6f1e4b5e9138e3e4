"""Memory probe: ``python -m tests.memory.probe --minutes M --churn-s S --work DIR``.

Runs :mod:`tests.memory.traced_daemon` as a child against the PVE and hub simulators
(loopback only) with the soak's seeded churn (:class:`tests.faults.soak.Churn`) and a signed
``guest.snapshot`` op every ``--signed-every`` ticks, prints the child's RSS every
``--report-s`` seconds, and at the end compares the first tracemalloc snapshot taken after
the warm-up with the last one, grouped by traceback (the top growers, agent frames shown
first). ``--no-trace`` runs the plain daemon instead, for RSS without tracemalloc's overhead.
A diagnostic tool, not a test: pacing is a timed schedule on purpose.
"""

from __future__ import annotations

import argparse
import random
import signal
import subprocess
import sys
import threading
import time
import tracemalloc
from pathlib import Path

from tests.faults import soak
from tests.faults.harness import daemon_config, hub_sim, pve_sim, rss_kib
from tests.phaseb.signing import OpSigner, make_keys, op_payload
from tests.support.daemon import REPO, RUNNER


def compare(first: Path, last: Path, top: int = 15) -> str:
    """The ``top`` traceback groups that grew most between two snapshot files."""
    flt = [tracemalloc.Filter(False, "<frozen importlib._bootstrap*>"),
           tracemalloc.Filter(False, tracemalloc.__file__),
           tracemalloc.Filter(False, "*/linecache.py")]
    a = tracemalloc.Snapshot.load(str(first)).filter_traces(flt)
    b = tracemalloc.Snapshot.load(str(last)).filter_traces(flt)
    lines = [f"total traced: {sum(s.size for s in a.statistics('filename')) / 1024:.0f} KiB -> "
             f"{sum(s.size for s in b.statistics('filename')) / 1024:.0f} KiB"]
    for stat in b.compare_to(a, "traceback")[:top]:
        lines.append(f"+{stat.size_diff / 1024:.1f} KiB (+{stat.count_diff} blocks), "
                     f"now {stat.size / 1024:.1f} KiB:")
        frames = [f for f in stat.traceback if "felhom_agent" in f.filename] or \
            list(stat.traceback)[-3:]
        for f in frames[-6:]:
            lines.append(f"    {f.filename.split('/felhom_agent/')[-1]}:{f.lineno}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the probe; see the module docstring."""
    p = argparse.ArgumentParser(prog="probe")
    p.add_argument("--minutes", type=float, default=5.0)
    p.add_argument("--guests", type=int, default=12)
    p.add_argument("--churn-s", type=float, default=0.5)
    p.add_argument("--report-s", type=float, default=60.0)
    p.add_argument("--snap-every", type=float, default=60.0)
    p.add_argument("--signed-every", type=int, default=10)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--no-trace", action="store_true",
                   help="run the plain daemon (tests/daemon/run_daemon.py): RSS without the "
                        "tracemalloc overhead and its snapshot spikes")
    p.add_argument("--work", type=Path, required=True)
    args = p.parse_args(argv)
    rng = random.Random(args.seed)
    args.work.mkdir(parents=True, exist_ok=True)
    guests = soak._guests(args.guests, rng)
    churn = soak.Churn.initial(rng, guests)
    pause = threading.Event()
    snaps = args.work / "snaps"
    with pve_sim(guests, task_s=0.2) as pve, hub_sim(churn.doc()) as hub:
        trusted, _, signers = make_keys(args.work / "keys")
        signer = OpSigner(trusted, args.work / "keys")
        config = daemon_config(args.work, pve, hub, log={"level": "info", "format": "json"},
                               reconcile={"workers": 4, "interval_s": 2},
                               authz={"allowed_signers": str(signers)})
        with open(args.work / "daemon.log", "ab") as log:
            cmd = ([sys.executable, str(RUNNER), "--config", str(config), "--grace", "2"]
                   if args.no_trace else
                   [sys.executable, "-m", "tests.memory.traced_daemon", "--config", str(config),
                    "--snap-dir", str(snaps), "--snap-every", str(args.snap_every)])
            child = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=REPO,
                env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)})
            try:
                start = time.monotonic()
                end, next_report, ticks = start + args.minutes * 60, start + args.report_s, 0
                while time.monotonic() < end and child.poll() is None:
                    churn.step()
                    hub.set_desired(churn.doc())
                    ticks += 1
                    if args.signed_every and ticks % args.signed_every == 0:
                        vmid = rng.choice([w.vmid for w in churn.wants.values()
                                           if w.type == "qemu"])
                        hub.add_signed_op(*signer.sign(
                            op_payload("guest.snapshot", vmid, {"snapname": f"p{ticks}"})))
                    pause.wait(args.churn_s)
                    if time.monotonic() >= next_report:
                        next_report += args.report_s
                        print(f"t={time.monotonic() - start:5.0f}s gen={churn.generation} "
                              f"pve requests={pve.requests_seen} reports={len(hub.reports())} "
                              f"rss={(rss_kib(child.pid) or 0) / 1024:.1f} MiB", flush=True)
            finally:
                child.send_signal(signal.SIGTERM)
                code = child.wait(timeout=30)
    files = sorted(snaps.glob("snap-*.tm"))
    print(f"daemon exit {code}; {len(files)} snapshots")
    if len(files) >= 2:
        print(compare(files[0], files[-1]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
