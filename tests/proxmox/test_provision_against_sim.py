"""The client's restore, clone, template and vmid calls end to end against the PVE simulator
(real HTTPS, real pin): dispatches, typed refusals and the failure classification."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from felhom_agent.proxmox import (
    FailureKind,
    GuestExists,
    GuestProtected,
    GuestRunning,
    GuestType,
    Locked,
    ParameterError,
    PermissionDenied,
    ProxmoxClient,
    ServerError,
    TaskFailed,
    TaskOutcome,
    WrongGuestType,
    archive_guest_type,
    failure_kind,
)
from felhom_agent.secret import Secret
from felhom_agent.sim.pve import Fault, PveSimulator
from tests.sim.provision_helpers import provision_scenario, volid
from tests.support.pve import sim_client


@pytest.fixture
def sim() -> Iterator[PveSimulator]:
    with PveSimulator(provision_scenario()) as s:
        yield s
        assert s.internal_errors == []


@pytest.fixture
def client(sim: PveSimulator) -> Iterator[ProxmoxClient]:
    with sim_client(sim) as c:
        yield c


def test_restore_a_container_into_a_new_vmid(client: ProxmoxClient, sim: PveSimulator) -> None:
    """A vzrestore Dispatch named after the target; once OK the guest holds the archived
    config, no lock, and runs when asked; a listed BackupVolume works as the archive."""
    [backup] = [b for b in client.backups("local", vmid=102) if b.subtype is GuestType.LXC]
    dispatch = client.restore(300, GuestType.LXC, backup, storage="local-lvm", start=True,
                              unique=True, pool="felhom")
    assert dispatch.upid is not None and (dispatch.upid.type, dispatch.upid.vmid) == (
        "vzrestore", 300)
    assert client.wait(dispatch).outcome is TaskOutcome.OK
    status = client.guest_status(300, GuestType.LXC)
    assert (status.status, status.lock) == ("running", None)
    cfg = client.guest_config(300, GuestType.LXC).values
    assert cfg["hostname"] == "from-archive" and "BC:24:11:AA:BB:CC" not in cfg["net0"]
    assert client.extract_config(backup.volid).startswith("#from the archive\n")


def test_restore_a_vm_over_an_existing_one(client: ProxmoxClient, sim: PveSimulator) -> None:
    """``force`` over the stopped VM 101: the archived config replaces the old one."""
    dispatch = client.restore(101, "qemu", volid(sim, "pbs1", 101, "qemu"), force=True)
    assert dispatch.upid is not None and dispatch.upid.type == "qmrestore"
    client.wait(dispatch)
    assert client.guest_config(101, GuestType.QEMU).values["name"] == "db-archived"
    assert client.snapshots(101, GuestType.QEMU) == ()


def test_restore_refusals_are_typed(client: ProxmoxClient, sim: PveSimulator) -> None:
    """Exists, running, protected, locked, wrong type: each its own exception and kind; the
    wrong type is refused before anything is sent."""
    ct = volid(sim, "local", 102, "lxc")
    with pytest.raises(GuestExists) as exists:
        client.restore(102, GuestType.LXC, ct, storage="local-lvm")
    assert (exists.value.vmid, exists.value.kind) == (102, "CT")
    with pytest.raises(GuestExists) as other:
        client.restore(101, GuestType.LXC, ct, storage="local-lvm", force=True)
    assert other.value.kind == "VM"
    with pytest.raises(GuestRunning) as running:
        client.restore(100, GuestType.LXC, ct, storage="local-lvm", force=True)
    client.set_guest_config(102, GuestType.LXC, {"protection": 1})
    with pytest.raises(GuestProtected) as protected:
        client.restore(102, GuestType.LXC, ct, storage="local-lvm", force=True)
    client.set_guest_config(102, GuestType.LXC, {"protection": 0})
    sim.set_lock(102, "backup")
    with pytest.raises(Locked) as locked:
        client.restore(102, GuestType.LXC, ct, storage="local-lvm", force=True)
    assert locked.value.lock == "backup"
    seen = sim.requests_seen
    with pytest.raises(WrongGuestType) as wrong:
        client.restore(300, GuestType.QEMU, ct)
    assert sim.requests_seen == seen and wrong.value.archive_type == "lxc"
    kinds = [failure_kind(e.value) for e in (exists, running, protected, locked, wrong)]
    assert kinds == [FailureKind.EXISTS, FailureKind.RUNNING, FailureKind.PROTECTED,
                     FailureKind.LOCKED, FailureKind.WRONG_TYPE]
    assert sim.tasks() == []


def test_task_failures_are_classified(client: ProxmoxClient, sim: PveSimulator) -> None:
    """In-task failures: a running VM (``vm is running``), the wrong archive type (the
    client could not tell: a renamed file), a missing archive."""
    client.wait(client.start(101, GuestType.QEMU))
    with pytest.raises(TaskFailed) as err:
        client.wait(client.restore(101, GuestType.QEMU, volid(sim, "local", 101, "qemu"),
                                   force=True))
    assert failure_kind(err.value) is FailureKind.RUNNING
    missing = "local:backup/vzdump-lxc-102-2020_01_01-00_00_00.tar.zst"
    with pytest.raises(TaskFailed) as gone:
        client.wait(client.restore(300, GuestType.LXC, missing, storage="local-lvm"))
    assert failure_kind(gone.value) is FailureKind.ARCHIVE_MISSING
    assert failure_kind("unable to restore CT 300 - ERROR: archive contains no configuration "
                        "file") is FailureKind.WRONG_TYPE
    assert failure_kind("clone failed: copy failed") is FailureKind.OTHER
    assert archive_guest_type("pbs1:backup/vm/101/2026-01-01T00:00:00Z") is GuestType.QEMU
    assert archive_guest_type("local:backup/renamed.tar.zst") is None


def test_clone_dispatch_names_the_source_and_refusals_are_typed(
        client: ProxmoxClient, sim: PveSimulator) -> None:
    """A clone's UPID carries the source vmid; while it runs the container template is locked
    ``disk`` (a second clone: Locked); a taken newid is GuestExists; storage with a linked
    clone is refused before sending."""
    sim.set_task_duration("vzclone", 60)
    dispatch = client.clone(9000, GuestType.LXC, 201, name="c201", full=True,
                            storage="local-lvm", pool="felhom")
    assert dispatch.upid is not None and (dispatch.upid.type, dispatch.upid.vmid) == (
        "vzclone", 9000)
    with pytest.raises(Locked) as locked:
        client.clone(9000, GuestType.LXC, 202)
    assert locked.value.lock == "disk" and failure_kind(locked.value) is FailureKind.LOCKED
    sim.release_tasks()
    client.wait(dispatch)
    assert client.guest_status(201, GuestType.LXC).lock is None
    with pytest.raises(GuestExists):
        client.clone(9001, GuestType.QEMU, 100)
    with pytest.raises(ParameterError):
        client.clone(9001, GuestType.QEMU, 211, full=False, storage="local-lvm")
    vm = client.clone(9001, GuestType.QEMU, 211, name="vm211")
    assert vm.upid is not None and vm.upid.vmid == 9001
    client.wait(vm)
    assert client.guest_config(211, GuestType.QEMU).values["name"] == "vm211"
    cloner = sim_client(sim, token_id="cloner@pve!tk", token_secret=Secret("cloner-secret-1"))
    with cloner, pytest.raises(PermissionDenied):
        cloner.clone(9000, GuestType.LXC, 203)


def test_a_failed_clone_is_a_task_failure(client: ProxmoxClient, sim: PveSimulator) -> None:
    """The clone task fails: TaskFailed ``clone failed: ...``; the target is gone."""
    sim.inject(Fault("task_fail", task_type="qmclone", vmid=9001, message="disk copy failed"))
    with pytest.raises(TaskFailed) as err:
        client.wait(client.clone(9001, GuestType.QEMU, 211))
    assert err.value.exitstatus == "clone failed: disk copy failed"
    assert sim.has_guest(211) is False


def test_convert_to_template_accepts_a_upid_and_null(client: ProxmoxClient,
                                                     sim: PveSimulator) -> None:
    """qemu: the qmtemplate UPID; lxc: PVE answers null, the client finds the vztemplate
    task; refusals typed (running: GuestRunning, a template: ServerError)."""
    client.wait(client.delete_snapshot(101, GuestType.QEMU, "initial"))
    vm = client.convert_to_template(101, GuestType.QEMU)
    assert vm.upid is not None and vm.upid.type == "qmtemplate"
    client.wait(vm)
    sim.set_task_duration("vztemplate", 60)
    ct = client.convert_to_template(102, "lxc")
    assert ct.upid is not None and (ct.upid.type, ct.upid.vmid) == ("vztemplate", 102)
    assert not client.guest_status(102, GuestType.LXC).template
    sim.release_tasks()
    client.wait(ct)
    assert client.guest_status(102, GuestType.LXC).template
    with pytest.raises(GuestRunning):
        client.convert_to_template(100, GuestType.LXC)
    with pytest.raises(ServerError, match="you can't convert a template to a template"):
        client.convert_to_template(9001, GuestType.QEMU)


def test_next_id_and_vmid_free(client: ProxmoxClient) -> None:
    """The lowest free id as an int (PVE sends a string); a taken vmid is not free."""
    assert client.next_id() == 103
    assert client.next_id(150) == 150
    assert (client.vmid_free(101), client.vmid_free(9000), client.vmid_free(150)) == (
        False, False, True)
    with pytest.raises(ParameterError):
        client.next_id(101)
    with pytest.raises(ParameterError):
        client.next_id(5)
