"""Clone, template conversion, ``/cluster/nextid`` and ``pct create``-style creation in the PVE
simulator, over real HTTPS."""

from __future__ import annotations

import pytest

from felhom_agent.sim.pve import Fault, PveScenario, ScenarioError
from tests.sim.helpers import TIMEOUT, Api, scenario_dict
from tests.sim.provision_helpers import CLONER, OPERATOR, provision_scenario, running

# -- container clones ---------------------------------------------------------------------------


def test_ct_clone_locks_the_source_disk_for_the_whole_clone() -> None:
    """vzclone carries the SOURCE vmid; the source is locked ``disk`` and the new CT
    ``create`` at once; a second clone of the template and a backup of it fail ``CT is
    locked (disk)``; the result is a linked clone keeping ``features`` unchecked, with a new
    MAC, the given hostname and no template flag; the source is unlocked at the end."""
    with running() as (sim, api):
        sim.set_task_duration("vzclone", 60)
        upid = api.data("POST", "/nodes/pve1/lxc/9000/clone",
                        data={"newid": "201", "hostname": "c201", "pool": "felhom"})
        assert upid.split(":")[5:7] == ["vzclone", "9000"]
        assert (sim.guest(9000)["lock"], sim.guest(201)["lock"]) == ("disk", "create")
        r = api.post("/nodes/pve1/lxc/9000/clone", data={"newid": "202"})
        assert (r.status_code, r.reason) == (500, "CT is locked (disk)")
        assert not sim.has_guest(202)
        backup = api.run_task("POST", "/nodes/pve1/vzdump",
                              data={"vmid": "9000", "storage": "local"})
        assert "ERROR: Backup of VM 9000 failed - CT is locked (disk)" in backup["log"]
        sim.release_tasks()
        rec = sim.wait_task(upid, TIMEOUT)
        assert rec["exitstatus"] == "OK", rec["log"]
        assert rec["log"][:2] == ["creating a clone of container 9000 with ID 201",
                                  "create linked clone of mount point rootfs "
                                  "(local-lvm:base-9000-disk-0)"]
        cfg = api.data("GET", "/nodes/pve1/lxc/201/config")
        assert cfg["hostname"] == "c201" and cfg["features"] == "keyctl=1,nesting=1"
        assert cfg["rootfs"] == "local-lvm:base-9000-disk-0/vm-201-disk-0,size=8G"
        assert "BC:24:11:90:00:00" not in cfg["net0"] and "template" not in cfg
        assert sim.guest(9000)["lock"] is None and sim.guest(201)["lock"] is None
        [res] = [r for r in api.data("GET", "/cluster/resources", params={"type": "vm"})
                 if r["vmid"] == 201]
        assert res["pool"] == "felhom"
        tasks = api.data("GET", "/nodes/pve1/tasks", params={"vmid": "9000",
                                                              "typefilter": "vzclone"})
        assert [t["upid"] for t in tasks] == [upid]


def test_ct_clone_refusals_unlock_the_source() -> None:
    """newid taken, storage for a linked clone, a linked clone of a non-template, a full clone
    of a running CT without a snapshot: 500 before the fork, the source unlocked again."""
    with running() as (sim, api):
        cases = [
            ("9000", {"newid": "100"}, "CT 100 already exists on node 'pve1'"),
            ("9000", {"newid": "201", "storage": "local-lvm"},
             "parameter 'storage' not allowed for linked clones"),
            ("102", {"newid": "201", "full": "0"},
             "Linked clone feature for 'local-lvm:vm-102-disk-0' is not available"),
            ("100", {"newid": "201"},
             "Full clone of a running container is only possible from a snapshot"),
            ("9000", {"newid": "201", "pool": "nope"}, "Parameter verification failed."),
        ]
        for src, data, reason in cases:
            r = api.post(f"/nodes/pve1/lxc/{src}/clone", data=data)
            assert r.reason == reason, (src, data)
            assert sim.guest(int(src))["lock"] is None and not sim.has_guest(201)
        rec = api.run_task("POST", "/nodes/pve1/lxc/9000/clone",
                           data={"newid": "201", "full": "1", "storage": "local-lvm"})
        assert "create full clone of mountpoint rootfs (local-lvm:base-9000-disk-0)" in rec["log"]
        assert sim.guest(201)["config"]["rootfs"] == "local-lvm:vm-201-disk-0,size=8G"


def test_a_failed_clone_removes_the_new_guest_and_a_killed_one_leaves_it_locked() -> None:
    """task_fail: ``clone failed: <why>``, no new guest, source unlocked; task_crash: the
    partial guest stays locked (``create``; the CT source keeps ``disk``)."""
    with running() as (sim, api):
        sim.inject(Fault("task_fail", task_type="vzclone", vmid=9000, message="copy failed",
                         count=1))
        rec = api.run_task("POST", "/nodes/pve1/lxc/9000/clone", data={"newid": "201"})
        assert rec["exitstatus"] == "clone failed: copy failed"
        assert not sim.has_guest(201) and sim.guest(9000)["lock"] is None
        sim.inject(Fault("task_crash", task_type="vzclone", vmid=9000, count=1))
        rec = api.run_task("POST", "/nodes/pve1/lxc/9000/clone", data={"newid": "201"})
        assert rec["exitstatus"] == "unexpected status"
        assert (sim.guest(201)["lock"], sim.guest(9000)["lock"]) == ("create", "disk")
        sim.inject(Fault("task_crash", task_type="qmclone", vmid=9001, count=1))
        rec = api.run_task("POST", "/nodes/pve1/qemu/9001/clone", data={"newid": "211"})
        assert rec["exitstatus"] == "unexpected status"
        assert sim.guest(211)["config"] == {"lock": "clone"} and sim.guest(9001)["lock"] is None


# -- VM clones ----------------------------------------------------------------------------------

def test_clones_of_a_stopped_vm_template_run_in_parallel() -> None:
    """Two qmclone tasks of a stopped template run at the same time (shared flock, no config
    lock on the source); each new VM is locked ``clone`` until done; an exclusive writer on
    the source (a config change) cannot get the flock meanwhile."""
    with running() as (sim, api):
        sim.set_task_duration("qmclone", 60)
        first = api.data("POST", "/nodes/pve1/qemu/9001/clone", data={"newid": "211"})
        second = api.data("POST", "/nodes/pve1/qemu/9001/clone",
                          data={"newid": "212", "name": "vm212"})
        assert first.split(":")[5:7] == ["qmclone", "9001"]
        assert sim.wait_lock(211, "clone") and sim.wait_lock(212, "clone")
        assert sim.guest(9001)["lock"] is None
        running_now = api.data("GET", "/nodes/pve1/tasks", params={"source": "active"})
        assert {t["upid"] for t in running_now} == {first, second}
        r = api.put("/nodes/pve1/qemu/9001/config", data={"description": "x"})
        assert r.reason == "can't lock file '/var/lock/qemu-server/lock-9001.conf' - got timeout"
        sim.release_tasks()
        for upid in (first, second):
            assert sim.wait_task(upid, TIMEOUT)["exitstatus"] == "OK"
        a, b = sim.guest(211)["config"], sim.guest(212)["config"]
        assert (a["name"], b["name"]) == ("Copy-of-VM-vm-golden", "vm212")
        assert a["scsi0"] == "local-lvm:base-9001-disk-0/vm-211-disk-0,iothread=1,size=32G"
        assert a["smbios1"] != "uuid=aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee"
        assert a["vmgenid"] != "12345678-1234-4234-8234-123456789abc"
        assert "BC:24:11:90:01:00" not in a["net0"] and "template" not in a


def test_vm_clone_refusals() -> None:
    """newid taken, a locked source, a storage without images: refused before the fork."""
    with running() as (sim, api):
        r = api.post("/nodes/pve1/qemu/9001/clone", data={"newid": "100"})
        assert r.reason == "unable to create VM 100: config file already exists"
        r = api.post("/nodes/pve1/qemu/9001/clone",
                     data={"newid": "211", "full": "1", "storage": "local"})
        assert r.json()["errors"] == {"storage": "storage 'local' does not support vm images"}
        sim.set_lock(9001, "backup")
        r = api.post("/nodes/pve1/qemu/9001/clone", data={"newid": "211"})
        assert r.reason == "VM is locked (backup)"
        assert sim.tasks() == []


def test_clone_permissions_are_checked_like_the_schema_says() -> None:
    """VM.Clone on the source AND (VM.Allocate on the new id OR on the pool, the latter only
    with ``pool``)."""
    with running() as (sim, _api):
        cloner = Api(sim, CLONER)
        r = cloner.post("/nodes/pve1/lxc/9000/clone", data={"newid": "201"})
        assert (r.status_code, r.reason) == (403, "Permission check failed")
        r = cloner.post("/nodes/pve1/lxc/102/clone", data={"newid": "201", "pool": "felhom"})
        assert r.reason == "Permission check failed (/vms/102, VM.Clone)"
        rec = cloner.run_task("POST", "/nodes/pve1/lxc/9000/clone",
                              data={"newid": "201", "pool": "felhom"})
        assert rec["exitstatus"] == "OK" and rec["user"] == "cloner@pve!tk"


# -- template conversion ------------------------------------------------------------------------

def test_template_conversion_qemu_task_lxc_null() -> None:
    """qemu answers a qmtemplate UPID, lxc ``null`` while its vztemplate task runs; the
    volumes become base volumes; refusals: snapshots, running, already a template."""
    with running() as (sim, api):
        r = api.post("/nodes/pve1/qemu/101/template")
        assert r.reason == "unable to create template, because VM contains snapshots"
        api.run_task("DELETE", "/nodes/pve1/qemu/101/snapshot/initial")
        upid = api.data("POST", "/nodes/pve1/qemu/101/template")
        assert upid.split(":")[5:7] == ["qmtemplate", "101"]
        assert sim.wait_task(upid, TIMEOUT)["exitstatus"] == "OK"
        assert sim.guest(101)["config"]["scsi0"].startswith("local-lvm:base-101-disk-0,")
        sim.set_task_duration("vztemplate", 60)
        assert api.data("POST", "/nodes/pve1/lxc/102/template") is None
        [task] = api.data("GET", "/nodes/pve1/tasks",
                          params={"source": "active", "typefilter": "vztemplate"})
        assert task["id"] == "102"
        assert "template" not in sim.guest(102)["config"]
        sim.release_tasks()
        assert sim.wait_task(task["upid"], TIMEOUT)["exitstatus"] == "OK"
        assert api.data("GET", "/nodes/pve1/lxc/102/status/current")["template"] == 1
        for path, reason in (
                ("/nodes/pve1/lxc/102/template", "you can't convert a template to a template"),
                ("/nodes/pve1/lxc/100/template",
                 "you can't convert a CT to template if the CT is running"),
                ("/nodes/pve1/qemu/9001/template",
                 "you can't convert a template to a template")):
            r = api.post(path)
            assert (r.status_code, r.reason) == (500, reason), path


# -- nextid -------------------------------------------------------------------------------------

def test_nextid_is_the_lowest_free_cluster_id_and_reserves_nothing() -> None:
    """The lowest id free on every node (as a JSON string), twice the same; ``vmid=N``
    echoes a free N and is a 400 ``VM N already exists`` for a taken one."""
    scenario = PveScenario.from_dict(scenario_dict(
        other_node_guests=[{"vmid": 103, "node": "pve2"}]))
    with running(scenario) as (_sim, api):
        assert api.data("GET", "/cluster/nextid") == "104"
        assert api.data("GET", "/cluster/nextid") == "104"
        assert api.data("GET", "/cluster/nextid", params={"vmid": "150"}) == "150"
        for taken in ("101", "103"):
            r = api.get("/cluster/nextid", params={"vmid": taken})
            assert r.status_code == 400
            assert r.json()["errors"] == {"vmid": f"VM {taken} already exists"}
    full = PveScenario.from_dict(scenario_dict(next_id={"lower": 100, "upper": 103}))
    with running(full) as (_sim, api):
        r = api.get("/cluster/nextid")
        assert r.reason == "unable to get any free VMID in range [100, 103]"


def test_scenario_pools_and_next_id_are_checked() -> None:
    """``pools`` must be pool ids, a guest's ``pool`` one of them, ``next_id`` a range."""
    for overrides, key in (({"pools": ["bad pool"]}, "pools[0]"),
                           ({"next_id": {"lower": 50}}, "next_id"),
                           ({"guests": [{"vmid": 100, "type": "lxc", "pool": "x"}]},
                            "guests[0].pool")):
        with pytest.raises(ScenarioError) as err:
            PveScenario.from_dict(scenario_dict(**overrides))
        assert err.value.key == key


# -- pct create from a template -------------------------------------------------------------------

def test_create_from_a_vztmpl_allows_nesting_only_for_a_token() -> None:
    """``features=nesting=1`` is a token's right (VM.Allocate); keyctl is root@pam's only;
    the task is vzcreate with the features set."""
    with running(provision_scenario()) as (sim, _api):
        op = Api(sim, OPERATOR)
        tmpl = "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"
        data = {"vmid": "220", "ostemplate": tmpl, "rootfs": "local-lvm:8"}
        r = op.post("/nodes/pve1/lxc", data={**data, "features": "keyctl=1,nesting=1"})
        assert (r.status_code, r.reason) == (
            403, "Permission check failed (changing feature flags (except nesting) is only "
                 "allowed for root@pam)")
        r = op.post("/nodes/pve1/lxc", data={**data, "features": "nesting=1",
                                             "unprivileged": "0"})
        assert r.status_code == 403 and "privileged container" in r.reason
        rec = op.run_task("POST", "/nodes/pve1/lxc", data={**data, "features": "nesting=1"})
        assert (rec["type"], rec["exitstatus"]) == ("vzcreate", "OK")
        assert sim.guest(220)["config"]["features"] == "nesting=1"
