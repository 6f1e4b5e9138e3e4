"""Snapshots, rollback, snapshot delete, destroy and LXC create in the simulator."""

from __future__ import annotations

from tests.sim.helpers import Api


def test_snapshot_list_has_current_pseudo_entry(api: Api) -> None:
    """The snapshot list ends with {name: current, description: 'You are here!', digest}."""
    snaps = api.data("GET", "/nodes/pve1/qemu/101/snapshot")
    current = snaps[-1]
    assert current["name"] == "current" and current["description"] == "You are here!"
    assert current["running"] == 0 and current["parent"] == "initial"
    assert len(current["digest"]) == 40
    assert snaps[0]["name"] == "initial" and snaps[0]["vmstate"] == 0


def test_reserved_and_duplicate_snapshot_names(api: Api) -> None:
    """'current' is a sync 500 reserved name; a duplicate name fails in the task."""
    r = api.post("/nodes/pve1/qemu/101/snapshot", data={"snapname": "current"})
    assert (r.status_code, r.reason) == (500,
                                         "unable to use snapshot name 'current' (reserved name)")
    rec = api.run_task("POST", "/nodes/pve1/qemu/101/snapshot", data={"snapname": "initial"})
    assert rec["exitstatus"] == "snapshot name 'initial' already used"


def test_rollback_restores_config_keeps_description_and_stops_guest(api: Api) -> None:
    """Rollback of a running guest stops it, restores the snapshot config, keeps the current
    description; with start=1 it runs again."""
    api.run_task("POST", "/nodes/pve1/lxc/100/snapshot", data={"snapname": "before"})
    api.data("PUT", "/nodes/pve1/lxc/100/config", data={"memory": "4096", "description": "new"})
    rec = api.run_task("POST", "/nodes/pve1/lxc/100/snapshot/before/rollback")
    assert rec["type"] == "vzrollback" and rec["exitstatus"] == "OK"
    g = api.sim.guest(100)
    assert g["status"] == "stopped" and g["config"]["memory"] == 1024
    assert g["config"]["description"] == "new" and g["lock"] is None
    api.run_task("POST", "/nodes/pve1/lxc/100/snapshot/before/rollback", data={"start": "1"})
    assert api.sim.guest(100)["status"] == "running"


def test_rollback_and_delete_of_missing_snapshot_fail_in_task(api: Api) -> None:
    """Rollback/delete of an unknown snapshot: UPID, task error 'snapshot ... does not exist'."""
    rec = api.run_task("POST", "/nodes/pve1/qemu/101/snapshot/nope/rollback")
    assert rec["exitstatus"] == "snapshot 'nope' does not exist"
    rec = api.run_task("DELETE", "/nodes/pve1/qemu/101/snapshot/nope")
    assert rec["exitstatus"] == "snapshot 'nope' does not exist"


def test_delete_snapshot_reparents_current(api: Api) -> None:
    """Deleting the current parent snapshot removes it and re-parents 'current'."""
    api.run_task("POST", "/nodes/pve1/qemu/101/snapshot", data={"snapname": "second"})
    assert api.run_task("DELETE", "/nodes/pve1/qemu/101/snapshot/second")["exitstatus"] == "OK"
    snaps = {s["name"]: s for s in api.data("GET", "/nodes/pve1/qemu/101/snapshot")}
    assert set(snaps) == {"initial", "current"} and snaps["current"]["parent"] == "initial"


def test_destroy_sync_checks_and_task(api: Api) -> None:
    """Destroy refuses a running VM / protected guest synchronously, else removes it."""
    api.run_task("POST", "/nodes/pve1/qemu/101/status/start")
    r = api.delete("/nodes/pve1/qemu/101")
    assert (r.status_code, r.reason) == (500, "VM 101 is running - destroy failed")
    r = api.delete("/nodes/pve1/lxc/100")
    assert r.reason == "unable to destroy CT 100 - container is running"
    api.data("PUT", "/nodes/pve1/lxc/102/config", data={"protection": "1"})
    r = api.delete("/nodes/pve1/lxc/102")
    assert r.reason == "can't remove CT 102 - protection mode enabled"
    rec = api.run_task("DELETE", "/nodes/pve1/lxc/100", params={"force": "1"})
    assert rec["type"] == "vzdestroy" and rec["exitstatus"] == "OK"
    assert not api.sim.has_guest(100)


def test_lxc_create_runs_with_lock_create_and_defaults_unprivileged(api: Api) -> None:
    """LXC create forks vzcreate, shows lock 'create' while running, ends unprivileged=1."""
    sim = api.sim
    sim.set_task_duration("vzcreate", 60)
    upid = api.data("POST", "/nodes/pve1/lxc", data={
        "vmid": "110", "ostemplate": "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst",
        "hostname": "new-ct", "rootfs": "local-lvm:8", "description": "made by test"})
    assert ":vzcreate:110:" in upid
    assert sim.guest(110)["lock"] == "create"
    sim.release_tasks()
    assert sim.wait_task(upid)["exitstatus"] == "OK"
    cfg = api.data("GET", "/nodes/pve1/lxc/110/config")
    assert cfg["unprivileged"] == 1 and cfg["description"] == "made by test\n"
    assert "lock" not in cfg
    r = api.post("/nodes/pve1/lxc", data={"vmid": "101", "ostemplate": "local:vztmpl/x.tar"})
    assert (r.status_code, r.reason) == (500, "VM 101 already exists on node 'pve1'")


def test_lxc_create_with_keyctl_is_root_only(api: Api) -> None:
    """features keyctl=1 at create time is refused for any token (root@pam only)."""
    r = api.post("/nodes/pve1/lxc", data={"vmid": "111", "ostemplate": "local:vztmpl/x.tar",
                                           "features": "keyctl=1,nesting=1"})
    assert r.status_code == 403 and "only allowed for root@pam" in r.reason


def test_qemu_create_adds_generated_keys_and_mac(api: Api) -> None:
    """qemu create forks qmcreate; the config gains smbios1, vmgenid, meta and a MAC on net0;
    an existing vmid is a sync 500 naming it."""
    rec = api.run_task("POST", "/nodes/pve1/qemu", data={
        "vmid": "120", "name": "vm120", "memory": "1024", "net0": "virtio,bridge=vmbr0",
        "scsi0": "local-lvm:16", "start": "1"})
    assert rec["type"] == "qmcreate" and rec["exitstatus"] == "OK"
    cfg = api.data("GET", "/nodes/pve1/qemu/120/config")
    assert cfg["net0"].startswith("virtio=BC:24:11:") and cfg["net0"].endswith(",bridge=vmbr0")
    assert {"smbios1", "vmgenid", "meta", "boot"} <= set(cfg) and cfg["memory"] == "1024"
    assert cfg["scsi0"] == "local-lvm:vm-120-disk-0,size=16G"
    assert api.sim.guest(120)["status"] == "running"
    r = api.post("/nodes/pve1/qemu", data={"vmid": "100"})
    assert r.reason == "unable to create VM 100 - CT 100 already exists on node 'pve1'"


SNAP_ONLY = "PVEAPIToken=snap@pve!only=snap-secret-1"


def test_qemu_rollback_with_start_needs_power_privilege(api: Api) -> None:
    """qemu rollback start=1 also needs VM.PowerMgmt (sync 403); without start it runs."""
    snap = Api(api.sim, auth=SNAP_ONLY)
    r = snap.post("/nodes/pve1/qemu/101/snapshot/initial/rollback", data={"start": "1"})
    assert (r.status_code, r.reason) == (403, "Permission check failed (/vms/101, VM.PowerMgmt)")
    rec = snap.run_task("POST", "/nodes/pve1/qemu/101/snapshot/initial/rollback")
    assert rec["exitstatus"] == "OK" and rec["user"] == "snap@pve!only"


def test_vzdump_checks_vm_backup_inside_the_task(api: Api) -> None:
    """Without VM.Backup the vzdump call still returns a UPID; the task dies on the first
    guest's permission check before backing anything up (a vmid list is checked, not
    skipped)."""
    rec = Api(api.sim, auth=SNAP_ONLY).run_task("POST", "/nodes/pve1/vzdump",
                                                data={"vmid": "100,102", "storage": "local"})
    assert rec["id"] == ""
    assert rec["exitstatus"] == "Permission check failed (/vms/100, VM.Backup)"
    assert not any("Starting Backup" in line for line in rec["log"])


def test_template_and_ha_managed_guests() -> None:
    """A template refuses to start (in the task); an HA-managed guest starts via 'hastart'
    and status/current reports ha.managed = 1."""
    from felhom_agent.sim.pve import PveSimulator
    from tests.sim.helpers import make_scenario

    guests = [{"vmid": 200, "type": "qemu", "template": True},
              {"vmid": 201, "type": "qemu", "ha_managed": True}]
    with PveSimulator(make_scenario(guests=guests)) as sim:
        api = Api(sim)
        rec = api.run_task("POST", "/nodes/pve1/qemu/200/status/start")
        assert rec["exitstatus"] == "you can't start a vm if it's a template"
        assert api.data("GET", "/nodes/pve1/qemu/200/status/current")["template"] == 1
        rec = api.run_task("POST", "/nodes/pve1/qemu/201/status/start")
        assert rec["type"] == "hastart" and rec["exitstatus"] == "OK"
        assert api.data("GET", "/nodes/pve1/qemu/201/status/current")["ha"]["managed"] == 1
