"""The soak: ``python -m tests.faults.soak [--minutes M] [--guests G] [--churn-s S] ...``.

The daemon runs as a child process against the PVE and hub simulators (loopback only) for
``M`` minutes while the hub's desired state churns -- every ``S`` seconds one to three guests
get a new run state or description and the generation goes up -- and faults are injected at
a low rate (PVE 5xx, dropped connections, a lost reply after a mutation, slow answers, failing
tasks; hub 5xx, dropped connections, short outages; ``--fault-kinds`` picks some, injected
round robin); every ``--signed-every`` ticks the hub
also delivers a signed ``guest.snapshot`` op (signed at run time with a fresh ``ssh-keygen``
key). Request rate is bounded by the daemon's
own intervals (hub poll 1 s, reconcile 2 s) and the churn period.

Every ``--report-s`` seconds (default 60) it prints: ops applied (distinct audit records with
outcome ``applied`` seen in reports), other outcomes and errors by type (audit outcomes, the
report's ``errors`` sources, the daemon's WARNING/ERROR lines by logger, faults injected by
kind), reports received, PVE requests, the daemon's RSS (``/proc/<pid>/status``) and CPU
(``/proc/<pid>/stat``). At the end churn and faults stop, the daemon must converge on the last
generation, then it is stopped with SIGTERM, and a summary gives RSS at start (after the
warm-up), at the end, and whether it stayed flat (end <= start + ``--rss-slack-mib``).
Exit status 0 only if RSS stayed flat, the daemon converged, kept reporting, reported an
outcome for every signed op and exited 0.

The pacing of churn and samples is a timed schedule on purpose (a soak runs for wall-clock
minutes); no check depends on how fast anything happens.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from felhom_agent.sim.hub import HubFault, HubSimulator
from felhom_agent.sim.pve import Fault, PveSimulator
from tests.faults.harness import (
    DaemonChild,
    HarnessError,
    Want,
    cpu_seconds,
    daemon_config,
    desired_doc,
    hub_sim,
    open_fds,
    proc_status,
    pve_sim,
    report_matches,
    rss_kib,
    sim_matches,
    wait_report,
)
from tests.phaseb.signing import OpSigner, make_keys, op_payload

__all__ = ["FAULT_KINDS", "Churn", "SoakResult", "Tally", "main", "run"]

FIRST_VMID = 400
CONVERGE_TIMEOUT_S = 120.0


@attrs.define
class Churn:
    """The hub's desired state and how it changes (seeded)."""

    rng: random.Random
    wants: dict[int, Want]
    generation: int = 1
    changes: int = 0

    @classmethod
    def initial(cls, rng: random.Random, guests: list[dict[str, Any]]) -> Churn:
        """Start from the guests as they are (nothing to do at generation 1)."""
        wants = {g["vmid"]: Want(g["vmid"], g["type"], g["status"], "soak 0") for g in guests}
        return cls(rng, wants)

    def step(self) -> None:
        """Change one to three guests (flip the run state or set a new description)."""
        for vmid in self.rng.sample(sorted(self.wants), self.rng.randint(1, 3)):
            w = self.wants[vmid]
            if self.rng.random() < 0.5:
                w = attrs.evolve(w, state="stopped" if w.state == "running" else "running")
            else:
                w = attrs.evolve(w, description=f"soak {self.generation + 1}")
            self.wants[vmid] = w
            self.changes += 1
        self.generation += 1

    def doc(self) -> dict[str, Any]:
        """The current desired-state document."""
        return desired_doc(self.generation, self.wants.values())


@attrs.define
class Tally:
    """What the reports and the daemon's log said so far."""

    applied: set[str] = attrs.field(factory=set)
    outcomes: Counter[str] = attrs.field(factory=Counter)
    report_errors: Counter[str] = attrs.field(factory=Counter)
    log_levels: Counter[str] = attrs.field(factory=Counter)
    injected: Counter[str] = attrs.field(factory=Counter)
    #: the daemon's own account of hub trouble: failed reports logged, recoveries logged.
    hub_failures_logged: int = 0
    hub_recoveries_logged: int = 0
    signed_sent: set[str] = attrs.field(factory=set)
    #: op id -> the last outcome a report gave (``running`` until it ends).
    signed: dict[str, str] = attrs.field(factory=dict)
    _seen_outcomes: set[tuple[str, str]] = attrs.field(factory=set)
    _reports_read: int = 0
    _log_offset: int = 0

    def read_reports(self, hub: HubSimulator) -> int:
        """Fold in the reports received since the last call; return the total count."""
        reports = hub.reports()
        for r in reports[self._reports_read:]:
            for a in r.body.get("audit", []):
                key = (str(a.get("op_id")), str(a.get("outcome")))
                if key in self._seen_outcomes:
                    continue
                self._seen_outcomes.add(key)
                if a.get("outcome") == "applied":
                    self.applied.add(key[0])
                else:
                    self.outcomes[f"{a.get('kind')}:{a.get('outcome')}"] += 1
            for e in r.body.get("errors", []):
                self.report_errors[str(e.get("source"))] += 1
            for o in r.body.get("ops", []):
                self.signed[str(o.get("op_id"))] = str(o.get("state"))
        self._reports_read = len(reports)
        return len(reports)

    def signed_outcomes(self) -> Counter[str]:
        """Signed ops sent, by their last reported state (``none`` if never reported)."""
        return Counter(self.signed.get(op_id, "none") for op_id in self.signed_sent)

    def read_log(self, path: Path) -> None:
        """Count the daemon's new WARNING/ERROR/CRITICAL lines by level and logger."""
        with open(path, "rb") as f:
            f.seek(self._log_offset)
            data = f.read()
        end = data.rfind(b"\n") + 1
        self._log_offset += end
        for raw in data[:end].splitlines():
            try:
                doc = json.loads(raw)
            except ValueError:
                self.log_levels["unparsed-line"] += 1
                continue
            if not isinstance(doc, dict):
                self.log_levels["unparsed-line"] += 1
                continue
            level = str(doc.get("level", "?"))
            if level in ("warning", "error", "critical"):
                self.log_levels[f"{level}:{doc.get('logger')}"] += 1
            msg = str(doc.get("msg", ""))
            if msg.startswith("hub report failed"):
                self.hub_failures_logged += 1
            elif msg.startswith("hub reachable again"):
                self.hub_recoveries_logged += 1


def _fmt(counter: Mapping[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(counter.items())) or "none"


FAULT_KINDS = ("pve_5xx", "pve_drop", "pve_slow", "pve_lost_reply", "task_fail",
               "hub_5xx", "hub_drop", "hub_outage")


def _inject(rng: random.Random, pve: PveSimulator, hub: HubSimulator, tally: Tally,
            kinds: tuple[str, ...] | None = None) -> str:
    """Inject one fault; return its kind (hub outages end at the next churn tick).

    Without ``kinds`` the kind is a seeded random choice among :data:`FAULT_KINDS`; with
    ``kinds`` they are injected in that order, round robin (every listed kind happens).
    """
    kind = kinds[sum(tally.injected.values()) % len(kinds)] if kinds else rng.choice(FAULT_KINDS)
    if kind == "pve_5xx":
        pve.inject(Fault("http_error", method="GET", status=500, count=rng.randint(1, 3)))
    elif kind == "pve_drop":
        pve.inject(Fault("drop", method="GET", count=1))
    elif kind == "pve_slow":
        pve.inject(Fault("latency", delay_s=2.0, count=1))
    elif kind == "pve_lost_reply":
        pve.inject(Fault("drop_after", method="POST", count=1))
    elif kind == "task_fail":
        pve.inject(Fault("task_fail", message="simulated task failure", count=1))
    elif kind == "hub_5xx":
        hub.inject(HubFault(kind="http_error", status=503, count=1))
    elif kind == "hub_drop":
        hub.inject(HubFault(kind="drop", count=1))
    else:
        hub.go_down()
    tally.injected[kind] += 1
    return kind


def _guests(n: int, rng: random.Random) -> list[dict[str, Any]]:
    out = []
    for i in range(n):
        qemu = i % 2 == 0
        config: dict[str, Any] = ({"cores": 1, "memory": 512} if qemu
                                  else {"cores": 1, "memory": 256, "ostype": "alpine"})
        config["description"] = "soak 0"
        out.append({"vmid": FIRST_VMID + i, "type": "qemu" if qemu else "lxc",
                    "name": f"soak{i}", "status": rng.choice(("running", "stopped")),
                    "config": config})
    return out


@attrs.frozen
class SoakResult:
    """What a soak run found: PASS or not, and the counts behind its summary."""

    passed: bool
    tally: Tally
    #: hub requests answered by an injected fault (5xx, dropped connection).
    hub_faults_fired: int
    reports: int
    converged: bool = False
    exit_code: int | None = None
    rss_flat: bool = False
    #: report periods in which no new report arrived.
    stalled_periods: int = 0


def main(argv: list[str] | None = None) -> int:
    """Run the soak and print its figures; exit status 0 on PASS (see the module docstring)."""
    return 0 if run(argv).passed else 1


def run(argv: list[str] | None = None) -> SoakResult:
    """Run the soak, print its figures and return them."""
    p = argparse.ArgumentParser(prog="soak", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=5.0)
    p.add_argument("--guests", type=int, default=12)
    p.add_argument("--churn-s", type=float, default=3.0, help="desired-state change period")
    p.add_argument("--fault-rate", type=float, default=0.15,
                   help="probability of injecting one fault per churn tick")
    p.add_argument("--report-s", type=float, default=60.0, help="progress line period")
    p.add_argument("--warmup-s", type=float, default=60.0, help="RSS baseline taken after")
    p.add_argument("--rss-slack-mib", type=float, default=10.0)
    p.add_argument("--fault-kinds", default=None, metavar="K1,K2,...",
                   help="inject only these kinds, in this order round robin (default: a seeded "
                        f"random choice among {', '.join(FAULT_KINDS)})")
    p.add_argument("--signed-every", type=int, default=10,
                   help="deliver a signed guest.snapshot op every N churn ticks (0: never)")
    p.add_argument("--child-env", action="append", default=[], metavar="KEY=VALUE",
                   help="extra environment for the daemon (e.g. MALLOC_ARENA_MAX=2)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--work", type=Path, default=None, help="work dir (default: a temp dir)")
    args = p.parse_args(argv)
    if not 1 <= args.guests <= 200 or args.churn_s < 0.5 or args.minutes <= 0:
        p.error("--guests must be 1..200, --churn-s >= 0.5, --minutes > 0")
    if any("=" not in kv for kv in args.child_env):
        p.error("--child-env takes KEY=VALUE")
    kinds = tuple(args.fault_kinds.split(",")) if args.fault_kinds else None
    if kinds is not None and not set(kinds) <= set(FAULT_KINDS):
        p.error(f"--fault-kinds takes some of {', '.join(FAULT_KINDS)}")
    rng = random.Random(args.seed)
    work = args.work or Path(tempfile.mkdtemp(prefix="felhom-soak-"))
    work.mkdir(parents=True, exist_ok=True)
    guests = _guests(args.guests, rng)
    churn = Churn.initial(rng, guests)
    tally = Tally()
    pause = threading.Event()  # never set: its wait() is the interruptible schedule tick
    print(f"soak: {args.minutes:g} min, {args.guests} guests, churn every {args.churn_s:g} s, "
          f"fault rate {args.fault_rate:g}/tick, seed {args.seed}, work dir {work}, daemon env "
          f"{args.child_env or 'default'}", flush=True)
    with pve_sim(guests, task_s=0.2) as pve, hub_sim(churn.doc()) as hub:
        trusted, _, signers = make_keys(work / "keys")
        signer = OpSigner(trusted, work / "keys")
        config = daemon_config(work, pve, hub, log={"level": "info", "format": "json"},
                               reconcile={"workers": 4, "interval_s": 2},
                               authz={"allowed_signers": str(signers)})
        extra_env = dict(kv.split("=", 1) for kv in args.child_env)
        child = DaemonChild(config, work / "daemon.log", env=extra_env)
        try:
            wait_report(hub, lambda b: report_matches(b, 1, churn.wants.values()), 60.0,
                        child=child)
            return _run(args, pve, hub, child=child, churn=churn, tally=tally, pause=pause,
                        rng=rng, signer=signer, kinds=kinds)
        except HarnessError as err:
            print(f"soak FAILED: {err}; daemon log {work / 'daemon.log'}")
            return SoakResult(passed=False, tally=tally, hub_faults_fired=hub.faults.fired(),
                              reports=len(hub.reports()))
        finally:
            if child.alive():
                child.terminate()


def _run(args: argparse.Namespace, pve: PveSimulator, hub: HubSimulator, *,
         child: DaemonChild, churn: Churn, tally: Tally, pause: threading.Event,
         rng: random.Random, signer: OpSigner, kinds: tuple[str, ...] | None) -> SoakResult:
    pid = child.pid
    started = time.monotonic()
    end = started + args.minutes * 60
    rss_ready = rss_kib(pid)
    rss_base: int | None = None
    next_report = started + args.report_s
    last_cpu, last_t = cpu_seconds(pid) or 0.0, started
    last_reports = tally.read_reports(hub)
    last_requests = pve.requests_seen
    stalled = 0
    ticks = 0
    threads_ready, fds_ready = proc_status(pid, "Threads"), open_fds(pid)
    peak_threads = threads_ready or 0
    samples: list[int] = []
    minute = 0
    while time.monotonic() < end:
        if not child.alive():
            raise HarnessError(f"daemon exited with {child.proc.returncode} during the soak")
        if not hub.is_up():
            hub.come_up()
        churn.step()
        hub.set_desired(churn.doc())
        if rng.random() < args.fault_rate:
            _inject(rng, pve, hub, tally, kinds)
        ticks += 1
        if args.signed_every and ticks % args.signed_every == 0:
            vmid = rng.choice([w.vmid for w in churn.wants.values() if w.type == "qemu"])
            doc = op_payload("guest.snapshot", vmid, {"snapname": f"soak{ticks}"})
            hub.add_signed_op(*signer.sign(doc))
            tally.signed_sent.add(str(doc["op_id"]))
        pause.wait(args.churn_s)
        now = time.monotonic()
        if rss_base is None and now - started >= args.warmup_s:
            rss_base = rss_kib(pid)
        if now >= next_report:
            minute += 1
            next_report += args.report_s
            reports = tally.read_reports(hub)
            tally.read_log(child.log_path)
            rss = rss_kib(pid) or 0
            samples.append(rss)
            cpu = cpu_seconds(pid) or last_cpu
            cpu_pct = 100.0 * (cpu - last_cpu) / max(now - last_t, 1e-9)
            stalled += reports == last_reports
            threads, fds = proc_status(pid, "Threads"), open_fds(pid)
            peak_threads = max(peak_threads, threads or 0)
            print(f"[{minute:3d}] t={now - started:6.0f}s gen={churn.generation} "
                  f"ops applied={len(tally.applied)} reports={reports} "
                  f"(+{reports - last_reports}) pve requests +{pve.requests_seen - last_requests}"
                  f" rss={rss / 1024:.1f} MiB cpu={cpu_pct:.1f}% threads={threads} fds={fds}"
                  " | outcomes: "
                  f"{_fmt(tally.outcomes)} | report errors: {_fmt(tally.report_errors)} | "
                  f"log: {_fmt(tally.log_levels)} | injected: {_fmt(tally.injected)} | "
                  f"signed: {_fmt(tally.signed_outcomes())}",
                  flush=True)
            last_cpu, last_t, last_reports = cpu, now, reports
            last_requests = pve.requests_seen
    # Faults stop: bring the hub back, clear PVE faults, let the last generation land.
    if not hub.is_up():
        hub.come_up()
    pve.clear_faults()
    hub.faults.clear()
    final_wants = list(churn.wants.values())
    t0 = time.monotonic()
    converged = True
    try:
        wait_report(hub, lambda b: report_matches(b, churn.generation, final_wants)
                    and sim_matches(pve, final_wants) and not hub.pending_ops(),
                    CONVERGE_TIMEOUT_S, child=child)
    except HarnessError as err:
        converged = False
        print(f"did not converge on generation {churn.generation}: {err}")
    converge_s = time.monotonic() - t0
    rss_end = rss_kib(pid) or 0
    cpu_total = cpu_seconds(pid) or 0.0
    threads_end, fds_end = proc_status(pid, "Threads"), open_fds(pid)
    code = child.terminate()
    tally.read_reports(hub)
    tally.read_log(child.log_path)
    base = rss_base if rss_base is not None else (rss_ready or 0)
    flat = rss_end <= base + args.rss_slack_mib * 1024
    elapsed = time.monotonic() - started
    print("---- soak summary ----")
    print(f"duration: {elapsed / 60:.1f} min; generations: {churn.generation}; "
          f"desired changes: {churn.changes}")
    print(f"ops applied: {len(tally.applied)}; other outcomes: {_fmt(tally.outcomes)}")
    print(f"errors by type: report errors: {_fmt(tally.report_errors)}; daemon log: "
          f"{_fmt(tally.log_levels)}")
    fired = hub.faults.fired()
    print(f"faults injected: {_fmt(tally.injected)} (total {sum(tally.injected.values())}); "
          f"hub requests answered by a fault: {fired}; daemon logged {tally.hub_failures_logged}"
          f" failed hub report(s) and {tally.hub_recoveries_logged} recovery(ies)")
    signed = tally.signed_outcomes()
    print(f"signed ops: {len(tally.signed_sent)} sent; last reported state: {_fmt(signed)}")
    print(f"reports received: {len(hub.reports())}; report periods without a new report: "
          f"{stalled}; "
          f"PVE requests: {pve.requests_seen} ({pve.requests_seen / elapsed:.1f}/s)")
    print(f"converged on the last generation after the faults stopped: {converged} "
          f"({converge_s:.1f} s)")
    print(f"daemon CPU total: {cpu_total:.1f} s ({100 * cpu_total / elapsed:.1f}% average)")
    if samples:
        print(f"RSS samples (MiB): min {min(samples) / 1024:.1f}, max {max(samples) / 1024:.1f}")
    print(f"RSS at ready: {(rss_ready or 0) / 1024:.1f} MiB; start (after {args.warmup_s:g} s "
          f"warm-up): {base / 1024:.1f} MiB; end: {rss_end / 1024:.1f} MiB; "
          f"flat (end <= start + {args.rss_slack_mib:g} MiB): {flat}")
    print(f"threads: at ready {threads_ready}, peak {peak_threads}, end {threads_end}; "
          f"open fds: at ready {fds_ready}, end {fds_end}")
    print(f"daemon exit status on SIGTERM: {code}")
    unreported = signed["none"] + signed["running"]
    ok = flat and converged and code == 0 and stalled == 0 and unreported == 0
    print("soak: PASS" if ok else "soak: FAIL")
    return SoakResult(passed=ok, tally=tally, hub_faults_fired=fired, reports=len(hub.reports()),
                      converged=converged, exit_code=code, rss_flat=flat, stalled_periods=stalled)


if __name__ == "__main__":
    sys.exit(main())
