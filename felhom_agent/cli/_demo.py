"""``--demo``: the agent against a simulated PVE node and hub, until converged.

Everything runs in this process on 127.0.0.1: the PVE simulator (HTTPS with a fresh
self-signed certificate, pinned by the agent), the hub simulator (plain HTTP on loopback,
Bearer token) and the real daemon on a thread -- the same wiring as production, with a
generated config file and a temporary state directory. Both secrets are generated per run.

Phase B is shown too (``docs/architecture.md``, "Signed operations"): an operator key made for the
run by ``ssh-keygen`` (see :mod:`._demo_signer`) is trusted through ``authz.allowed_signers``; a
``guest.rollback`` op signed with it is queued at the hub, and the daemon's verifying consumer runs
it behind its safety snapshot ``felhom-pre-<8 hex>``. The desired state also asks for a destructive
config change (``memory``), which unsigned desired state may not make: it is refused and reported.

Backups are shown too (``docs/architecture.md``, "Backup policy"): guest 100's policy backup is
due, runs as one vzdump task, is found in the storage's listing by the op id in its notes, and
the report's ``backup`` entry names its volid; guest 102's policy targets the nearly full
``usb-backup``, so its backup is refused with the space numbers and no vzdump task is started.

Provisioning is shown too (``docs/architecture.md``, "Provisioning"): guest 1001 does not exist;
its desired entry carries a ``provision`` block cloning container template 9000, which the
generated config allows (``provision.allowed_sources``). The daemon plans a ``provision``
action, full-clones the template (a ``vzclone`` task whose UPID names the template), and the
pass that follows sets 1001's description and starts it.

The demo waits on conditions, never on the clock: it blocks on the hub simulator's report
condition until a report shows everything reached (guest states, an empty plan for
generation 1, the plan actions applied -- 1001 provisioned, described and started among
them --, the memory change and 102's backup refused,
the report's ``backup`` entries showing 100's new backup and 102's refusal, the signed op
applied with both of its steps audited), with an overall timeout; a signed op reported
anything but ``applied`` ends the wait early. Then it stops the daemon (the same drain as
SIGTERM) and prints what happened, taken from the hub's last report (what the hub was told)
and from the simulator's own task list. Exit 0 when converged, 1 otherwise.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from felhom_agent.backup.notes import notes_template
from felhom_agent.cli._demo_signer import DemoSigner, op_payload
from felhom_agent.compose.root import backup_settings, provision_limits, proxmox_client
from felhom_agent.config import Config, load_config
from felhom_agent.core.desired import parse_desired
from felhom_agent.daemon.runner import Daemon
from felhom_agent.planning.actual import read_actual
from felhom_agent.planning.backup_read import read_backup_facts
from felhom_agent.planning.plan import Plan, plan, render_text
from felhom_agent.signedops.gate import safety_snapshot_name
from felhom_agent.sim.demo_scenarios import (
    DEMO_BACKUP_STORAGE,
    DEMO_BACKUP_VMID,
    DEMO_FULL_STORAGE,
    DEMO_FULL_VMID,
    DEMO_NODE,
    DEMO_PRINCIPAL,
    DEMO_PROVISION_VMID,
    DEMO_ROLLBACK_VMID,
    DEMO_TEMPLATE_VMID,
    DEMO_TOKEN_ID,
    DEMO_VMIDS,
    demo_desired,
    demo_mount_table,
    demo_pve_scenario,
    demo_rollback_op,
)
from felhom_agent.sim.hub import HubScenario, HubSimulator
from felhom_agent.sim.pve import PveScenario, PveSimulator

__all__ = ["demo_command"]

DEFAULT_TIMEOUT_S = 45.0
HOST_ID = "pve1"
_EXPECTED = {(100, "set_config"), (101, "start"), (102, "stop"), (DEMO_BACKUP_VMID, "backup"),
             (DEMO_PROVISION_VMID, "provision"), (DEMO_PROVISION_VMID, "set_config"),
             (DEMO_PROVISION_VMID, "start")}
#: The refusal the desired state's ``memory: 8192`` on 101 must produce.
REFUSAL = {"vmid": 101, "kind": "set_config", "reason": "destructive key: memory"}

#: The storages whose figures the account shows before and after.
_STORAGES = (DEMO_BACKUP_STORAGE, DEMO_FULL_STORAGE)
#: How many backups of 100 the report must show once its policy backup was found.
_BACKUPS_AFTER = 2

Body = Mapping[str, Any]


def _op_state(body: Body, op_id: str) -> Mapping[str, Any] | None:
    for entry in body.get("ops", ()):
        if entry.get("op_id") == op_id:
            return dict(entry)
    return None


def _op_steps(body: Body, op_id: str) -> list[dict[str, Any]]:
    """The audit lines of a signed op's steps (``<op_id>.safety-snapshot``, the op), in order."""
    return [dict(a) for a in body.get("audit", ())
            if a["op_id"] == op_id or a["op_id"].startswith(op_id + ".")]


def _backup_entry(body: Body, vmid: int) -> Mapping[str, Any]:
    return next((e for e in body.get("backup", ()) if e.get("vmid") == vmid), {})


def _backups_reported(body: Body) -> bool:
    """100's new backup is reported (found, counted) and 102's refusal names the full disk."""
    done, full = _backup_entry(body, DEMO_BACKUP_VMID), _backup_entry(body, DEMO_FULL_VMID)
    return (done.get("status") == "ok" and done.get("count") == _BACKUPS_AFTER
            and done.get("last") is not None
            and full.get("status") == "refused"
            and f"storage {DEMO_FULL_STORAGE} full" in str(full.get("reason")))


def _converged(body: Body, op_id: str) -> bool:
    status = {g["vmid"]: g["status"] for g in body.get("guests", [])}
    rec = body.get("reconcile") or {}
    applied = {(a["vmid"], a["kind"]) for a in body.get("audit", []) if a["outcome"] == "applied"}
    op = _op_state(body, op_id) or {}
    steps = {a["op_id"]: a["outcome"] for a in _op_steps(body, op_id)}
    return (status.get(101) == "running" and status.get(102) == "stopped"
            and status.get(DEMO_ROLLBACK_VMID) == "running"
            and status.get(DEMO_PROVISION_VMID) == "running"
            and rec.get("generation") == 1 and rec.get("actions") == 0
            and applied >= _EXPECTED and REFUSAL in rec.get("refused", [])
            and _backups_reported(body)
            and op.get("state") == "applied"
            and steps == {op_id: "applied", f"{op_id}.safety-snapshot": "applied"})


def _op_ended_badly(body: Body, op_id: str) -> bool:
    op = _op_state(body, op_id)
    return op is not None and op.get("state") not in ("applied", "running")


def _wait_converged(hub: HubSimulator, op_id: str, timeout_s: float) -> tuple[Body | None, bool]:
    """The first report that shows convergence (``(body, True)``), else the last one seen."""
    deadline = time.monotonic() + timeout_s
    seen = 0
    last: Body | None = None
    while True:
        reports = hub.reports()
        for r in reports[seen:]:
            last = r.body
            if _converged(r.body, op_id):
                return r.body, True
            if _op_ended_badly(r.body, op_id):
                return r.body, False
        seen = len(reports)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return last, False
        try:
            hub.wait_for_reports(seen + 1, remaining)
        except TimeoutError:
            return last, False


def _guest_rows(pve: PveSimulator) -> list[dict[str, Any]]:
    rows = []
    for vmid in DEMO_VMIDS:
        g = pve.guest(vmid)
        config = g["config"]
        rows.append({"vmid": vmid, "type": g["type"],
                     "name": config.get("hostname") or config.get("name") or "",
                     "status": g["status"], "cores": config.get("cores"),
                     "memory": str(config.get("memory", "")),
                     "snapshots": sorted(g["snapshots"]),
                     "description": str(config.get("description", "")).rstrip("\n")})
    return rows


def _storage_rows(pve: PveSimulator) -> list[dict[str, Any]]:
    return [pve.storage(name) for name in _STORAGES]


def _plan(config: Config, desired: Mapping[str, Any]) -> Plan:
    """The daemon's first plan, computed the same way (backup facts included)."""
    settings = backup_settings(config)
    with proxmox_client(config) as client:
        state = parse_desired(desired, path="desired")
        actual = read_actual(client, DEMO_NODE, state)
        facts = read_backup_facts(client, now=time.time(), tz=settings.tz,
                                  min_keep=settings.min_keep, margin_pct=settings.margin_pct)
        return plan(state, actual.guests, busy=lambda _vmid: False, node=DEMO_NODE,
                    backups=facts, provision=provision_limits(config))


def _write_config(tmp: Path, pve: PveSimulator, hub: HubSimulator, secret: str,
                  allowed_signers: Path) -> Path:
    cfg = {
        "host_id": HOST_ID,
        "state_dir": str(tmp / "state"),
        "proxmox": {"api_url": pve.url, "node": DEMO_NODE, "token_id": DEMO_TOKEN_ID,
                    "token_secret": secret, "tls_fingerprint": pve.fingerprint,
                    "task_timeout_s": 60,
                    # A simulated node: no root CLI runs on this machine for it.
                    "privileged": {"mode": "off"}},
        "hub": {"url": hub.url, "token": hub.token, "interval_s": 1},
        "reconcile": {"workers": 4, "interval_s": 1},
        "authz": {"allowed_signers": str(allowed_signers)},
        "provision": {"allowed_sources": [{"template": DEMO_TEMPLATE_VMID}]},
    }
    path = tmp / "config.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(cfg, fh)
    return path


def _signed_op_account(signer: DemoSigner, payload: str, body: Body | None) -> dict[str, Any]:
    doc = json.loads(payload)
    op_id = doc["op_id"]
    reported = {} if body is None else dict(_op_state(body, op_id) or {})
    steps = [] if body is None else _op_steps(body, op_id)
    for step in steps:
        upid = step.get("upid") or ""
        step["task_type"] = upid.split(":")[5] if upid.count(":") >= 6 else None
        step["purpose"] = step["op_id"][len(op_id) + 1:] if step["op_id"] != op_id else "op"
    return {
        "op_id": op_id, "kind": doc["kind"], "vmid": doc["vmid"], "params": doc["params"],
        "signer": doc["signer"], "expires_at": doc["expires_at"],
        "key": signer.public_line.split()[0], "namespace": "felhom-op",
        "safety_snapshot": safety_snapshot_name(op_id),
        "state": reported.get("state"), "reason": reported.get("reason"),
        "upid": reported.get("upid"), "steps": steps,
    }


def demo_command(*, out: IO[str], as_json: bool = False,
                 timeout_s: float = DEFAULT_TIMEOUT_S,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> int:
    """Run the demo and print its account to ``out``; 0 when converged, 1 otherwise.

    Args:
        out: where the account goes (text, or one JSON document with ``as_json``).
        timeout_s: how long to wait for convergence at most.
        clock: the signed op's issue time (the daemon checks it against the real clock).

    Raises:
        DemoSignerError: ``ssh-keygen`` is missing (the message names ``openssh-client``) or
            failed; the CLI prints it on one line and exits 1. Nothing is faked instead.
    """
    started = time.monotonic()
    secret = secrets.token_hex(16)
    desired = demo_desired()
    hub_scenario = HubScenario(token=secrets.token_urlsafe(24), host_ids=(HOST_ID,),
                               poll_interval_s=1, desired=desired)
    # The daemon's own log lines would interleave with the account: keep warnings only.
    daemon_log = logging.getLogger("felhom_agent.demo.daemon")
    daemon_log.setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="felhom-demo-") as tmp_name:
        tmp = Path(tmp_name)
        # The simulated node's mount table: its USB backup disk is plugged in and mounted.
        mounts = tmp / "mounts"
        mounts.write_text(demo_mount_table())
        pve_scenario = PveScenario.from_dict(demo_pve_scenario(
            token_secret=secret, now=time.time(), mounts_file=str(mounts)))
        signer = DemoSigner.create(tmp / "operator", DEMO_PRINCIPAL)
        with PveSimulator(pve_scenario) as pve, HubSimulator(hub_scenario) as hub:
            initial = _guest_rows(pve)
            initial_storages = _storage_rows(pve)
            payload = op_payload(demo_rollback_op(), host_id=HOST_ID,
                                 now=clock().replace(microsecond=0), signer=DEMO_PRINCIPAL)
            hub.add_signed_op(payload, signer.sign(payload))
            op_id = json.loads(payload)["op_id"]
            config = load_config(
                _write_config(tmp, pve, hub, secret, signer.allowed_signers), env={})
            the_plan = _plan(config, desired)
            stop = threading.Event()
            codes: list[int] = []
            daemon = Daemon(config, env={}, stop_event=stop, install_signals=False,
                            grace_s=5.0, logger=daemon_log)
            thread = threading.Thread(target=lambda: codes.append(daemon.run()),
                                      name="felhom-demo-daemon", daemon=True)
            thread.start()
            last, converged = _wait_converged(hub, op_id, timeout_s)
            stop.set()
            thread.join(15.0)
            reports = [r.body for r in hub.reports()]
            final = _guest_rows(pve)
            final_storages = _storage_rows(pve)
            tasks = [{k: t[k] for k in ("type", "id", "upid", "exitstatus")}
                     for t in pve.tasks()]
            account = _account(started=started, converged=converged, codes=codes, pve=pve,
                               hub=hub, initial=initial, final=final, desired=desired,
                               the_plan=the_plan, last=last, reports=reports, tasks=tasks)
            account["storages"] = {"initial": initial_storages, "final": final_storages}
            account["volumes"] = [{k: b[k] for k in ("volid", "vmid", "size", "ctime", "notes")}
                                  for name in _STORAGES for b in pve.backups(name)]
            account["signed_op"] = _signed_op_account(signer, payload, last)
            account["provisioned"] = _provisioned(pve, account["actions"], tasks)
    ok = converged and codes == [0]
    if as_json:
        print(json.dumps(account), file=out)
    else:
        _print_account(out, account, render_text(the_plan), reports)
    return 0 if ok else 1


def _account(*, started: float, converged: bool, codes: list[int], pve: PveSimulator,
             hub: HubSimulator, initial: list[dict[str, Any]], final: list[dict[str, Any]],
             desired: Mapping[str, Any], the_plan: Plan, last: Body | None,
             reports: list[Body], tasks: list[dict[str, Any]]) -> dict[str, Any]:
    audit = [] if last is None else list(last.get("audit", ()))
    rec = {} if last is None else dict(last.get("reconcile") or {})
    memory = {r["vmid"]: r["memory"] for r in initial}, {r["vmid"]: r["memory"] for r in final}
    return {
        "converged": converged,
        "daemon_exit": codes[0] if codes else None,
        "seconds": round(time.monotonic() - started, 2),
        "pve": {"url": pve.url, "fingerprint": pve.fingerprint, "node": DEMO_NODE},
        "hub": {"url": hub.url},
        "initial": initial,
        "desired": desired,
        "plan": the_plan.to_json(),
        "actions": [{k: a[k] for k in ("vmid", "kind", "op_id", "upid", "outcome", "reason")}
                    for a in audit if str(a.get("source", "")).startswith("plan:")],
        "refused": list(rec.get("refused", [])),
        "refused_memory": {"vmid": REFUSAL["vmid"], "before": memory[0][101],
                           "after": memory[1][101],
                           "desired": desired["guests"]["101"]["config"]["memory"]},
        "backup": [] if last is None else list(last.get("backup", ())),
        "backup_refused": _refused_backup(last, tasks),
        "reports_sent": len(reports),
        "pve_tasks": tasks,
        "final": final,
    }


def _provisioned(pve: PveSimulator, actions: list[dict[str, Any]],
                 tasks: list[dict[str, Any]]) -> dict[str, Any]:
    """1001: its provision action, the clone task (named by the template), how it ended up."""
    action = next((a for a in actions if a["kind"] == "provision"), {})
    exists = pve.has_guest(DEMO_PROVISION_VMID)
    g = pve.guest(DEMO_PROVISION_VMID) if exists else {"config": {}}
    config = g["config"]
    return {"vmid": DEMO_PROVISION_VMID, "template": DEMO_TEMPLATE_VMID,
            "outcome": action.get("outcome"), "reason": action.get("reason"),
            "upid": action.get("upid"),
            "clone_tasks": sum(1 for t in tasks if t["type"] == "vzclone"),
            "name": config.get("hostname"), "status": g.get("status"),
            "description": str(config.get("description", "")).rstrip("\n"),
            "features": config.get("features"), "rootfs": config.get("rootfs")}


def _refused_backup(last: Body | None, tasks: list[dict[str, Any]]) -> dict[str, Any]:
    """102's refused backup: the report's reason and how many vzdump tasks PVE ran for it."""
    entry = {} if last is None else dict(_backup_entry(last, DEMO_FULL_VMID))
    return {"vmid": DEMO_FULL_VMID, "storage": DEMO_FULL_STORAGE,
            "status": entry.get("status"), "reason": entry.get("reason"),
            "vzdump_tasks": sum(1 for t in tasks
                                if t["type"] == "vzdump" and t["id"] == str(DEMO_FULL_VMID))}


def _gib(n: object) -> str:
    return f"{n / 2**30:.1f} GiB" if isinstance(n, int) else "?"


def _print_storages(out: IO[str], rows: list[dict[str, Any]]) -> None:
    for s in rows:
        print(f"  {s['storage']:<10}  {s['type']:<4}  avail {_gib(s['avail']):>8}  "
              f"backups {s['backups']}", file=out)


def _print_backups(out: IO[str], acc: Mapping[str, Any]) -> None:
    print("\nbackups (the report's backup entries):", file=out)
    for e in acc["backup"]:
        last = e.get("last")
        seen = "no backup" if last is None else f"last {last['volid']} ({last['size']} bytes)"
        print(f"  {e['vmid']:>4}  {e['type']:<4}  {e['status']:<8}  {e['storage']:<10}  "
              f"{seen}, {e['count']} backup(s)", file=out)
        print(f"{'':>8}{e['reason']}", file=out)
    r = acc["backup_refused"]
    print(f"  vzdump tasks started for {r['vmid']}: {r['vzdump_tasks']} "
          f"(refused before any call)", file=out)


def _print_rows(out: IO[str], rows: list[dict[str, Any]]) -> None:
    for r in rows:
        snaps = f"  snapshots: {', '.join(r['snapshots'])}" if r["snapshots"] else ""
        print(f"  {r['vmid']:>4}  {r['type']:<4}  {r['name']:<6}  {r['status']:<8}  "
              f"cores {r['cores']}  memory {r['memory']:>4}  description: {r['description']!r}"
              f"{snaps}", file=out)


def _print_signed_op(out: IO[str], op: Mapping[str, Any]) -> None:
    print(f"\nsigned op queued at the hub (ssh-keygen -Y sign -n {op['namespace']}, "
          f"throwaway {op['key']} key):", file=out)
    print(f"  {op['kind']}  vmid {op['vmid']}  params {json.dumps(op['params'])}  "
          f"signer {op['signer']}", file=out)
    print(f"  op_id {op['op_id']}, expires {op['expires_at']}", file=out)
    print("\nsigned op executed (as reported to the hub):", file=out)
    for n, step in enumerate(op["steps"], 1):
        what = (f"{step['task_type']} {op['safety_snapshot']}"
                if step["purpose"] == "safety-snapshot"
                else f"{step['task_type']} {op['params'].get('snapname', '')}")
        print(f"  {n}. {step['purpose']:<15}  {what:<30}  {step['outcome']:<8}  "
              f"{step['upid']}", file=out)
    reason = f" ({op['reason']})" if op["reason"] else ""
    print(f"  op {op['op_id']} reported {op['state'] or 'nothing'}{reason}", file=out)


def _print_account(out: IO[str], acc: Mapping[str, Any], plan_text: str,
                   reports: list[Body]) -> None:
    p = acc["pve"]
    print("felhom-agent demo: the real daemon against a simulated PVE node and hub", file=out)
    print(f"  PVE node {p['node']} at {p['url']} (TLS pinned to {p['fingerprint'][:23]}...)",
          file=out)
    print(f"  hub at {acc['hub']['url']}, polled every second", file=out)
    print(f"  authz.allowed_signers trusts {acc['signed_op']['signer']} "
          f"(an ed25519 key made by ssh-keygen for this run)", file=out)
    print("\ninitial state:", file=out)
    _print_rows(out, acc["initial"])
    _print_storages(out, acc["storages"]["initial"])
    print(f"\ndesired state from the hub (generation {acc['desired']['generation']}, "
          "unsigned):", file=out)
    for vmid, want in acc["desired"]["guests"].items():
        print(f"  {vmid:>4}  {json.dumps(want)}", file=out)
    print(f"\n{plan_text.rstrip()}", file=out)
    _print_signed_op(out, acc["signed_op"])
    print("\nactions executed from the desired state (as reported to the hub):", file=out)
    for a in acc["actions"]:
        upid = a["upid"] or "(synchronous config write, no task)"
        print(f"  {a['vmid']:>4}  {a['kind']:<10}  {a['outcome']:<8}  {upid}", file=out)
        if a["kind"] == "backup" and a["reason"]:
            found = a["reason"].removeprefix("backup ")
            print(f"{'':>8}found in the listing by its notes '{notes_template(a['op_id'])}': "
                  f"{found}", file=out)
    pr = acc["provisioned"]
    print(f"\nprovisioned from the desired state (template {pr['template']} allowed by "
          "provision.allowed_sources):", file=out)
    print(f"  {pr['vmid']:>4}  {pr['outcome'] or 'not provisioned'}: {pr['reason'] or '-'}",
          file=out)
    print(f"{'':>8}{pr['name']!r} {pr['status']}, description {pr['description']!r}, "
          f"rootfs {pr['rootfs']}, features {pr['features']} (copied from the template)",
          file=out)
    print("\nrefused from the unsigned desired state (as reported to the hub):", file=out)
    for r in acc["refused"]:
        print(f"  {r['vmid']:>4}  {r['kind']:<10}  refused: {r['reason']}", file=out)
    m = acc["refused_memory"]
    print(f"  guest {m['vmid']} memory: {m['before']} MB before, {m['after']} MB after "
          f"(desired {m['desired']} not written: it needs a signed op)", file=out)
    _print_backups(out, acc)
    print("\nPVE tasks, in the simulator's order:", file=out)
    for t in acc["pve_tasks"]:
        print(f"  {t['id']:>4}  {t['type']:<12}  {t['exitstatus'] or 'running':<4}  {t['upid']}",
              file=out)
    print(f"\nreports sent to the hub: {acc['reports_sent']}", file=out)
    for n, body in enumerate(reports, 1):
        rec = body.get("reconcile") or {}
        states = ", ".join(f"{g['vmid']} {g['status']}" for g in body.get("guests", []))
        op = _op_state(body, acc["signed_op"]["op_id"]) or {}
        backups = ", ".join(f"{e['vmid']} {e['status']}" for e in body.get("backup", []))
        print(f"  #{n:<3} generation {rec.get('generation')}, planned actions "
              f"{rec.get('actions')}, refused {len(rec.get('refused', []))}, "
              f"audit {len(body.get('audit', []))}, op {op.get('state', '-')}: {states}"
              f"; backup: {backups or '-'}", file=out)
    print("\nfinal state:", file=out)
    _print_rows(out, acc["final"])
    _print_storages(out, acc["storages"]["final"])
    verdict = "converged" if acc["converged"] else "NOT converged"
    print(f"\n{verdict} in {acc['seconds']:.1f} s; daemon exit status {acc['daemon_exit']}",
          file=out)
