"""The client's backup calls end to end against the PVE simulator (real HTTPS, real pin)."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest

from felhom_agent.backup.prune import format_prune_backups
from felhom_agent.core.backup_policy import BackupMode, KeepOptions
from felhom_agent.proxmox import (
    GuestType,
    NoGuestSelected,
    ParameterError,
    PermissionDenied,
    ProxmoxClient,
    PruneMarkKind,
    ServerError,
    TaskFailed,
    TaskOutcome,
    TaskUnknown,
)
from felhom_agent.secret import Secret
from felhom_agent.sim.pve import Fault, PveScenario, PveSimulator
from felhom_agent.sim.pve.defaults import default_scenario_dict, default_storages
from tests.support.clock import FakeClock
from tests.support.pve import sim_client

NOW = 1_767_225_600.0  # 2026-01-01T00:00:00Z
SCOPED = ("scoped@pve!agent", "scoped-secret-1")


def _scenario() -> PveScenario:
    data: dict[str, Any] = copy.deepcopy(default_scenario_dict())
    data.update(auth_failure_delay_s=0, task_durations={"default": 0},
                timezone="Europe/Budapest", other_node_guests=[{"vmid": 300, "node": "pve2"}])
    data["tokens"].append({
        "id": SCOPED[0], "secret": SCOPED[1], "privsep": False,
        "user_privileges": {"/vms": ["VM.Audit"], "/vms/100": ["VM.Audit", "VM.Backup"],
                            "/storage": ["Datastore.AllocateSpace", "Datastore.Audit"]}})
    data["storages"] = _storages()
    return PveScenario.from_dict(data)


def _storages() -> list[dict[str, Any]]:
    storages = default_storages()
    storages[0]["backups"] = [
        {"vmid": 100, "type": "lxc", "ctime": int(NOW) - 86_400 * i, "notes": f"old {i}"}
        for i in (1, 2, 3)]
    storages[2]["backups"] = [{"vmid": 101, "type": "qemu", "ctime": int(NOW) - 3600,
                               "size": None, "verification": "ok"}]
    return storages


@pytest.fixture
def sim() -> Iterator[PveSimulator]:
    with PveSimulator(_scenario(), clock=FakeClock(NOW)) as s:
        yield s
        assert s.internal_errors == []


def _client(sim: PveSimulator, token: tuple[str, str] | None = None) -> ProxmoxClient:
    if token is None:
        return sim_client(sim)
    return sim_client(sim, token_id=token[0], token_secret=Secret(token[1]))


@pytest.fixture
def client(sim: PveSimulator) -> Iterator[ProxmoxClient]:
    with _client(sim) as c:
        yield c


def test_vzdump_dispatch_wait_and_find_the_volume(client: ProxmoxClient) -> None:
    """vzdump answers a Dispatch; once the task is OK the new volume is in the listing with
    its notes, local-time volid and subtype."""
    dispatch = client.vzdump(102, "local", mode=BackupMode.SNAPSHOT.value,
                             notes_template="felhom op=abc {{vmid}}")
    assert dispatch.upid is not None and dispatch.upid.type == "vzdump"
    assert dispatch.upid.vmid == 102
    assert client.wait(dispatch).outcome is TaskOutcome.OK
    [vol] = client.backups("local", vmid=102)
    assert vol.volid == "local:backup/vzdump-lxc-102-2026_01_01-01_00_00.tar.zst"
    assert (vol.subtype, vol.vmid, vol.notes, vol.size) == (GuestType.LXC, 102,
                                                            "felhom op=abc 102", 2**30)
    assert vol.verification is None and not vol.pbs
    assert client.extract_config(vol.volid).startswith("arch: amd64\n")
    assert client.vzdump_log(dispatch.upid).guests[102].ok


def test_plain_ok_is_refused_as_no_guest_selected(client: ProxmoxClient,
                                                   sim: PveSimulator) -> None:
    """A guest on another node: PVE answers ``OK``; the client raises, never succeeds."""
    with pytest.raises(NoGuestSelected) as info:
        client.vzdump(300, "local")
    assert info.value.vmids == (300,) and info.value.node == "pve1"
    assert sim.tasks() == []


def test_job_errors_and_the_error_line_from_the_log_tail(client: ProxmoxClient,
                                                         sim: PveSimulator) -> None:
    """A failing guest ends ``job errors``; the guest's ERROR: line is read from the log's
    tail (total first, then start = total - N)."""
    sim.inject(Fault("backup_fail", vmid=100, message="command 'tar' failed: exit code 2"))
    dispatch = client.vzdump(100, "local")
    with pytest.raises(TaskFailed) as info:
        client.wait(dispatch)
    assert info.value.exitstatus == "job errors"
    assert dispatch.upid is not None
    log = client.vzdump_log(dispatch.upid)
    assert log.error_for(100) == "command 'tar' failed: exit code 2"
    tail = client.task_log_tail(dispatch.upid, lines=3)
    assert len(tail.lines) == 3 and tail.lines[-1].t == "TASK ERROR: job errors"
    assert tail.lines[0].n == tail.total - 2


def test_warnings_and_crash_outcomes(client: ProxmoxClient, sim: PveSimulator) -> None:
    """A notes failure is success with warnings; a crashed vzdump is an unknown outcome and
    leaves the guest locked ``backup``."""
    sim.inject(Fault("backup_warn", vmid=102, message="read-only", count=1))
    result = client.wait(client.vzdump(102, "local", notes_template="x"))
    assert (result.outcome, result.warnings) == (TaskOutcome.WARNINGS, 1)
    sim.inject(Fault("backup_crash", vmid=100, count=1))
    with pytest.raises(TaskUnknown):
        client.wait(client.vzdump(100, "local"))
    assert client.guest_status(100, GuestType.LXC).lock == "backup"


def test_storages_status_config_and_unreachable(client: ProxmoxClient,
                                                sim: PveSimulator) -> None:
    """Backup targets, storage.cfg with the PBS fields, and an unreachable storage whose
    sizes are unknown (None), not zero."""
    assert [s.storage for s in client.storages(content="backup")] == ["local", "pbs1"]
    [pbs] = client.storage_config(storage_type="pbs")
    assert pbs.pbs is not None and pbs.pbs.server == "192.0.2.10"
    assert pbs.pbs.datastore == "store1" and pbs.pbs.encrypted
    assert pbs.pbs.fingerprint is not None and len(pbs.pbs.fingerprint) == 95
    local = next(c for c in client.storage_config() if c.storage == "local")
    assert (local.path, local.prune_backups, local.pbs) == ("/var/lib/vz", "keep-all=1", None)
    sim.set_storage("pbs1", active=False)
    status = client.storage_status("pbs1")
    assert not status.reachable and (status.total, status.used, status.avail) == (None,) * 3
    with pytest.raises(ServerError, match="pbs1"):
        client.backups("pbs1")


def test_pbs_volume_size_unknown_and_verification(client: ProxmoxClient) -> None:
    """A PBS snapshot without a size has ``size`` None; verification state and upid parse."""
    [vol] = client.backups("pbs1")
    assert vol.pbs and vol.size is None and vol.subtype is GuestType.QEMU
    assert vol.verification == "ok" and (vol.verification_upid or "").startswith("UPID:")
    assert vol.volid == "pbs1:backup/vm/101/2025-12-31T23:00:00Z"


def test_update_delete_and_protected(client: ProxmoxClient) -> None:
    """Notes and protection round-trip; a protected backup's delete task fails; an
    unprotected one is deleted by an ``imgdel`` task."""
    old = client.backups("local", vmid=100)
    client.update_backup("local", old[0].volid, notes="keep me\nline 2", protected=True)
    details = client.backup_details(old[0].volid)
    assert details.notes == "keep me\nline 2" and details.protected
    assert client.backups("local", vmid=100)[0].notes == "keep me"
    with pytest.raises(TaskFailed, match="cannot remove protected volume"):
        client.wait(client.delete_backup("local", old[0].volid))
    dispatch = client.delete_backup("local", old[1].volid)
    assert dispatch.upid is not None and dispatch.upid.id == "100@local"
    client.wait(dispatch)
    assert [b.volid for b in client.backups("local", vmid=100)] == [old[0].volid, old[2].volid]
    with pytest.raises(ParameterError):
        client.update_backup("local", old[0].volid)


def test_prune_dry_run_then_prune(client: ProxmoxClient) -> None:
    """The dry run marks with the given keep string (as the policy layer builds it); the prune
    removes exactly those."""
    keep = format_prune_backups(KeepOptions(last=1))
    marks = client.prune_dry_run("local", 100, GuestType.LXC, keep)
    assert [m.mark for m in marks].count(PruneMarkKind.REMOVE) == 2
    doomed = {m.volid for m in marks if m.mark is PruneMarkKind.REMOVE}
    dispatch = client.prune("local", 100, "lxc", "keep-last=1")
    assert dispatch.upid is not None and dispatch.upid.type == "prunebackups"
    client.wait(dispatch)
    assert not doomed & {b.volid for b in client.backups("local")}


def test_listing_filter_and_permission_errors(sim: PveSimulator) -> None:
    """A token with VM.Backup on 100 only sees 100's backups (PVE filters silently) and may
    not prune the whole storage."""
    with _client(sim, SCOPED) as scoped:
        assert {b.vmid for b in scoped.backups("local")} == {100}
        assert scoped.backups("pbs1") == ()
        with pytest.raises(PermissionDenied) as info:
            scoped.prune("local", None, None, "keep-last=1")
        assert info.value.privileges == ("Datastore.Allocate",)


def test_client_side_refusals(client: ProxmoxClient, sim: PveSimulator) -> None:
    """Bad mode, compression, multi-line notes, malformed keep strings and a bad vmid never
    reach PVE."""
    seen = sim.requests_seen
    bad_keeps = ("keep-every=1", "last=1", "keep-last=-1", "keep-last=x", "keep-last=1,",
                 "", "keep-last=1,keep-last=2", "keep-all=1,keep-last=2", "keep-last=1 ",
                 "keep-daily=1;keep-last=2")
    for keep in bad_keeps:
        with pytest.raises(ParameterError, match="invalid prune-backups"):
            client.prune_dry_run("local", 100, "lxc", keep)
        with pytest.raises(ParameterError, match="invalid prune-backups"):
            client.prune("local", 100, "lxc", keep)
    with pytest.raises(ParameterError, match="must be snapshot, suspend or stop"):
        client.vzdump(100, "local", mode="SNAPSHOT")
    for call in (lambda: client.vzdump(100, "local", mode="fast"),
                 lambda: client.vzdump(100, "local", compress="xz"),
                 lambda: client.vzdump(100, "local", notes_template="a\nb"),
                 lambda: client.vzdump(99, "local"),
                 lambda: client.backup_details("no-storage-prefix")):
        with pytest.raises(ParameterError):
            call()
    assert sim.requests_seen == seen
