"""``--demo``: the agent against a simulated PVE node and hub, until converged (design §6).

Everything runs in this process on 127.0.0.1: the PVE simulator (HTTPS with a fresh
self-signed certificate, pinned by the agent), the hub simulator (plain HTTP on loopback,
Bearer token) and the real daemon on a thread -- the same wiring as production, with a
generated config file and a temporary state directory. Both secrets are generated per run.

The demo waits on conditions, never on the clock: it blocks on the hub simulator's report
condition until a report shows the desired state reached (guest states, an empty plan for
generation 1, the three actions applied), with an overall timeout. Then it stops the daemon
(the same drain as SIGTERM) and prints what happened: the initial state, the plan, every
action with its UPID and outcome (taken from the hub's last report, i.e. what the hub was
told), the reports sent and the final state. Exit 0 when converged, 1 otherwise.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from felhom_agent.config import load_config
from felhom_agent.daemon.runner import Daemon
from felhom_agent.proxmox import ProxmoxClient
from felhom_agent.reconcile.actual import read_actual
from felhom_agent.reconcile.desired import parse_desired
from felhom_agent.reconcile.plan import Plan, plan, render_text
from felhom_agent.secret import Secret
from felhom_agent.sim.demo_scenarios import (
    DEMO_NODE,
    DEMO_TOKEN_ID,
    demo_desired,
    demo_pve_scenario,
)
from felhom_agent.sim.hub import HubScenario, HubSimulator
from felhom_agent.sim.pve import PveScenario, PveSimulator

__all__ = ["demo_command"]

DEFAULT_TIMEOUT_S = 45.0
_EXPECTED = {(100, "set_config"), (101, "start"), (102, "stop")}

Body = Mapping[str, Any]


def _converged(body: Body) -> bool:
    status = {g["vmid"]: g["status"] for g in body.get("guests", [])}
    rec = body.get("reconcile") or {}
    applied = {(a["vmid"], a["kind"]) for a in body.get("audit", []) if a["outcome"] == "applied"}
    return (status.get(101) == "running" and status.get(102) == "stopped"
            and rec.get("generation") == 1 and rec.get("actions") == 0
            and applied >= _EXPECTED)


def _wait_converged(hub: HubSimulator, timeout_s: float) -> Body | None:
    deadline = time.monotonic() + timeout_s
    seen = 0
    while True:
        reports = hub.reports()
        for r in reports[seen:]:
            if _converged(r.body):
                return r.body
        seen = len(reports)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        try:
            hub.wait_for_reports(seen + 1, remaining)
        except TimeoutError:
            return None


def _guest_rows(pve: PveSimulator) -> list[dict[str, Any]]:
    rows = []
    for vmid in (100, 101, 102):
        g = pve.guest(vmid)
        config = g["config"]
        rows.append({"vmid": vmid, "type": g["type"],
                     "name": config.get("hostname") or config.get("name") or "",
                     "status": g["status"],
                     "description": str(config.get("description", "")).rstrip("\n")})
    return rows


def _plan(pve: PveSimulator, secret: str, desired: Mapping[str, Any]) -> Plan:
    with ProxmoxClient(api_url=pve.url, node=DEMO_NODE, token_id=DEMO_TOKEN_ID,
                       token_secret=Secret(secret), tls_fingerprint=pve.fingerprint,
                       ca_file=None, timeout_s=15) as client:
        state = parse_desired(desired, path="desired")
        actual = read_actual(client, DEMO_NODE, state)
        return plan(state, actual.guests, busy=lambda _vmid: False, node=DEMO_NODE)


def _write_config(tmp: Path, pve: PveSimulator, hub: HubSimulator, secret: str) -> Path:
    cfg = {
        "host_id": "pve1",
        "state_dir": str(tmp / "state"),
        "proxmox": {"api_url": pve.url, "node": DEMO_NODE, "token_id": DEMO_TOKEN_ID,
                    "token_secret": secret, "tls_fingerprint": pve.fingerprint,
                    "task_timeout_s": 60},
        "hub": {"url": hub.url, "token": hub.token, "interval_s": 1},
        "reconcile": {"workers": 4, "interval_s": 2},
    }
    path = tmp / "config.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(cfg, fh)
    return path


def demo_command(*, out: IO[str], as_json: bool = False,
                 timeout_s: float = DEFAULT_TIMEOUT_S) -> int:
    """Run the demo and print its account to ``out``; 0 when converged, 1 otherwise."""
    started = time.monotonic()
    secret = secrets.token_hex(16)
    desired = demo_desired()
    pve_scenario = PveScenario.from_dict(demo_pve_scenario(token_secret=secret))
    hub_scenario = HubScenario(token=secrets.token_urlsafe(24), host_ids=("pve1",),
                               poll_interval_s=1, desired=desired)
    # The daemon's own log lines would interleave with the account: keep warnings only.
    daemon_log = logging.getLogger("felhom_agent.demo.daemon")
    daemon_log.setLevel(logging.WARNING)
    with (tempfile.TemporaryDirectory(prefix="felhom-demo-") as tmp,
          PveSimulator(pve_scenario) as pve, HubSimulator(hub_scenario) as hub):
        initial = _guest_rows(pve)
        the_plan = _plan(pve, secret, desired)
        config = load_config(_write_config(Path(tmp), pve, hub, secret), env={})
        stop = threading.Event()
        codes: list[int] = []
        daemon = Daemon(config, env={}, stop_event=stop, install_signals=False,
                        grace_s=5.0, logger=daemon_log)
        thread = threading.Thread(target=lambda: codes.append(daemon.run()),
                                  name="felhom-demo-daemon", daemon=True)
        thread.start()
        final_report = _wait_converged(hub, timeout_s)
        stop.set()
        thread.join(15.0)
        reports = [r.body for r in hub.reports()]
        final = _guest_rows(pve)
        account = {
            "converged": final_report is not None,
            "daemon_exit": codes[0] if codes else None,
            "seconds": round(time.monotonic() - started, 2),
            "pve": {"url": pve.url, "fingerprint": pve.fingerprint, "node": DEMO_NODE},
            "hub": {"url": hub.url},
            "initial": initial,
            "desired": desired,
            "plan": the_plan.to_json(),
            "actions": [] if final_report is None else [
                {k: a[k] for k in ("vmid", "kind", "upid", "outcome", "reason")}
                for a in final_report["audit"]],
            "reports_sent": len(reports),
            "final": final,
        }
        ok = final_report is not None and codes == [0]
        if as_json:
            print(json.dumps(account), file=out)
        else:
            _print_account(out, account, render_text(the_plan), reports)
    return 0 if ok else 1


def _print_rows(out: IO[str], rows: list[dict[str, Any]]) -> None:
    for r in rows:
        print(f"  {r['vmid']:>4}  {r['type']:<4}  {r['name']:<6}  {r['status']:<8}  "
              f"description: {r['description']!r}", file=out)


def _print_account(out: IO[str], acc: Mapping[str, Any], plan_text: str,
                   reports: list[Body]) -> None:
    p = acc["pve"]
    print("felhom-agent demo: the real daemon against a simulated PVE node and hub", file=out)
    print(f"  PVE node {p['node']} at {p['url']} (TLS pinned to {p['fingerprint'][:23]}...)",
          file=out)
    print(f"  hub at {acc['hub']['url']}, polled every second", file=out)
    print("\ninitial state:", file=out)
    _print_rows(out, acc["initial"])
    print(f"\ndesired state from the hub (generation {acc['desired']['generation']}):", file=out)
    for vmid, want in acc["desired"]["guests"].items():
        print(f"  {vmid:>4}  {json.dumps(want)}", file=out)
    print(f"\n{plan_text.rstrip()}", file=out)
    print("\nactions executed (as reported to the hub):", file=out)
    for a in acc["actions"]:
        upid = a["upid"] or "(synchronous config write, no task)"
        print(f"  {a['vmid']:>4}  {a['kind']:<10}  {a['outcome']:<8}  {upid}", file=out)
    print(f"\nreports sent to the hub: {acc['reports_sent']}", file=out)
    for n, body in enumerate(reports, 1):
        rec = body.get("reconcile") or {}
        states = ", ".join(f"{g['vmid']} {g['status']}" for g in body.get("guests", []))
        print(f"  #{n:<3} generation {rec.get('generation')}, planned actions "
              f"{rec.get('actions')}, audit {len(body.get('audit', []))}: {states}", file=out)
    print("\nfinal state:", file=out)
    _print_rows(out, acc["final"])
    verdict = "converged" if acc["converged"] else "NOT converged"
    print(f"\n{verdict} in {acc['seconds']:.1f} s; daemon exit status {acc['daemon_exit']}",
          file=out)
