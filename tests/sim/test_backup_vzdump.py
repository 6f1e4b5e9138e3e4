"""vzdump on the simulator over real HTTPS: tasks, locks, log lines, volumes and capacity."""

from __future__ import annotations

import datetime as dt
import re
from zoneinfo import ZoneInfo

from felhom_agent.sim.pve import Fault
from tests.sim.backup_helpers import BACKUP_USER, JAN_2026, backup_scenario, running
from tests.sim.helpers import TIMEOUT, Api
from tests.support.clock import FakeClock

BUDAPEST = ZoneInfo("Europe/Budapest")


def _backups(api: Api, storage: str, **params: str) -> list[dict[str, object]]:
    data: list[dict[str, object]] = api.data(
        "GET", f"/nodes/pve1/storage/{storage}/content", params={"content": "backup", **params})
    return data


def test_local_backup_volid_fields_notes_and_log() -> None:
    """A local backup gets ``vzdump-lxc-<vmid>-<local time>.tar.zst``, its size and ctime,
    the expanded first notes line in the listing (all of it in content/{volume}), and the
    task log PVE writes, ending ``TASK OK``."""
    clock = FakeClock(JAN_2026)
    with running(backup_scenario(cluster_name="home"), clock) as sim:
        api = Api(sim)
        rec = api.run_task("POST", "/nodes/pve1/vzdump", data={
            "vmid": "100", "storage": "local", "compress": "zstd", "mode": "snapshot",
            "notes-template": "felhom op=7 {{guestname}}/{{vmid}}@{{node}}.{{cluster}}\\nmore"})
        assert (rec["type"], rec["id"], rec["exitstatus"]) == ("vzdump", "100", "OK")
        stamp = dt.datetime.fromtimestamp(clock.now, BUDAPEST).strftime("%Y_%m_%d-%H_%M_%S")
        assert stamp == "2026_01_01-01_00_00"
        volid = f"local:backup/vzdump-lxc-100-{stamp}.tar.zst"
        [item] = _backups(api, "local")
        assert item == {"volid": volid, "content": "backup", "format": "tar.zst",
                        "size": 2**30, "ctime": int(clock.now), "subtype": "lxc", "vmid": 100,
                        "notes": "felhom op=7 web/100@pve1.home"}
        detail = api.data("GET", f"/nodes/pve1/storage/local/content/{volid}")
        assert detail["notes"] == "felhom op=7 web/100@pve1.home\nmore"
        log = rec["log"]
        assert log[0].startswith("INFO: starting new backup job: vzdump 100 ")
        for line in ("INFO: Starting Backup of VM 100 (lxc)", "INFO: backup mode: snapshot",
                     f"INFO: creating vzdump archive '/var/lib/vz/dump/{volid.split('/', 1)[1]}'",
                     "INFO: archive file size: 1.00GB", "INFO: adding notes to backup",
                     "INFO: Finished Backup of VM 100 (00:00:00)",
                     "INFO: Backup job finished successfully"):
            assert line in log, line
        assert log[-1] == "TASK OK"
        assert api.data("GET", "/nodes/pve1/vzdump/extractconfig",
                        params={"volume": volid}).startswith("#web frontend\narch: amd64\n")


def test_pbs_backup_uses_utc_group_volid_and_encryption() -> None:
    """A PBS backup is ``pbs1:backup/ct/<vmid>/<UTC>Z`` with format ``pbs-ct``, the key
    fingerprint as ``encrypted`` and no ``verification`` until a verify job ran; a stopped
    guest is backed up in stop mode."""
    clock = FakeClock(JAN_2026)
    with running(clock=clock) as sim:
        api = Api(sim)
        rec = api.run_task("POST", "/nodes/pve1/vzdump", data={"vmid": "102", "storage": "pbs1"})
        assert rec["exitstatus"] == "OK"
        assert "INFO: backup mode: stop" in rec["log"]
        assert ("INFO: creating Proxmox Backup Server archive 'ct/102/2026-01-01T00:00:00Z'"
                in rec["log"])
        [item] = _backups(api, "pbs1")
        assert item["volid"] == "pbs1:backup/ct/102/2026-01-01T00:00:00Z"
        assert item["format"] == "pbs-ct" and "verification" not in item
        assert item["encrypted"] == api.data("GET", "/storage/pbs1")["encryption-key"]
        sim.set_verification(str(item["volid"]), "failed")
        [item] = _backups(api, "pbs1")
        assert item["verification"]["state"] == "failed"  # type: ignore[index]


def test_plain_ok_for_guests_of_other_nodes_and_visible_failure_for_unknown() -> None:
    """A vmid living on another node answers the plain string ``OK`` (no task); a vmid that
    exists nowhere runs and fails visibly with ``unable to find VM``."""
    with running(backup_scenario(other_node_guests=[{"vmid": 300, "node": "pve2"}])) as sim:
        api = Api(sim)
        assert api.data("POST", "/nodes/pve1/vzdump", data={"vmid": "300"}) == "OK"
        assert sim.tasks() == []
        rec = api.run_task("POST", "/nodes/pve1/vzdump", data={"vmid": "999,300"})
        assert rec["exitstatus"] == "job errors"
        assert "INFO: skip external VMs: 300" in rec["log"]
        assert "ERROR: Backup of VM 999 failed - unable to find VM '999'" in rec["log"]
        assert "INFO: Backup job finished with errors" in rec["log"]
        assert rec["log"][-1] == "TASK ERROR: job errors"


def test_one_vzdump_per_node_second_task_waits_for_the_global_lock(api: Api) -> None:
    """While one vzdump runs, a second one is queued: it logs that it waits for the global
    lock, its guest is not locked yet, and it runs when the first ends."""
    sim = api.sim
    sim.set_backup(100, duration_s=60)
    first = api.data("POST", "/nodes/pve1/vzdump", data={"vmid": "100", "storage": "local"})
    assert sim.wait_lock(100, "backup", TIMEOUT)
    second = api.data("POST", "/nodes/pve1/vzdump", data={"vmid": "102", "storage": "local"})
    running = api.data("GET", "/nodes/pve1/tasks",
                       params={"source": "active", "typefilter": "vzdump"})
    assert {t["upid"] for t in running} == {first, second}
    assert all(t["status"] == "RUNNING" for t in running)
    assert sim.wait_log(second, "INFO: trying to get global lock - waiting...", TIMEOUT)
    assert sim.guest(102)["lock"] is None
    log = api.data("GET", f"/nodes/pve1/tasks/{second}/log")
    assert [e["t"] for e in log] == ["INFO: trying to get global lock - waiting..."]
    sim.release_tasks()
    assert sim.wait_task(first, TIMEOUT)["exitstatus"] == "OK"
    rec = sim.wait_task(second, TIMEOUT)
    assert rec["exitstatus"] == "OK" and rec["log"][1] == "INFO: got global lock"
    done = api.data("GET", "/nodes/pve1/tasks", params={"typefilter": "vzdump", "vmid": "102"})
    assert [t["upid"] for t in done] == [second]


def test_locked_guest_fails_others_continue_job_errors(api: Api) -> None:
    """A guest holding another lock fails ``CT is locked (snapshot)``; the other guest of the
    job is backed up; the task id is empty and the task ends ``job errors``."""
    api.sim.set_lock(102, "snapshot")
    rec = api.run_task("POST", "/nodes/pve1/vzdump", data={"vmid": "100,102", "storage": "local"})
    assert rec["id"] == "" and rec["exitstatus"] == "job errors"
    assert "ERROR: Backup of VM 102 failed - CT is locked (snapshot)" in rec["log"]
    assert [b["vmid"] for b in _backups(api, "local")] == [100]
    assert api.sim.guest(102)["lock"] == "snapshot" and api.sim.guest(100)["lock"] is None


def test_full_storage_fails_the_guest_and_creates_nothing(api: Api) -> None:
    """vzdump does not check free space: with avail below the backup size the guest fails
    with a write error, no volume appears and the capacity is unchanged."""
    sim = api.sim
    sim.set_storage("local", avail=2**29)
    before = sim.storage("local")
    rec = api.run_task("POST", "/nodes/pve1/vzdump", data={"vmid": "100", "storage": "local"})
    assert rec["exitstatus"] == "job errors"
    assert any(re.match(r"ERROR: Backup of VM 100 failed - .*No space left on device", line)
               for line in rec["log"])
    assert _backups(api, "local") == [] and sim.storage("local") == before
    sim.set_storage("local", avail=10 * 2**30)
    assert api.run_task("POST", "/nodes/pve1/vzdump",
                        data={"vmid": "100", "storage": "local"})["exitstatus"] == "OK"
    after = sim.storage("local")
    assert (after["avail"], after["used"]) == (9 * 2**30, before["used"] + 2**30)


def test_fault_failing_guest_warning_and_job_warnings(api: Api) -> None:
    """``backup_fail`` fails that guest with the text; ``backup_warn`` keeps the backup but
    without notes (``WARNINGS: 1``); ``task_fail`` ``WARNINGS: 2`` adds job warnings."""
    sim = api.sim
    sim.inject(Fault("backup_fail", vmid=100, message="command 'tar' failed: exit code 2",
                     count=1))
    rec = api.run_task("POST", "/nodes/pve1/vzdump", data={"vmid": "100", "storage": "local"})
    assert rec["exitstatus"] == "job errors"
    assert ("ERROR: Backup of VM 100 failed - command 'tar' failed: exit code 2"
            in rec["log"])
    sim.inject(Fault("backup_warn", vmid=102, message="storage is read-only", count=1))
    rec = api.run_task("POST", "/nodes/pve1/vzdump", data={
        "vmid": "102", "storage": "local", "notes-template": "felhom op=1"})
    assert rec["exitstatus"] == "WARNINGS: 1"
    assert "WARN: unable to add notes - storage is read-only" in rec["log"]
    assert "notes" not in _backups(api, "local")[0]
    sim.inject(Fault("task_fail", task_type="vzdump", message="WARNINGS: 2", count=1))
    rec = api.run_task("POST", "/nodes/pve1/vzdump", data={"vmid": "101", "storage": "pbs1"})
    assert rec["exitstatus"] == "WARNINGS: 2" and rec["log"][-1] == "TASK WARNINGS: 2"


def test_crash_leaves_a_stale_backup_lock(api: Api) -> None:
    """``backup_crash``: the task ends without a TASK line (``unexpected status``), the guest
    keeps ``lock: backup`` while no vzdump task is active, and the next backup of it fails
    ``CT is locked (backup)``."""
    sim = api.sim
    sim.inject(Fault("backup_crash", vmid=100, count=1))
    rec = api.run_task("POST", "/nodes/pve1/vzdump", data={"vmid": "100", "storage": "local"})
    assert rec["exitstatus"] == "unexpected status"
    assert not any(line.startswith("TASK ") for line in rec["log"])
    assert api.data("GET", "/nodes/pve1/lxc/100/status/current")["lock"] == "backup"
    assert api.data("GET", "/nodes/pve1/tasks",
                    params={"source": "active", "typefilter": "vzdump"}) == []
    rec = api.run_task("POST", "/nodes/pve1/vzdump", data={"vmid": "100", "storage": "local"})
    assert "ERROR: Backup of VM 100 failed - CT is locked (backup)" in rec["log"]
    assert _backups(api, "local") == []


def test_slow_guest_interrupted_unlocks_and_creates_nothing(api: Api) -> None:
    """A slow backup keeps its task running; stopping the task ends it ``interrupted by
    signal``, removes the lock and leaves no volume."""
    sim = api.sim
    sim.set_backup(101, duration_s=3600)
    upid = api.data("POST", "/nodes/pve1/vzdump", data={"vmid": "101", "storage": "local"})
    assert sim.wait_lock(101, "backup", TIMEOUT)
    assert api.data("GET", f"/nodes/pve1/tasks/{upid}/status")["status"] == "running"
    api.data("DELETE", f"/nodes/pve1/tasks/{upid}")
    rec = sim.wait_task(upid, TIMEOUT)
    assert rec["exitstatus"] == "interrupted by signal"
    assert "ERROR: Backup job failed - interrupted by signal" in rec["log"]
    assert sim.guest(101)["lock"] is None and _backups(api, "local") == []


def test_storage_problems_end_the_task_before_any_guest(api: Api) -> None:
    """A storage without ``backup`` content or an unreachable one kills the task at once."""
    rec = api.run_task("POST", "/nodes/pve1/vzdump", data={"vmid": "100",
                                                         "storage": "local-lvm"})
    assert rec["exitstatus"] == ("could not get storage information for 'local-lvm': can't use "
                                 "storage 'local-lvm' for backups - wrong content type")
    api.sim.set_storage("pbs1", active=False)
    rec = api.run_task("POST", "/nodes/pve1/vzdump", data={"vmid": "100", "storage": "pbs1"})
    assert rec["exitstatus"].startswith("could not activate storage 'pbs1'")
    assert not any("Starting Backup" in line for line in rec["log"])


def test_protected_backup_and_the_protected_limit() -> None:
    """``protected=1`` marks the volume; with ``max-protected-backups`` 1 reached, the next
    protected backup of that guest fails before it starts."""
    storages = [{"storage": "local", "type": "dir", "content": "backup",
                 "config": {"path": "/var/lib/vz", "max-protected-backups": 1}}]
    clock = FakeClock(JAN_2026)
    with running(backup_scenario(storages=storages), clock) as sim:
        api = Api(sim, auth=BACKUP_USER)
        data = {"vmid": "100", "storage": "local", "protected": "1"}
        assert api.run_task("POST", "/nodes/pve1/vzdump", data=data)["exitstatus"] == "OK"
        assert _backups(api, "local")[0]["protected"] == 1
        clock.advance(60)
        rec = api.run_task("POST", "/nodes/pve1/vzdump", data=data)
        assert ("ERROR: Backup of VM 100 failed - The number of protected backups per guest "
                "is limited to 1 on storage 'local'") in rec["log"]


def test_retention_of_the_storage_prunes_after_the_backup() -> None:
    """With ``prune-backups keep-last=1`` on the storage, each backup prunes the guest's
    older ones and logs it."""
    storages = [{"storage": "local", "type": "dir", "content": "backup",
                 "config": {"path": "/var/lib/vz", "prune-backups": "keep-last=1"}}]
    clock = FakeClock(JAN_2026)
    with running(backup_scenario(storages=storages), clock) as sim:
        api = Api(sim)
        api.run_task("POST", "/nodes/pve1/vzdump", data={"vmid": "100", "storage": "local"})
        first = _backups(api, "local")[0]["volid"]
        clock.advance(3600)
        rec = api.run_task("POST", "/nodes/pve1/vzdump", data={"vmid": "100",
                                                             "storage": "local"})
        assert "INFO: prune older backups with retention: keep-last=1" in rec["log"]
        assert f"INFO: removing backup '{first}'" in rec["log"]
        assert "INFO: pruned 1 backup(s) not covered by keep-retention policy" in rec["log"]
        assert [b["volid"] for b in _backups(api, "local")] != [first]
        assert len(_backups(api, "local")) == 1


def test_remove_0_with_a_finite_retention_refuses_at_the_limit() -> None:
    """With ``remove=0`` vzdump does not prune, so once the guest has as many backups as the
    storage's retention allows, the next one fails before it starts."""
    storages = [{"storage": "local", "type": "dir", "content": "backup",
                 "config": {"path": "/var/lib/vz", "prune-backups": "keep-last=1"},
                 "backups": [{"vmid": 100, "type": "lxc", "ctime": 1_700_000_000}]}]
    with running(backup_scenario(storages=storages)) as sim:
        rec = Api(sim).run_task("POST", "/nodes/pve1/vzdump",
                                data={"vmid": "100", "storage": "local", "remove": "0"})
        assert rec["exitstatus"] == "job errors"
        assert ("ERROR: Backup of VM 100 failed - There is a max backup limit of 1 enforced by "
                "the target storage or the vzdump parameters. Either increase the limit or "
                "delete old backups.") in rec["log"]
        assert not any("Starting Backup" in line for line in rec["log"])


def test_parameters_pve_refuses() -> None:
    """maxfiles/mailto are gone; root-only options, a bad notes template, notes without a
    storage and a retention override without Datastore.Allocate are refused up front."""
    with running() as sim:
        _refusals(Api(sim))


def _refusals(api: Api) -> None:
    cases = [({"vmid": "100", "maxfiles": "3"}, "maxfiles"),
             ({"vmid": "100", "mailto": "root@example.org"}, "mailto"),
             ({"vmid": "100", "dumpdir": "/tmp"}, "dumpdir"),
             ({"vmid": "100", "storage": "local", "notes-template": "{{bogus}}"},
              "notes-template"),
             ({"vmid": "100", "notes-template": "x"}, "storage"),
             ({"all": "1", "vmid": "100"}, "all"),
             ({"storage": "local"}, "vmid")]
    for data, field in cases:
        r = api.post("/nodes/pve1/vzdump", data=data)
        assert r.status_code == 400 and field in r.json()["errors"], (data, r.text)
    r = Api(api.sim, auth=BACKUP_USER).post("/nodes/pve1/vzdump", data={
        "vmid": "100", "storage": "local", "prune-backups": "keep-last=1"})
    assert (r.status_code, r.reason) == (
        403, "Permission check failed (/storage/local, Datastore.Allocate)")
    assert api.sim.tasks() == []
