"""Seeded SIGKILL crash points for the daemon child process, and the checks after restart.

One seed (:func:`run_seed`) draws a scenario -- six guests (four qemu, two LXC) with random
initial and desired run states and qemu descriptions, at least three changes, plus zero to
two signed ops the hub delivers (``guest.snapshot`` on 321; ``guest.rollback`` on 320, which
the gate turns into a safety snapshot and the rollback), each signed at run time with a fresh
``ssh-keygen`` key -- then runs the daemon against the simulators and SIGKILLs it one to three
times at seeded *crash points*, each measured by simulator events, never by time:

* ``requests:K`` -- after the PVE simulator has received K more requests (start-up, recovery,
  planning and the reads between mutations);
* ``forked:N`` -- once the node holds N tasks (a mutation was just dispatched; its task is
  usually still running, so the restart has to re-attach it);
* ``finished:N`` -- once N tasks have ended (the outcome may not be journaled yet);
* ``lost_reply:N`` -- the next mutating POST is processed but its answer dropped, and the
  daemon is killed once that task exists (the restart must adopt it, not re-issue it);

each followed by 0-3 further requests (a seeded delay counted in simulator events). A final
start runs to convergence. The checks:

* **no duplicate mutation** -- the node's task list holds exactly one task per intended change
  (per guest and task type) and at most one per signed-op step, every one ended ``OK``, and
  no other task;
* **no lost change** -- every guest ends in its desired state, the final report shows the
  generation planned with nothing left to do, and the journal holds nothing pending after an
  orderly stop;
* **no lost signed op** -- every signed op ends with an outcome in a report (the hub stops
  re-delivering it), and that outcome is true of the node and the journal: ``applied`` with
  its task on the node; ``failed`` because it expired, with no ``begin``; or -- when a kill
  fell between a step's journal ``begin`` and its call reaching PVE -- ``unknown`` (the op's
  own step) or ``failed`` (a rollback whose safety snapshot is unknown), with that ``begin``
  journaled without a UPID and no such task on the node. An op accepted before a crash but
  never sent (no journal ``begin``) runs after the restart. Anything else counts as lost.
"""

from __future__ import annotations

import logging
import random
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

from felhom_agent.signedops.gate import SAFETY_SUFFIX
from felhom_agent.signedops.unstarted import EXPIRED_REASON
from felhom_agent.sim.hub import HubSimulator
from felhom_agent.sim.pve import Fault, PveSimulator
from felhom_agent.state.journal import Journal, JournalEntry, OpState
from tests.faults.harness import (
    DaemonChild,
    HarnessError,
    Want,
    daemon_config,
    desired_doc,
    hub_sim,
    pve_sim,
    report_matches,
    sim_matches,
    wait_pve,
    wait_report,
)
from tests.phaseb.signing import OpSigner, make_keys, op_payload

__all__ = ["CRASH_KINDS", "Scenario", "SeedResult", "describe", "draw_scenario", "kills_for",
           "outcome_class", "run_seed"]

CRASH_KINDS = ("requests", "forked", "finished", "lost_reply")
#: What the daemon logs when it runs a signed op that was accepted before a crash, never sent.
RESUMED_LOG = "but never sent; running it now"
QEMU = (300, 301, 302, 303)
LXC = (310, 311)
#: Guests only signed ops touch: 320 (stopped, snapshot ``base``) is rolled back, 321 snapshotted.
ROLLBACK_VMID, SNAPSHOT_VMID = 320, 321
#: The tasks each signed op may leave (at most one of each).
SIGNED_TASKS = {"snapshot": frozenset({(str(SNAPSHOT_VMID), "qmsnapshot")}),
                "rollback": frozenset({(str(ROLLBACK_VMID), "qmsnapshot"),
                                       (str(ROLLBACK_VMID), "qmrollback")})}
_SIGNED_GUESTS: tuple[dict[str, Any], ...] = (
    {"vmid": ROLLBACK_VMID, "type": "qemu", "name": "rb", "status": "stopped",
     "config": {"cores": 1, "memory": 512},
     "snapshots": [{"name": "base", "description": "base", "snaptime": 1_750_000_000}]},
    {"vmid": SNAPSHOT_VMID, "type": "qemu", "name": "snap", "status": "running",
     "config": {"cores": 1, "memory": 512}},
)
#: Longest wait for one crash point to be reached (it is normally reached within a second).
POINT_TIMEOUT_S = 30.0
CONVERGE_TIMEOUT_S = 60.0
_LOG = logging.getLogger("tests.faults.crash")


@attrs.frozen
class Scenario:
    """A seed's guests (simulator form), what the hub wants, and the changes that needs."""

    guests: tuple[dict[str, Any], ...]
    wants: tuple[Want, ...]
    #: (vmid as str, PVE task type) for every mutation the desired state needs.
    expected: frozenset[tuple[str, str]]
    task_s: float
    #: signed ops the hub delivers: "snapshot" and/or "rollback".
    signed: tuple[str, ...] = ()


@attrs.frozen
class SeedResult:
    """What one seed did and found."""

    seed: int
    points: tuple[str, ...]
    hit: int
    duplicates: int
    lost: int
    converge_s: float | None
    mutations: int
    error: str | None = None
    #: final reported state of each signed op ("applied", "failed", ...).
    signed: tuple[str, ...] = ()
    #: signed ops accepted before a crash, never sent, and run after a restart (from the logs).
    resumed: int = 0

    @property
    def ok(self) -> bool:
        """No duplicate, nothing lost, no harness error."""
        return self.error is None and self.duplicates == 0 and self.lost == 0


def draw_scenario(rng: random.Random) -> Scenario:
    """Random initial/desired states over :data:`QEMU` and :data:`LXC` (>= 3 changes)."""
    while True:
        guests: list[dict[str, Any]] = []
        wants: list[Want] = []
        expected: set[tuple[str, str]] = set()
        for vmid in QEMU + LXC:
            qemu = vmid in QEMU
            status = rng.choice(("running", "stopped"))
            desired = rng.choice(("running", "stopped"))
            config: dict[str, Any] = ({"cores": 1, "memory": 512, "description": "initial"}
                                      if qemu else
                                      {"cores": 1, "memory": 256, "ostype": "alpine"})
            guests.append({"vmid": vmid, "type": "qemu" if qemu else "lxc",
                           "name": f"g{vmid}", "status": status, "config": config})
            description = f"seeded {vmid}" if qemu and rng.random() < 0.5 else None
            wants.append(Want(vmid, "qemu" if qemu else "lxc", desired, description))
            prefix = "qm" if qemu else "vz"
            if desired != status:
                expected.add((str(vmid), prefix + ("start" if desired == "running" else "stop")))
            if description is not None:
                expected.add((str(vmid), "qmconfig"))
        if len(expected) >= 3:
            signed = tuple(k for k in ("snapshot", "rollback") if rng.random() < 0.5)
            return Scenario(tuple(guests) + _SIGNED_GUESTS, tuple(wants),
                            frozenset(expected), task_s=rng.choice((0.1, 0.3, 0.6)),
                            signed=signed)


def _stopped(pve: PveSimulator) -> int:
    return sum(t["status"] == "stopped" for t in pve.tasks())


def _crash_point(rng: random.Random, pve: PveSimulator, total: int
                 ) -> tuple[str, Callable[[], bool]]:
    """Draw the next crash point: a label and the predicate that says it is reached."""
    tasks = len(pve.tasks())
    left = total - tasks
    kind = rng.choice(CRASH_KINDS) if left > 0 else "requests"
    if kind == "requests":
        k = rng.randint(1, 40)
        target = pve.requests_seen + k
        return f"requests:{k}", lambda: pve.requests_seen >= target
    if kind == "finished":
        n = rng.randint(max(1, _stopped(pve) + 1), max(1, _stopped(pve) + 1, total))
        return f"finished:{n}", lambda: _stopped(pve) >= n
    n = tasks + rng.randint(1, left) if kind == "forked" else tasks + 1
    if kind == "lost_reply":
        pve.inject(Fault("drop_after", method="POST", count=1))
    return f"{kind}:{n}", lambda: len(pve.tasks()) >= n


def _settled(pve: PveSimulator, hub: HubSimulator, scenario: Scenario) -> bool:
    """Converged on the node, every signed op reported, no task running (nothing can come)."""
    return (sim_matches(pve, scenario.wants) and not hub.pending_ops()
            and all(t["status"] == "stopped" for t in pve.tasks()))


def _duplicates(pve: PveSimulator, scenario: Scenario) -> int:
    """Tasks beyond one per intended change or signed step, unasked-for tasks, failed ones."""
    allowed = set(scenario.expected)
    for kind in scenario.signed:
        allowed |= SIGNED_TASKS[kind]
    counts = Counter((t["id"], t["type"]) for t in pve.tasks())
    extra = sum(n - 1 if key in allowed else n for key, n in counts.items())
    failed = sum(t["exitstatus"] not in ("OK", None) for t in pve.tasks())
    return extra + failed


def outcome_class(state: str, reason: str) -> str:
    """A reported signed-op outcome as the sweep counts it.

    ``failed(expired)``, ``failed(safety step unknown)`` (the rollback was not run because its
    safety snapshot's outcome is unknown) and ``failed(never started)`` (the wording before
    accepted-but-unsent ops were run after a restart) are told apart from any other
    ``failed``.
    """
    if state == "failed" and reason.startswith(EXPIRED_REASON):
        return "failed(expired)"
    if state == "failed" and reason.startswith("safety snapshot") and "(unknown:" in reason:
        return "failed(safety step unknown)"
    if state == "failed" and "never started" in reason:
        return "failed(never started)"
    return state


def _signed_outcomes(hub: HubSimulator, op_ids: dict[str, str]) -> dict[str, str]:
    """op kind -> the class of the last outcome (not ``running``) any report gave its op id."""
    out: dict[str, str] = {}
    by_id = {v: k for k, v in op_ids.items()}
    for r in hub.reports():
        for entry in r.body.get("ops", []):
            kind = by_id.get(str(entry.get("op_id")))
            if kind is not None and entry.get("state") != "running":
                out[kind] = outcome_class(str(entry.get("state")), str(entry.get("reason")))
    return out


def _begun_without_task(entry: JournalEntry | None) -> bool:
    """Begun, no UPID, outcome ``unknown``: the agent's "its call may have reached PVE"."""
    return (entry is not None and entry.began_at is not None and entry.upid is None
            and entry.outcome is not None and entry.outcome.state is OpState.UNKNOWN)


def _judge_signed(pve: PveSimulator, hub: HubSimulator, op_ids: dict[str, str],
                  state: Path) -> tuple[dict[str, str], int]:
    """Each signed op's outcome class, checked against the node and the journal; lost count.

    Acceptable: ``applied`` with its task on the node; ``failed(expired)`` decided without a
    ``begin``; and the two outcomes of a kill between a step's journal ``begin`` and its call
    reaching PVE -- ``unknown`` for the op itself, or ``failed(safety step unknown)`` for a
    rollback -- only when the journal shows that ``begin`` without a UPID, PVE holds no task
    for it (the agent missed none), and the op's own call was never begun if it failed. A
    failure recorded with a ``begin`` would be the defect of seed 1008, and counts as lost.
    """
    outcomes = _signed_outcomes(hub, op_ids)
    ok_tasks = {(t["id"], t["type"]) for t in pve.tasks() if t["exitstatus"] == "OK"}
    any_tasks = {(t["id"], t["type"]) for t in pve.tasks()}
    with Journal.open(state, clock=time.time, logger=_LOG) as journal:
        entries = {i: journal.get(i) for op_id in op_ids.values()
                   for i in (op_id, op_id + SAFETY_SUFFIX)}
    lost = 0
    for kind, op_id in op_ids.items():
        cls = outcomes.get(kind)
        main = entries[op_id]
        never_begun = main is not None and main.began_at is None
        own = (str(SNAPSHOT_VMID), "qmsnapshot") if kind == "snapshot" else (
            str(ROLLBACK_VMID), "qmrollback")
        if cls == "applied":
            good = SIGNED_TASKS[kind] <= ok_tasks if kind == "snapshot" else own in ok_tasks
        elif cls == "failed(expired)":
            good = never_begun and own not in any_tasks
        elif cls == "unknown":
            good = _begun_without_task(main) and own not in any_tasks
        elif cls == "failed(safety step unknown)":
            good = (never_begun and _begun_without_task(entries[op_id + SAFETY_SUFFIX])
                    and not SIGNED_TASKS["rollback"] & any_tasks)
        else:
            good = False
        lost += not good
    return outcomes, lost


def _deliver(scenario: Scenario, hub: HubSimulator, work: Path) -> tuple[Path, dict[str, str]]:
    """Make a key, allowed_signers and the seed's signed ops; queue them at the hub."""
    trusted, _, signers = make_keys(work / "keys")
    signer = OpSigner(trusted, work / "keys")
    op_ids: dict[str, str] = {}
    for kind in scenario.signed:
        doc = (op_payload("guest.snapshot", SNAPSHOT_VMID, {"snapname": "fault"})
               if kind == "snapshot" else
               op_payload("guest.rollback", ROLLBACK_VMID, {"snapname": "base"}))
        payload, signature = signer.sign(doc)
        hub.add_signed_op(payload, signature)
        op_ids[kind] = str(doc["op_id"])
    return signers, op_ids


def _pending(state: Path) -> int:
    with Journal.open(state, clock=time.time, logger=_LOG) as journal:
        return len(journal.pending())


def _reach(pve: PveSimulator, hub: HubSimulator, scenario: Scenario,
           reached: Callable[[], bool], child: DaemonChild) -> bool:
    """Wait for the crash point (or for nothing left to happen); True if the point came."""
    wait_pve(pve, lambda: reached() or _settled(pve, hub, scenario), POINT_TIMEOUT_S,
             child=child)
    return reached()


def _more_requests(pve: PveSimulator, extra: int, child: DaemonChild) -> None:
    """The seeded delay after a crash point, counted in simulator requests."""
    target = pve.requests_seen + extra
    wait_pve(pve, lambda: pve.requests_seen >= target, POINT_TIMEOUT_S, child=child)


def kills_for(seed: int) -> int:
    """How many SIGKILLs seed ``seed`` delivers (1-3; its own stream, so a sweep can count)."""
    return random.Random(seed * 7919 + 1).randint(1, 3)


def run_seed(seed: int, work: Path, *, kills: int | None = None) -> SeedResult:
    """Run one seed in ``work`` (created); never raises for a failed check (see ``error``)."""
    rng = random.Random(seed)
    scenario = draw_scenario(rng)
    n_kills = kills if kills is not None else kills_for(seed)
    work.mkdir(parents=True, exist_ok=True)
    points: list[str] = []
    hit = 0
    converge_s: float | None = None
    error: str | None = None
    lost = 0
    with pve_sim(list(scenario.guests), task_s=scenario.task_s) as pve, \
            hub_sim(desired_doc(1, scenario.wants)) as hub:
        signers, op_ids = _deliver(scenario, hub, work)
        config = daemon_config(work, pve, hub, authz={"allowed_signers": str(signers)})
        try:
            for i in range(n_kills):
                child = DaemonChild(config, work / f"run{i}.log")
                try:
                    total = len(scenario.expected) + 2 * len(scenario.signed)
                    label, reached = _crash_point(rng, pve, total)
                    hit += _reach(pve, hub, scenario, reached, child)
                    extra = rng.randint(0, 3)
                    _more_requests(pve, extra, child)
                    points.append(f"{label}+{extra}")
                finally:
                    child.sigkill()
            pve.clear_faults()
            start = len(hub.reports())
            final = DaemonChild(config, work / "final.log")
            try:
                # Converged and idle: a guest can show its new state before its task ends,
                # and an orderly stop leaves a running task pending (re-attached on restart),
                # which the "nothing pending" check below would count as lost.
                wait_report(hub, lambda b: report_matches(b, 1, scenario.wants)
                            and _settled(pve, hub, scenario),
                            CONVERGE_TIMEOUT_S, after=start, child=final)
                converge_s = time.monotonic() - final.started
            finally:
                code = final.terminate()
            if code != 0:
                error = f"final daemon exited {code}"
            lost = sum(not sim_matches(pve, (w,)) for w in scenario.wants)
            lost += _pending(work / "state")
        except HarnessError as err:
            error = str(err)
            lost = sum(not sim_matches(pve, (w,)) for w in scenario.wants)
        outcomes, lost_signed = _judge_signed(pve, hub, op_ids, work / "state")
        lost += lost_signed
        duplicates = _duplicates(pve, scenario)
    return SeedResult(seed, tuple(points), hit, duplicates, lost, converge_s,
                      len(scenario.expected), error,
                      tuple(f"{k}={outcomes.get(k, 'none')}" for k in scenario.signed),
                      _resumed(work))


def _resumed(work: Path) -> int:
    """How often a daemon run logged that it runs an op accepted earlier but never sent."""
    return sum(log.read_text(errors="replace").count(RESUMED_LOG)
               for log in work.glob("*.log"))


def describe(result: SeedResult) -> str:
    """One line for a seed: its crash points and findings."""
    conv = "-" if result.converge_s is None else f"{result.converge_s:.2f}s"
    status = "ok" if result.ok else f"FAIL {result.error or ''}"
    signed = f" signed[{' '.join(result.signed)}]" if result.signed else ""
    if result.resumed:
        signed += f" resumed={result.resumed}"
    return (f"seed {result.seed}: {' '.join(result.points)} changes={result.mutations}"
            f"{signed} dup={result.duplicates} lost={result.lost} converge={conv} {status}")
