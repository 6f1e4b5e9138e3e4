"""The restore tests' node: the default guests with known configs and one backup of each.

Guests (``felhom_agent.sim.pve.defaults``): 100 lxc running, 101 qemu stopped (snapshot
``initial``), 102 lxc stopped -- 102 carries a description the archive does not, so "the old
config is gone" is visible -- plus 106, a protected container. Each of 100, 101, 102 and 106
has one backup on ``local`` whose archived config differs from the live one (a hostname or
name ``restored-<vmid>``, another memory size, another MAC), root disks on ``local-lvm``.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Mapping
from typing import Any

from felhom_agent.sim.pve import PveScenario, PveSimulator
from felhom_agent.sim.pve.defaults import default_scenario_dict, default_storages
from tests.daemon.helpers import PVE_SECRET
from tests.phaseb.harness import Harness

__all__ = ["ARCHIVED", "audit_lines", "backup_of", "restore_entries", "restore_scenario",
           "tasks_of"]

#: The archived config of each guest's backup on ``local`` (what a restore brings back).
ARCHIVED: dict[int, str] = {
    100: ("arch: amd64\nhostname: restored-100\nmemory: 1536\n"
          "net0: name=eth0,bridge=vmbr0,hwaddr=BC:24:11:AA:00:00,ip=dhcp,type=veth\n"
          "ostype: debian\nrootfs: local-lvm:vm-100-disk-0,size=8G\nswap: 512\n"
          "unprivileged: 1\n"),
    101: ("boot: order=scsi0;net0\ncores: 2\nmemory: 3072\nname: restored-101\n"
          "net0: virtio=BC:24:11:AA:01:01,bridge=vmbr0\nostype: l26\n"
          "scsi0: local-lvm:vm-101-disk-0,iothread=1,size=32G\nscsihw: virtio-scsi-single\n"),
    102: ("arch: amd64\nhostname: restored-102\nmemory: 768\n"
          "net0: name=eth0,bridge=vmbr0,hwaddr=BC:24:11:AA:01:02,ip=dhcp,type=veth\n"
          "ostype: alpine\nrootfs: local-lvm:vm-102-disk-0,size=4G\nswap: 512\n"
          "unprivileged: 1\n"),
    106: ("arch: amd64\nhostname: restored-106\nmemory: 256\nostype: alpine\n"
          "rootfs: local-lvm:vm-106-disk-0,size=2G\nunprivileged: 1\n"),
}
_TYPES = {100: "lxc", 101: "qemu", 102: "lxc", 106: "lxc"}
_VAULT = {"vmid": 106, "type": "lxc", "name": "vault", "status": "stopped",
          "config": {"arch": "amd64", "memory": 256, "ostype": "alpine", "unprivileged": 1,
                     "rootfs": "local-lvm:vm-106-disk-0,size=2G", "protection": 1}}


def restore_scenario(*, task_s: float = 0.05, vzdump_s: float = 0.1, restore_s: float = 0.1,
                     **extra: Any) -> PveScenario:
    """The node above; tasks take ``task_s``, a backup ``vzdump_s``, a restore ``restore_s``."""
    data: dict[str, Any] = copy.deepcopy(default_scenario_dict(token_secret=PVE_SECRET))
    data["auth_failure_delay_s"] = 0
    data["timezone"] = "UTC"
    data["task_durations"] = {"default": task_s, "vzdump": vzdump_s, "vzrestore": restore_s,
                              "qmrestore": restore_s}
    guests = data["guests"]
    next(g for g in guests if g["vmid"] == 102)["config"]["description"] = "before the restore"
    guests.append(copy.deepcopy(_VAULT))
    storages = default_storages()
    made = int(time.time()) - 86_400
    storages[0]["backups"] = [
        {"vmid": vmid, "type": _TYPES[vmid], "ctime": made + i, "size": 2**30,
         "notes": f"nightly {vmid}", "config": text}
        for i, (vmid, text) in enumerate(sorted(ARCHIVED.items()))]
    data["storages"] = storages
    data.update(extra)
    return PveScenario.from_dict(data)


def backup_of(pve: PveSimulator, vmid: int, storage: str = "local") -> str:
    """The volid of the scenario's backup of ``vmid`` (the one made before the test)."""
    [vol] = [b for b in pve.backups(storage) if b["vmid"] == vmid
             and not (b["notes"] or "").startswith("felhom")]
    return str(vol["volid"])


def tasks_of(pve: PveSimulator, vmid: int) -> list[dict[str, Any]]:
    """The simulator's tasks whose id is ``vmid``, oldest first."""
    return [t for t in pve.tasks() if t["id"] == str(vmid)]


def restore_entries(body: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The report's ``restore`` entries by op id."""
    return {e["op_id"]: dict(e) for e in body.get("restore", ())}


def audit_lines(h: Harness) -> list[dict[str, Any]]:
    """Every audit record the daemon wrote."""
    path = h.tmp / "state" / "audit.log"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
