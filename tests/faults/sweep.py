"""The full crash sweep: ``python -m tests.faults.sweep [POINTS] [--workers W] [--first S]``.

Runs seeds of :func:`tests.faults.crash.run_seed` (a few at a time, each with its own
simulators and daemon child) until at least ``POINTS`` SIGKILL crash points (default 200)
were delivered, prints one line per seed and a summary -- crash points tried and reached,
duplicates, lost changes, convergence time after the last restart (min / median / p95 /
max) -- and exits 1 if any seed found a duplicate, a lost change or could not run.
``scripts/test-faults`` is the entry point; the pytest suite runs a trimmed set of seeds.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from tests.faults.crash import SeedResult, describe, kills_for, run_seed

__all__ = ["main", "summarise"]


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summarise(results: list[SeedResult], wall_s: float) -> list[str]:
    """The summary lines for a finished sweep."""
    tried = sum(len(r.points) for r in results)
    hit = sum(r.hit for r in results)
    times = [r.converge_s for r in results if r.converge_s is not None]
    failed = [r.seed for r in results if not r.ok]
    lines = [
        f"seeds: {len(results)}  wall: {wall_s:.1f} s",
        f"crash points tried: {tried}  (planned point reached before the kill: {hit}; "
        "the rest: the daemon converged first, killed there)",
        "kinds: " + ", ".join(
            f"{k}={sum(p.startswith(k) for r in results for p in r.points)}"
            for k in ("requests", "forked", "finished", "lost_reply")),
        f"intended changes: {sum(r.mutations for r in results)}",
        "signed ops (final reported outcome): " + (", ".join(
            f"{k}={n}" for k, n in sorted(Counter(o for r in results for o in r.signed).items()))
            or "none"),
        "signed ops accepted before a crash, never sent, run after the restart: "
        f"{sum(r.resumed for r in results)}",
        f"duplicates = {sum(r.duplicates for r in results)}",
        f"lost = {sum(r.lost for r in results)}",
    ]
    if times:
        lines.append(
            f"convergence after the last restart: min {min(times):.2f} s, median "
            f"{statistics.median(times):.2f} s, p95 {_quantile(times, 0.95):.2f} s, "
            f"max {max(times):.2f} s")
    lines.append(f"failed seeds: {failed if failed else 'none'}")
    return lines


def main(argv: list[str] | None = None) -> int:
    """Run the sweep; exit status 0 only when every seed passed."""
    parser = argparse.ArgumentParser(prog="test-faults", description=__doc__)
    parser.add_argument("points", nargs="?", type=int, default=200,
                        help="minimum number of crash points to deliver (default 200)")
    parser.add_argument("--workers", type=int, default=3, help="seeds run at once")
    parser.add_argument("--first", type=int, default=1, help="first seed")
    parser.add_argument("--keep", action="store_true", help="keep the work directories")
    args = parser.parse_args(argv)
    seeds: list[int] = []
    planned = 0
    seed = args.first
    while planned < args.points:
        seeds.append(seed)
        planned += kills_for(seed)
        seed += 1
    root = Path(tempfile.mkdtemp(prefix="felhom-faults-"))
    print(f"{len(seeds)} seeds, {planned} crash points, work dir {root}", flush=True)
    started = time.monotonic()
    results: list[SeedResult] = []
    with ThreadPoolExecutor(max_workers=args.workers) as pool:
        futures: list[Future[SeedResult]] = [
            pool.submit(run_seed, s, root / f"seed{s}") for s in seeds]
        for fut in futures:
            result = fut.result()
            results.append(result)
            print(describe(result), flush=True)
    for line in summarise(results, time.monotonic() - started):
        print(line)
    ok = all(r.ok for r in results)
    if ok and not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    elif not ok:
        print(f"daemon logs of failed seeds under {root}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
