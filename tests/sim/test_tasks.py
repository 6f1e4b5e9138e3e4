"""Tasks: UPID format, running -> stopped transitions, exitstatus, locks, task list and log."""

from __future__ import annotations

import re

from felhom_agent.sim.pve import Fault, PveSimulator
from felhom_agent.sim.pve.upid import parse_upid
from tests.sim.helpers import TIMEOUT, Api

UPID_RE = re.compile(
    r"^UPID:([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?):([0-9A-F]{8}):([0-9A-F]{8,9}):"
    r"([0-9A-F]{8}):([^:\s/]+):([^:\s/]*):([^:\s/]+):$"
)


def test_upid_has_pve_format_with_full_token_user(api: Api) -> None:
    """A mutation returns 'UPID:node:PID:PSTART:STARTTIME:TYPE:ID:USER:' (upper-case hex,
    8 digits, trailing colon, user = full token id)."""
    upid = api.data("POST", "/nodes/pve1/qemu/101/status/start")
    assert UPID_RE.match(upid), upid
    fields = upid.split(":")
    assert len(fields) == 9 and fields[8] == ""
    assert fields[1] == "pve1" and fields[5] == "qmstart" and fields[6] == "101"
    assert fields[7] == "felhom@pve!agent"
    parsed = parse_upid(upid)
    assert parsed is not None and str(parsed) == upid


def test_task_runs_then_stops_ok_and_applies_the_change(api: Api) -> None:
    """A held task reports status 'running' without exitstatus, then 'stopped' with 'OK'."""
    sim = api.sim
    sim.set_task_duration("qmstart", 60)
    upid = api.data("POST", "/nodes/pve1/qemu/101/status/start")
    st = api.data("GET", f"/nodes/pve1/tasks/{upid}/status")
    assert st["status"] == "running" and "exitstatus" not in st
    assert st["user"] == "felhom@pve" and st["tokenid"] == "agent"
    assert sim.guest(101)["status"] == "stopped"
    sim.release_tasks()
    sim.wait_task(upid, TIMEOUT)
    st = api.data("GET", f"/nodes/pve1/tasks/{upid}/status")
    assert (st["status"], st["exitstatus"]) == ("stopped", "OK")
    assert api.data("GET", "/nodes/pve1/qemu/101/status/current")["status"] == "running"


def test_failing_task_stops_with_the_error_text(api: Api) -> None:
    """A task_fail fault ends the task with exitstatus = the message; nothing changes."""
    api.sim.inject(Fault("task_fail", task_type="qmstart", vmid=101,
                         message="start failed: QEMU exited with code 1"))
    rec = api.run_task("POST", "/nodes/pve1/qemu/101/status/start")
    assert rec["exitstatus"] == "start failed: QEMU exited with code 1"
    assert rec["log"][-1] == "TASK ERROR: start failed: QEMU exited with code 1"
    assert api.sim.guest(101)["status"] == "stopped"


def test_warnings_exitstatus_counts_as_applied(api: Api) -> None:
    """A 'WARNINGS: 2' task applies its change and logs two WARN lines."""
    api.sim.inject(Fault("task_fail", task_type="vzstop", message="WARNINGS: 2"))
    rec = api.run_task("POST", "/nodes/pve1/lxc/100/status/stop")
    assert rec["exitstatus"] == "WARNINGS: 2"
    assert sum(line.startswith("WARN: ") for line in rec["log"]) == 2
    assert api.sim.guest(100)["status"] == "stopped"


def test_lock_is_visible_while_snapshot_runs_and_cleared_after(api: Api) -> None:
    """During a snapshot task status/current, lists and config show lock 'snapshot'."""
    sim = api.sim
    sim.set_task_duration("qmsnapshot", 60)
    upid = api.data("POST", "/nodes/pve1/qemu/101/snapshot", data={"snapname": "pre"})
    assert api.data("GET", "/nodes/pve1/qemu/101/status/current")["lock"] == "snapshot"
    assert api.data("GET", "/nodes/pve1/qemu")[0]["lock"] == "snapshot"
    assert api.data("GET", "/nodes/pve1/qemu/101/config")["lock"] == "snapshot"
    snaps = {s["name"]: s for s in api.data("GET", "/nodes/pve1/qemu/101/snapshot")}
    assert snaps["pre"]["snapstate"] == "prepare"
    sim.release_tasks()
    assert sim.wait_task(upid, TIMEOUT)["exitstatus"] == "OK"
    assert "lock" not in api.data("GET", "/nodes/pve1/qemu/101/status/current")
    snaps = {s["name"]: s for s in api.data("GET", "/nodes/pve1/qemu/101/snapshot")}
    assert "snapstate" not in snaps["pre"] and snaps["current"]["parent"] == "pre"


def test_second_operation_on_locked_guest_fails_in_its_task(api: Api) -> None:
    """While 'lock: snapshot' is held, a start returns a UPID whose task fails with
    'VM is locked (snapshot)'; an LXC config PUT fails synchronously with 'CT is locked'."""
    sim = api.sim
    sim.set_task_duration("qmsnapshot", 60)
    sim.set_task_duration("vzsnapshot", 60)
    first = api.data("POST", "/nodes/pve1/qemu/101/snapshot", data={"snapname": "snap-a"})
    rec = api.run_task("POST", "/nodes/pve1/qemu/101/status/start")
    assert rec["exitstatus"] == "VM is locked (snapshot)"
    api.data("POST", "/nodes/pve1/lxc/102/snapshot", data={"snapname": "snap-b"})
    r = api.put("/nodes/pve1/lxc/102/config", data={"description": "x"})
    assert (r.status_code, r.reason) == (500, "CT is locked (snapshot)")
    sim.release_tasks()
    assert sim.wait_task(first, TIMEOUT)["exitstatus"] == "OK"


def test_config_flock_contention_times_out_like_pve(api: Api) -> None:
    """A write while a power task holds the config flock fails with PVE's 'got timeout'
    text (scenario lock_wait_s = 0), and a queued task fails the same way in its log."""
    sim = api.sim
    sim.set_task_duration("qmstart", 60)
    first = api.data("POST", "/nodes/pve1/qemu/101/status/start")
    r = api.put("/nodes/pve1/qemu/101/config", data={"description": "x"})
    assert r.status_code == 500
    timeout_text = "can't lock file '/var/lock/qemu-server/lock-101.conf' - got timeout"
    assert r.reason == timeout_text
    rec = api.run_task("POST", "/nodes/pve1/qemu/101/status/stop")
    assert rec["log"][0] == "trying to acquire lock..."
    assert rec["exitstatus"] == timeout_text
    sim.release_tasks()
    assert sim.wait_task(first, TIMEOUT)["exitstatus"] == "OK"


def test_lxc_power_state_checks_are_synchronous(api: Api) -> None:
    """LXC start of a running CT and stop of a stopped CT are sync 500s."""
    r = api.post("/nodes/pve1/lxc/100/status/start")
    assert (r.status_code, r.reason) == (500, "CT 100 already running")
    r = api.post("/nodes/pve1/lxc/102/status/shutdown")
    assert (r.status_code, r.reason) == (500, "CT 102 not running")


def test_qemu_stop_of_stopped_vm_is_ok_noop_and_double_start_fails(api: Api) -> None:
    """Stopping a stopped VM ends OK; starting a running VM fails in the task."""
    assert api.run_task("POST", "/nodes/pve1/qemu/101/status/stop")["exitstatus"] == "OK"
    api.run_task("POST", "/nodes/pve1/qemu/101/status/start")
    rec = api.run_task("POST", "/nodes/pve1/qemu/101/status/start")
    assert rec["exitstatus"] == "VM 101 already running"


def test_task_list_archive_active_and_token_split(api: Api) -> None:
    """Archive lists only finished tasks (user/tokenid split); active shows RUNNING with the
    full token id; total counts all matches."""
    sim = api.sim
    done = api.run_task("POST", "/nodes/pve1/qemu/101/status/start")
    sim.set_task_duration("vzstop", 60)
    running = api.data("POST", "/nodes/pve1/lxc/100/status/stop")
    r = api.get("/nodes/pve1/tasks").json()
    assert [t["upid"] for t in r["data"]] == [done["upid"]] and r["total"] == 1
    entry = r["data"][0]
    assert (entry["user"], entry["tokenid"], entry["status"]) == ("felhom@pve", "agent", "OK")
    active = api.data("GET", "/nodes/pve1/tasks", params={"source": "active"})
    assert [(t["upid"], t["status"], t["user"]) for t in active] == [
        (running, "RUNNING", "felhom@pve!agent")]
    assert api.get("/nodes/pve1/tasks", params={"limit": 0}).json() == {"data": [], "total": 1}
    sim.release_tasks()
    sim.wait_task(running, TIMEOUT)


def test_task_log_is_paged_with_total(api: Api) -> None:
    """The log returns {n, t} lines with n = start+1.., and total = all lines."""
    api.sim.inject(Fault("task_fail", task_type="vzstop", message="WARNINGS: 3"))
    upid = api.run_task("POST", "/nodes/pve1/lxc/100/status/stop")["upid"]
    full = api.get(f"/nodes/pve1/tasks/{upid}/log").json()
    assert full["total"] == 4 and full["data"][-1] == {"n": 4, "t": "TASK WARNINGS: 3"}
    page = api.get(f"/nodes/pve1/tasks/{upid}/log", params={"start": 1, "limit": 2}).json()
    assert [x["n"] for x in page["data"]] == [2, 3] and page["total"] == 4


def test_unknown_and_garbage_upids(api: Api) -> None:
    """A garbage UPID is 400 'unable to parse worker upid'; an unknown one 'no such task';
    the log of an unknown task is 200 'unable to open file'."""
    r = api.get("/nodes/pve1/tasks/not-a-upid/status")
    assert r.status_code == 400 and r.json()["errors"] == {"upid": "unable to parse worker upid"}
    unknown = "UPID:pve1:00001234:00005678:65000000:qmstart:101:root@pam:"
    r = api.get(f"/nodes/pve1/tasks/{unknown}/status")
    assert r.status_code == 400 and r.json()["errors"] == {"upid": "no such task"}
    log = api.data("GET", f"/nodes/pve1/tasks/{unknown}/log")
    assert log[0]["t"].startswith("unable to open file")


def test_vzdump_single_guest_task_id_and_backup_lock(api: Api) -> None:
    """vzdump of one guest has the vmid as UPID id, holds 'lock: backup', adds a volume."""
    sim = api.sim
    sim.set_task_duration("vzdump", 60)
    upid = api.data("POST", "/nodes/pve1/vzdump", data={"vmid": "102", "storage": "local"})
    assert upid.split(":")[6] == "102"
    assert sim.wait_lock(102, "backup", TIMEOUT)
    sim.release_tasks()
    assert sim.wait_task(upid, TIMEOUT)["exitstatus"] == "OK"
    vols = api.data("GET", "/nodes/pve1/storage/local/content", params={"content": "backup"})
    assert [v["vmid"] for v in vols] == [102]
    assert sim.guest(102)["lock"] is None


def test_task_fault_only_matches_its_type_and_vmid(sim: PveSimulator) -> None:
    """A task fault for vmid 101 does not affect a task on vmid 100."""
    api = Api(sim)
    sim.inject(Fault("task_fail", vmid=101, message="boom"))
    assert api.run_task("POST", "/nodes/pve1/lxc/100/status/stop")["exitstatus"] == "OK"
    assert api.run_task("POST", "/nodes/pve1/qemu/101/status/start")["exitstatus"] == "boom"
