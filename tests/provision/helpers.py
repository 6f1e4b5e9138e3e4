"""Shared pieces of the provisioning tests: a node with templates and a golden backup, the
engine rig with the daemon's queue limits, and desired-state builders."""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from felhom_agent.compose.root import CLONE_SOURCE_LIMITS, build_executor
from felhom_agent.core.desired import DesiredState, parse_desired
from felhom_agent.core.provision import ProvisionLimits, SourceRule
from felhom_agent.execution.engine import Engine
from felhom_agent.execution.queue import SerializerQueue
from felhom_agent.kinds.model import HostTools, Settings
from felhom_agent.planning.providers import HubProvider
from felhom_agent.privileged.facade import Privileged
from felhom_agent.proxmox.client import ProxmoxClient
from felhom_agent.sim.pve import PveScenario, PveSimulator
from felhom_agent.sim.pve.defaults import default_scenario_dict, default_storages
from tests.reconcile.crash_child import open_state
from tests.support.pve import sim_client

LOG = logging.getLogger("test.provision")

#: Container template (keyctl, nesting) and VM template on the node, outside the range.
LXC_TEMPLATE = 9000
QEMU_TEMPLATE = 9001
#: A backup of a container template (the golden archive) on ``local``.
GOLDEN_VMID = 9500
GOLDEN_ARCHIVE_CONFIG = """arch: amd64
cores: 1
features: keyctl=1,nesting=1
hostname: golden
memory: 512
net0: name=eth0,bridge=vmbr0,hwaddr=BC:24:11:95:00:00,ip=dhcp,type=veth
ostype: debian
rootfs: local-lvm:vm-9500-disk-0,size=8G
unprivileged: 1
"""
TEMPLATES: list[dict[str, Any]] = [
    {"vmid": LXC_TEMPLATE, "type": "lxc", "name": "golden", "template": True,
     "config": {"arch": "amd64", "cores": 1, "memory": 512, "ostype": "debian",
                "unprivileged": 1, "features": "keyctl=1,nesting=1",
                "rootfs": "local-lvm:base-9000-disk-0,size=8G",
                "net0": "name=eth0,bridge=vmbr0,hwaddr=BC:24:11:90:00:00,ip=dhcp,type=veth"}},
    {"vmid": QEMU_TEMPLATE, "type": "qemu", "name": "vm-golden", "template": True,
     "config": {"cores": 2, "memory": "2048", "ostype": "l26", "scsihw": "virtio-scsi-single",
                "scsi0": "local-lvm:base-9001-disk-0,iothread=1,size=32G",
                "net0": "virtio=BC:24:11:90:01:00,bridge=vmbr0"}},
]
ALLOWED = (SourceRule(template=LXC_TEMPLATE), SourceRule(template=QEMU_TEMPLATE),
           SourceRule(archive="local:backup/vzdump-lxc-9500-*"))
LIMITS = ProvisionLimits(vmid_min=1000, vmid_max=1999, max_guests=20, allowed=ALLOWED)


def scenario_data(*, task_s: float = 0.05, clone_s: float | None = None,
                  secret: str | None = None) -> dict[str, Any]:
    """The default node plus the two templates and a golden container backup on ``local``;
    every task takes ``task_s`` (clones ``clone_s``)."""
    data: dict[str, Any] = copy.deepcopy(default_scenario_dict(token_secret=secret))
    data["auth_failure_delay_s"] = 0
    data["lock_wait_s"] = 2
    durations = {"default": task_s}
    if clone_s is not None:
        durations.update(vzclone=clone_s, qmclone=clone_s)
    data["task_durations"] = durations
    data["guests"].extend(copy.deepcopy(TEMPLATES))
    storages = default_storages()
    storages[0]["backups"] = [{"vmid": GOLDEN_VMID, "type": "lxc", "ctime": 1_767_225_600,
                               "config": GOLDEN_ARCHIVE_CONFIG}]
    data["storages"] = storages
    return data


def scenario(**kw: Any) -> PveScenario:
    """:func:`scenario_data` parsed."""
    return PveScenario.from_dict(scenario_data(**kw))


def golden_volid(sim: PveSimulator) -> str:
    """The volid of the golden container backup."""
    [vol] = [b["volid"] for b in sim.backups("local") if b["vmid"] == GOLDEN_VMID]
    return str(vol)


def desired(generation: int, guests: dict[str, Any]) -> DesiredState:
    """A parsed desired state."""
    return parse_desired({"generation": generation, "guests": guests})


def block(source: int | str, name: str, *, storage: str = "local-lvm",
          pool: str | None = None) -> dict[str, Any]:
    """A provision block from a template vmid or an archive volid."""
    out: dict[str, Any] = {"from": ({"template": source} if isinstance(source, int)
                                    else {"archive": source}),
                           "name": name, "storage": storage}
    if pool is not None:
        out["pool"] = pool
    return out


class Rig:
    """A simulator's client, the daemon's queue (with its clone-source limit), journal, audit,
    provider and engine with provisioning limits; torn down by :meth:`close`."""

    def __init__(self, sim: PveSimulator, state: Path, *, limits: ProvisionLimits = LIMITS,
                 workers: int = 4, privileged: Privileged | None = None,
                 task_timeout_s: float = 20.0, lookup_grace_s: float = 0.5) -> None:
        self.sim = sim
        self.client: ProxmoxClient = sim_client(sim)
        self.provider = HubProvider(logger=LOG)
        self.stop = threading.Event()
        self.queue = SerializerQueue(workers=workers, limits=dict(CLONE_SOURCE_LIMITS),
                                     logger=LOG)
        self.queue.start()
        self.journal, self.audit = open_state(state, LOG)
        settings = Settings(vmid_min=limits.vmid_min, vmid_max=limits.vmid_max,
                            pool=limits.pool)
        watcher, self.executor = build_executor(
            client=self.client, journal=self.journal, audit=self.audit,
            task_timeout_s=task_timeout_s, stop_event=self.stop, clock=time.time, logger=LOG,
            lookup_grace_s=lookup_grace_s, settings=settings,
            host=None if privileged is None else HostTools(client=self.client,
                                                           fenced=privileged, node=sim.node))
        self.engine = Engine(client=self.client, node=sim.node, provider=self.provider,
                             queue=self.queue, journal=self.journal, audit=self.audit,
                             executor=self.executor, watcher=watcher, stop_event=self.stop,
                             interval_s=30.0, logger=LOG, lookup_grace_s=lookup_grace_s,
                             provision=limits)
        self.engine.watcher.start()

    def settle(self) -> None:
        """Wait until the queue is idle."""
        assert self.queue.wait_idle(60)

    def audit_lines(self) -> list[dict[str, Any]]:
        """The audit log's entries."""
        return [e.to_dict() for e in self.audit.recent(1000)]

    def close(self) -> None:
        """Stop everything this rig started."""
        self.stop.set()
        self.engine.join(5)
        self.engine.watcher.stop()
        self.queue.shutdown(5)
        self.journal.close()
        self.audit.close()
        self.client.close()


def rig_of(sim: PveSimulator, state: Path, **kw: Any) -> Iterator[Rig]:
    """A fixture body: a rig, closed afterwards."""
    rig = Rig(sim, state, **kw)
    try:
        yield rig
    finally:
        rig.close()
