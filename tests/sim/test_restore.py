"""Restore in the PVE simulator, over real HTTPS: ``POST /nodes/{node}/lxc`` with
``restore=1`` (vzrestore) and ``POST /nodes/{node}/qemu`` with ``archive`` (qmrestore)."""

from __future__ import annotations

import re

from felhom_agent.sim.pve import Fault
from tests.sim.helpers import TIMEOUT, Api
from tests.sim.provision_helpers import BACKUP_ONLY, OPERATOR, running, volid

_MAC = re.compile(r"BC:24:11:[0-9A-F]{2}:[0-9A-F]{2}:[0-9A-F]{2}")


def _ct(api: Api, vmid: int, archive: str, **extra: str) -> dict[str, str]:
    return {"vmid": str(vmid), "ostemplate": archive, "restore": "1",
            "storage": "local-lvm", **extra}


# -- containers ---------------------------------------------------------------------------------

def test_ct_restore_into_a_new_vmid_locks_create_and_brings_the_archived_config() -> None:
    """vzrestore, id = target vmid; the target exists at once with lock ``create``; the config
    is the archive's (description, features kept unchecked, same MAC without ``unique``) with a
    new root disk on the target storage; started and put in the pool when asked."""
    with running() as (sim, api):
        archive = volid(sim, "local", 102, "lxc")
        sim.set_task_duration("vzrestore", 60)
        upid = api.data("POST", "/nodes/pve1/lxc",
                        data=_ct(api, 300, archive, start="1", pool="felhom"))
        assert upid.split(":")[5:7] == ["vzrestore", "300"]
        assert sim.guest(300)["lock"] == "create"
        assert api.data("GET", "/nodes/pve1/lxc/300/status/current")["lock"] == "create"
        sim.release_tasks()
        rec = sim.wait_task(upid, TIMEOUT)
        assert rec["exitstatus"] == "OK", rec["log"]
        assert rec["log"][:2] == [f"recovering backed-up configuration from '{archive}'",
                                  f"restoring '{archive}' now.."]
        cfg = api.data("GET", "/nodes/pve1/lxc/300/config")
        assert cfg["hostname"] == "from-archive" and cfg["cores"] == 3
        assert cfg["description"] == "from the archive\n"
        assert cfg["features"] == "keyctl=1,nesting=1" and cfg["unprivileged"] == 1
        assert cfg["rootfs"] == "local-lvm:vm-300-disk-0,size=6G"
        assert "hwaddr=BC:24:11:AA:BB:CC" in cfg["net0"] and "lock" not in cfg
        assert (sim.guest(300)["status"], sim.guest(300)["pool"]) == ("running", "felhom")
        [res] = [r for r in api.data("GET", "/cluster/resources", params={"type": "vm"})
                 if r["vmid"] == 300]
        assert res["pool"] == "felhom"


def test_ct_restore_over_an_existing_ct_replaces_its_config() -> None:
    """``force`` over a stopped container: the old config and snapshots are gone, the
    archive's config is in, ``unique`` gives net0 a new MAC, explicit params win."""
    with running() as (sim, api):
        api.data("PUT", "/nodes/pve1/lxc/102/config",
                 data={"description": "old", "tags": "old", "cores": "1"})
        api.run_task("POST", "/nodes/pve1/lxc/102/snapshot", data={"snapname": "before"})
        archive = volid(sim, "pbs1", 102, "lxc")
        rec = api.run_task("POST", "/nodes/pve1/lxc",
                           data=_ct(api, 102, archive, force="1", unique="1", memory="4096"))
        assert rec["exitstatus"] == "OK", rec["log"]
        g = sim.guest(102)
        assert g["snapshots"] == {} and "tags" not in g["config"]
        assert g["config"]["description"] == "from the archive"
        assert g["config"]["memory"] == 4096 and g["config"]["cores"] == 3
        assert g["config"]["rootfs"] == "local-lvm:vm-102-disk-1,size=6G"
        mac = _MAC.search(g["config"]["net0"])
        assert mac is not None and mac[0] != "BC:24:11:AA:BB:CC"


def test_ct_restore_refusals_before_anything_runs() -> None:
    """Exists without force (word of the existing type), force on a running CT, protection,
    a lock, the default storage ``local`` (no container directories), an unknown pool,
    ``unique`` without ``restore``, a backup volid without ``restore``: nothing forked."""
    with running() as (sim, api):
        archive = volid(sim, "local", 102, "lxc")
        cases = [
            (_ct(api, 102, archive), 500, "CT 102 already exists on node 'pve1'"),
            (_ct(api, 101, archive, force="1"), 500, "VM 101 already exists on node 'pve1'"),
            (_ct(api, 100, archive, force="1"), 500, "can't overwrite running container"),
            ({**_ct(api, 300, archive), "storage": "local"}, 400,
             "Parameter verification failed."),
            (_ct(api, 300, archive, pool="nope"), 400, "Parameter verification failed."),
            ({"vmid": "300", "ostemplate": archive, "unique": "1"}, 400,
             "Parameter verification failed."),
            ({"vmid": "300", "ostemplate": archive}, 500,
             f"unable to use volume {archive} - content type needs to be 'vztmpl'"),
        ]
        for data, status, reason in cases:
            r = api.post("/nodes/pve1/lxc", data=data)
            assert (r.status_code, r.reason) == (status, reason), data
        r = api.post("/nodes/pve1/lxc", data={**_ct(api, 300, archive), "storage": "local"})
        assert r.json()["errors"] == {
            "storage": "storage 'local' does not support container directories"}
        r = api.post("/nodes/pve1/lxc", data={"vmid": "300", "ostemplate": archive,
                                              "unique": "1"})
        assert r.json()["errors"] == {"restore": "missing property - 'unique' requires this "
                                                 "property"}
        api.data("PUT", "/nodes/pve1/lxc/102/config", data={"protection": "1"})
        r = api.post("/nodes/pve1/lxc", data=_ct(api, 102, archive, force="1"))
        assert r.reason == "unable to restore CT 102 - protection mode enabled"
        api.data("PUT", "/nodes/pve1/lxc/102/config", data={"protection": "0"})
        sim.set_lock(102, "backup")
        r = api.post("/nodes/pve1/lxc", data=_ct(api, 102, archive, force="1"))
        assert r.reason == "unable to restore CT 102 - CT is locked (backup)"
        assert sim.tasks() == [] and not sim.has_guest(300)


def test_ct_restore_of_the_wrong_archive_fails_in_the_task() -> None:
    """A VM backup (dir or PBS) or a missing file: the task fails while recovering the config;
    a new target is removed again, an existing one keeps its config and loses the lock."""
    with running() as (sim, api):
        missing = "local:backup/vzdump-lxc-102-2020_01_01-00_00_00.tar.zst"
        cases = [
            (volid(sim, "local", 101, "qemu"), "ERROR: archive contains no configuration file"),
            (volid(sim, "pbs1", 101, "qemu"), "got unexpected backup format 'pbs-vm'"),
            (missing, f"can't find file '{missing}'"),
        ]
        for archive, why in cases:
            rec = api.run_task("POST", "/nodes/pve1/lxc", data=_ct(api, 300, archive))
            assert rec["exitstatus"] == f"unable to restore CT 300 - {why}"
            assert not sim.has_guest(300)
        before = sim.guest(102)["config"]
        rec = api.run_task("POST", "/nodes/pve1/lxc", data=_ct(api, 102, missing, force="1"))
        assert rec["exitstatus"] == f"unable to restore CT 102 - can't find file '{missing}'"
        assert sim.guest(102)["config"] == before


def test_a_failed_ct_overwrite_loses_the_container() -> None:
    """After the old disks are freed a failure destroys the container (PVE's behaviour); a
    killed task leaves it locked ``create`` with an unknown outcome."""
    with running() as (sim, api):
        archive = volid(sim, "local", 102, "lxc")
        sim.inject(Fault("task_fail", task_type="vzrestore", vmid=102, message="tar: short read",
                         count=1))
        rec = api.run_task("POST", "/nodes/pve1/lxc", data=_ct(api, 102, archive, force="1"))
        assert rec["exitstatus"] == "unable to restore CT 102 - tar: short read"
        assert not sim.has_guest(102)
        sim.inject(Fault("task_crash", task_type="vzrestore", vmid=300, count=1))
        rec = api.run_task("POST", "/nodes/pve1/lxc", data=_ct(api, 300, archive))
        assert rec["exitstatus"] == "unexpected status"
        assert sim.guest(300)["lock"] == "create"


def test_a_restored_template_stays_a_template() -> None:
    """A backup of a template comes back as a template (base volume)."""
    with running() as (sim, api):
        rec = api.run_task("POST", "/nodes/pve1/lxc",
                           data=_ct(api, 301, volid(sim, "local", 9500, "lxc")))
        assert "Convert restored container to template..." in rec["log"]
        cfg = sim.guest(301)["config"]
        assert cfg["template"] == 1 and cfg["rootfs"] == "local-lvm:base-301-disk-0,size=6G"


def test_restore_rights_backup_only_token_may_only_overwrite() -> None:
    """VM.Backup is enough to restore over an existing guest with ``force``; a new vmid needs
    VM.Allocate (bare 403); a backup the token may not read is a 403 naming the privilege."""
    with running() as (sim, api):
        archive = volid(sim, "local", 102, "lxc")
        backup = Api(sim, BACKUP_ONLY)
        r = backup.post("/nodes/pve1/lxc", data=_ct(api, 300, archive))
        assert (r.status_code, r.reason) == (403, "Permission check failed")
        rec = backup.run_task("POST", "/nodes/pve1/lxc", data=_ct(api, 102, archive, force="1"))
        assert rec["exitstatus"] == "OK", rec["log"]
        auditor = Api(sim, "PVEAPIToken=auditor@pve!ro=ro-secret-1")
        r = auditor.post("/nodes/pve1/lxc", data=_ct(api, 102, archive, force="1"))
        assert r.status_code == 403
        op = Api(sim, OPERATOR)
        r = op.post("/nodes/pve1/lxc", data=_ct(api, 300, archive, features="keyctl=1"))
        assert r.reason == ("Permission check failed (changing feature flags for privileged "
                            "container is only allowed for root@pam)")
        r = op.post("/nodes/pve1/lxc",
                    data=_ct(api, 300, archive, features="keyctl=1", unprivileged="1"))
        assert r.reason == ("Permission check failed (changing feature flags (except nesting) "
                            "is only allowed for root@pam)")


# -- VMs ----------------------------------------------------------------------------------------

def test_vm_restore_into_a_new_vmid() -> None:
    """qmrestore, id = target; disks where the backup had them (local-lvm) with new volume
    ids, vmgenid always new, MAC and smbios1 kept without ``unique``, overrides win."""
    with running() as (sim, api):
        archive = volid(sim, "local", 101, "qemu")
        rec = api.run_task("POST", "/nodes/pve1/qemu",
                           data={"vmid": "310", "archive": archive, "name": "db2"})
        assert (rec["type"], rec["id"], rec["exitstatus"]) == ("qmrestore", "310", "OK")
        assert "new volume ID is 'local-lvm:vm-310-disk-0'" in rec["log"]
        cfg = api.data("GET", "/nodes/pve1/qemu/310/config")
        assert cfg["scsi0"] == "local-lvm:vm-310-disk-0,iothread=1,size=32G"
        assert cfg["name"] == "db2" and cfg["memory"] == "8192" and cfg["cores"] == 4
        assert cfg["net0"] == "virtio=BC:24:11:00:0A:01,bridge=vmbr0"
        assert cfg["smbios1"] == "uuid=11111111-2222-4333-8444-555555555555"
        assert cfg["vmgenid"] != "66666666-7777-4888-9999-000000000000"
        assert cfg["description"] == "db from the archive"


def test_vm_restore_over_an_existing_vm_with_unique_and_start() -> None:
    """``force`` over the stopped VM 101: snapshots dropped, config from the archive, new MAC
    and smbios1 uuid with ``unique``, started with ``start``."""
    with running() as (sim, api):
        archive = volid(sim, "pbs1", 101, "qemu")
        rec = api.run_task("POST", "/nodes/pve1/qemu", data={
            "vmid": "101", "archive": archive, "force": "1", "unique": "1", "start": "1"})
        assert rec["exitstatus"] == "OK", rec["log"]
        g = sim.guest(101)
        assert g["snapshots"] == {} and g["status"] == "running"
        assert g["config"]["name"] == "db-archived"
        assert "BC:24:11:00:0A:01" not in g["config"]["net0"]
        assert g["config"]["smbios1"] != "uuid=11111111-2222-4333-8444-555555555555"


def test_vm_restore_refusals() -> None:
    """Existing vmid without force, drive keys beside ``archive``, a missing file (sync),
    ``force`` without ``archive``; a running or protected VM fails in the task, which drops
    the ``create`` lock and leaves the VM alone."""
    with running() as (sim, api):
        archive = volid(sim, "local", 101, "qemu")
        r = api.post("/nodes/pve1/qemu", data={"vmid": "101", "archive": archive})
        assert r.reason == "unable to restore VM 101 - VM 101 already exists on node 'pve1'"
        r = api.post("/nodes/pve1/qemu", data={"vmid": "100", "archive": archive, "force": "1"})
        assert r.reason == "unable to restore VM 100 - CT 100 already exists on node 'pve1'"
        r = api.post("/nodes/pve1/qemu",
                     data={"vmid": "310", "archive": archive, "scsi0": "local-lvm:8"})
        assert r.json()["errors"] == {"scsi0": "option conflicts with option 'archive'"}
        missing = "local:backup/vzdump-qemu-101-2020_01_01-00_00_00.vma.zst"
        r = api.post("/nodes/pve1/qemu", data={"vmid": "310", "archive": missing})
        assert (r.status_code, r.reason) == (500, f"can't find file '{missing}'")
        r = api.post("/nodes/pve1/qemu", data={"vmid": "310", "force": "1"})
        assert r.json()["errors"] == {"archive": "missing property - 'force' requires this "
                                                 "property"}
        api.run_task("POST", "/nodes/pve1/qemu/101/status/start")
        rec = api.run_task("POST", "/nodes/pve1/qemu",
                           data={"vmid": "101", "archive": archive, "force": "1"})
        assert rec["exitstatus"] == "unable to restore VM 101 - vm is running"
        assert sim.guest(101)["lock"] is None and sim.guest(101)["snapshots"]
        api.run_task("POST", "/nodes/pve1/qemu/101/status/stop")
        api.data("PUT", "/nodes/pve1/qemu/101/config", data={"protection": "1"})
        rec = api.run_task("POST", "/nodes/pve1/qemu",
                           data={"vmid": "101", "archive": archive, "force": "1"})
        assert rec["exitstatus"] == "unable to restore VM 101 - - protection mode enabled"


def test_vm_restore_of_a_container_archive_fails_in_the_task() -> None:
    """A container backup given to the VM restore: the dir tar is ``not a QemuServer vzdump
    backup`` (or options cannot be passed along), the PBS one an unexpected format; the
    target is left as an empty, unlocked VM (PVE does not clean up)."""
    with running() as (sim, api):
        tar = volid(sim, "local", 102, "lxc")
        rec = api.run_task("POST", "/nodes/pve1/qemu", data={"vmid": "310", "archive": tar})
        path = "/var/lib/vz/dump/" + tar.split("/", 1)[1]
        assert rec["exitstatus"] == (f"ERROR: file '{path}' does not look like a QemuServer "
                                     "vzdump backup")
        assert sim.guest(310)["config"] == {}
        rec = api.run_task("POST", "/nodes/pve1/qemu",
                           data={"vmid": "311", "archive": tar, "name": "x"})
        assert rec["exitstatus"] == ("cannot pass along options (name) when restoring from "
                                     "tar archive")
        rec = api.run_task("POST", "/nodes/pve1/qemu",
                           data={"vmid": "312", "archive": volid(sim, "pbs1", 102, "lxc")})
        assert rec["exitstatus"] == "got unexpected backup format 'pbs-ct'"


def test_a_failed_vm_restore_leaves_the_vm_unlocked_and_not_cleaned_up() -> None:
    """A failure during the data restore: the lock goes, the VM stays (old config), the log
    says the state is not cleaned up."""
    with running() as (sim, api):
        archive = volid(sim, "local", 101, "qemu")
        sim.inject(Fault("task_fail", task_type="qmrestore", message="vma: read error",
                         count=1))
        rec = api.run_task("POST", "/nodes/pve1/qemu",
                           data={"vmid": "101", "archive": archive, "force": "1"})
        assert rec["exitstatus"] == "vma: read error"
        assert any("VM 101 state is NOT cleaned up" in line for line in rec["log"])
        g = sim.guest(101)
        assert g["lock"] is None and g["config"]["name"] == "db" and g["snapshots"] == {}
