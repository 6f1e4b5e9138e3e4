"""The agent backend over the daemon's real parts: the queue, the executor, the journal and
the PVE simulator (the engine's ``submit_op``, as the daemon wires it)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from felhom_agent.compose.engine_seam import default_engine_factory
from felhom_agent.compose.root import Parts, build_parts
from felhom_agent.config import load_config
from felhom_agent.execution.executor import ExecResult, JobSpec
from felhom_agent.execution.job import JobHandle
from felhom_agent.guestapi.api import Accepted, Caller, GuestInfo
from felhom_agent.guestapi.backend import LISTING_TTL_S, AgentBackend, Directory
from felhom_agent.guestapi.policy import Limits, Refusal
from felhom_agent.sim.pve import PveScenario, PveSimulator
from felhom_agent.sim.pve.defaults import default_scenario_dict, default_storages
from felhom_agent.state.journal import JournalEntry
from tests.daemon.helpers import PVE_SECRET, agent_config, write_agent_config

LOG = logging.getLogger("test.guestapi.backend")
A = Caller(9101, "lxc", "unix")
B = Caller(9102, "lxc", "unix")
INFO_A = GuestInfo(9101, "lxc", "ct9101", "pve1", "host-a", (), "local", "snapshot")
INFO_B = GuestInfo(9102, "lxc", "ct9102", "pve1", "host-a", (), "local", "snapshot")


def _scenario() -> PveScenario:
    data: dict[str, Any] = default_scenario_dict(token_secret=PVE_SECRET)
    data["auth_failure_delay_s"] = 0
    data["guests"] = [{"vmid": v, "type": "lxc", "name": f"ct{v}", "status": "running",
                       "config": {"memory": 512}} for v in (9101, 9102)]
    now = int(time.time())
    storages = default_storages()
    for s in storages:
        if s["storage"] == "local":
            s["backups"] = [{"vmid": 9101, "type": "lxc", "ctime": now - 7200, "size": 100},
                            {"vmid": 9102, "type": "lxc", "ctime": now - 7100, "size": 200},
                            {"vmid": 9101, "type": "qemu", "ctime": now - 7000, "size": 300}]
        if s["storage"] == "pbs1":
            s["backups"] = [{"vmid": 9101, "type": "lxc", "ctime": now - 6000,
                             "verification": "ok"}]
    data["storages"] = storages
    data["task_durations"] = {"default": 0.05, "vzdump": 0.3}
    return PveScenario.from_dict(data)


class World:
    """The daemon's parts (queue and task watcher running, no reconciler) and a backend."""

    def __init__(self, tmp: Path, limits: Limits) -> None:
        self.sim = PveSimulator(_scenario()).start()
        config = load_config(write_agent_config(tmp, agent_config(tmp, self.sim)), env={})
        self.parts: Parts = build_parts(config, stop_event=threading.Event(), on_fatal=None,
                                        engine_factory=default_engine_factory,
                                        clock=time.time, logger=LOG)
        self.parts.queue.start()
        self.parts.watcher.start()
        self.directory = Directory()
        self.directory.replace({9101: INFO_A, 9102: INFO_B})
        self.handles: list[JobHandle[ExecResult]] = []
        self.limits = limits
        self.backend = self.new_backend()

    def new_backend(self) -> AgentBackend:
        def submit(job: JobSpec) -> JobHandle[ExecResult]:
            handle = self.parts.engine.submit_op(job)
            self.handles.append(handle)
            return handle

        return AgentBackend(directory=self.directory, client=self.parts.client, submit=submit,
                            journal=self.parts.journal, limits=self.limits, logger=LOG)

    def wait_all(self) -> None:
        for handle in self.handles:
            handle.result(60)

    def close(self) -> None:
        self.parts.queue.shutdown(grace_s=10)
        self.parts.close()
        self.sim.stop()


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path, Limits(backup_min_interval_s=3600, backups_per_day=4,
                               allow_restart=True))
    yield w
    w.close()


def _accepted(result: Accepted | Refusal) -> str:
    assert isinstance(result, Accepted), result
    return result.operation_id


def test_own_backups_only_from_the_policy_storage(world: World) -> None:
    """9101 sees its one container backup on its policy storage: not 9102's, not a VM 9101's,
    not the one on pbs1; a second read within the TTL costs no PVE request."""
    items = world.backend.list_backups(A, INFO_A)
    assert [(i.size, i.protected, i.verified) for i in items] == [(100, False, None)]
    assert [i.size for i in world.backend.list_backups(B, INFO_B)] == [200]
    before = world.sim.requests_seen
    world.backend.list_backups(A, INFO_A)
    assert world.sim.requests_seen == before
    assert LISTING_TTL_S >= 10


def test_a_backup_request_is_made_once_and_found(world: World) -> None:
    """The job is the caller's vmid to its policy storage; it ends applied, one new backup
    whose notes carry the op id; the operation is the caller's alone."""
    op = _accepted(world.backend.request_backup(A, INFO_A))
    busy = world.backend.request_backup(A, INFO_A)
    assert isinstance(busy, Refusal) and busy.status == 409 and op in busy.reason
    world.wait_all()
    mine = [b for b in world.sim.backups("local")
            if b.get("vmid") == 9101 and b.get("subtype", "lxc") == "lxc"]
    assert sum(op in str(b.get("notes")) for b in mine) == 1
    view = world.backend.operation(A, op)
    assert view is not None and view["state"] == "applied" and view["kind"] == "backup"
    assert "reason" not in view  # no host detail (the volid, the storage) for the guest
    assert world.backend.operation(B, op) is None
    assert world.backend.operation(A, "guest-9101-0000000000000000") is None
    entry = world.parts.journal.get(op)
    assert entry is not None and entry.source == "guest:9101"
    assert dict(entry.params) == {"guest_type": "lxc", "storage": "local", "mode": "snapshot"}
    assert len(world.backend.list_backups(A, INFO_A)) == 2
    soon = world.backend.request_backup(A, INFO_A)
    assert isinstance(soon, Refusal) and soon.status == 429 and soon.retry_after_s
    # guest 9102 is not held up by 9101's limits
    _accepted(world.backend.request_backup(B, INFO_B))
    world.wait_all()


def test_the_limits_survive_an_agent_restart(world: World) -> None:
    """A backend built anew over the same journal (the agent restarted) still counts the
    earlier request: the minimum interval holds."""
    _accepted(world.backend.request_backup(A, INFO_A))
    world.wait_all()
    fresh = world.new_backend()
    again = fresh.request_backup(A, INFO_A)
    assert isinstance(again, Refusal) and again.status == 429
    assert isinstance(fresh.request_backup(B, INFO_B), Accepted)
    world.wait_all()


def test_per_day_cap(tmp_path: Path) -> None:
    """With no minimum interval, the daily cap refuses the third request of the day."""
    w = World(tmp_path, Limits(backup_min_interval_s=0, backups_per_day=2))
    try:
        for _ in range(2):
            _accepted(w.backend.request_backup(A, INFO_A))
            w.wait_all()
        third = w.backend.request_backup(A, INFO_A)
        assert isinstance(third, Refusal) and third.status == 429
        assert "at most 2 backups" in third.reason
    finally:
        w.close()


def test_a_restart_is_a_shutdown_then_a_start(world: World) -> None:
    """POST /1.0/restart: the guest is shut down and started again in its lane; the
    operation ends applied; a second one is refused (cooldown)."""
    op = _accepted(world.backend.request_restart(A, INFO_A))
    world.wait_all()
    types = [t["type"] for t in world.sim.tasks() if t["id"] == "9101"]
    assert types[-2:] == ["vzshutdown", "vzstart"]
    assert world.sim.guest(9101)["status"] == "running"
    view = world.backend.operation(A, op)
    assert view is not None and (view["kind"], view["state"]) == ("restart", "applied")
    again = world.backend.request_restart(A, INFO_A)
    assert isinstance(again, Refusal) and "restarts" in again.reason


class _Recording:
    def __init__(self) -> None:
        self.jobs: list[JobSpec] = []

    def submit(self, job: JobSpec) -> Any:
        self.jobs.append(job)
        return None

    def get(self, op_id: str) -> JournalEntry | None:
        return None

    def entries(self) -> list[JournalEntry]:
        return []


@given(vmid=st.integers(100, 999_999_999), gtype=st.sampled_from(["lxc", "qemu"]),
       storage=st.from_regex(r"[a-z][a-z0-9-]{1,20}", fullmatch=True),
       mode=st.sampled_from(["snapshot", "suspend", "stop"]))
def test_every_job_is_built_from_the_caller_and_its_policy(vmid: int, gtype: str,
                                                           storage: str, mode: str) -> None:
    """Property: whatever the guest, the submitted job's vmid is the caller's, its storage
    and mode the policy's, its source ``guest:<vmid>`` -- and nothing else is in it."""
    rec = _Recording()
    directory = Directory()
    info = GuestInfo(vmid, gtype, "x", "pve1", "h", (), storage, mode)
    backend = AgentBackend(directory=directory, client=None,  # type: ignore[arg-type]
                           submit=rec.submit, journal=rec, limits=Limits())
    caller = Caller(vmid, gtype, "unix")
    _accepted(backend.request_backup(caller, info))
    (job,) = rec.jobs
    assert (job.vmid, job.guest_type.value, job.kind, dict(job.params), job.source) == (
        vmid, gtype, "backup", {"storage": storage, "mode": mode}, f"guest:{vmid}")
