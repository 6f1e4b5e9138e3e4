"""Shared pieces of the restore/clone/template tests: a scenario with templates, backups with
known archived configs, and tokens with narrow provisioning rights."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

from felhom_agent.sim.pve import PveScenario, PveSimulator
from felhom_agent.sim.pve.defaults import default_storages
from tests.sim.helpers import Api, scenario_dict

#: The archived config of the container backup of 102 (not 102's live config).
CT_ARCHIVE = """#from the archive
arch: amd64
cores: 3
features: keyctl=1,nesting=1
hostname: from-archive
memory: 2048
net0: name=eth0,bridge=vmbr0,hwaddr=BC:24:11:AA:BB:CC,ip=dhcp,type=veth
ostype: debian
rootfs: local-lvm:vm-102-disk-0,size=6G
swap: 256
unprivileged: 1
"""
#: A backup of a container template.
CT_TEMPLATE_ARCHIVE = CT_ARCHIVE.replace("hostname: from-archive", "hostname: golden") \
    + "template: 1\n"
#: The archived config of the VM backup of 101.
VM_ARCHIVE = """#db from the archive
boot: order=scsi0
cores: 4
memory: 8192
name: db-archived
net0: virtio=BC:24:11:00:0A:01,bridge=vmbr0
ostype: l26
scsi0: local-lvm:vm-101-disk-0,iothread=1,size=32G
scsihw: virtio-scsi-single
smbios1: uuid=11111111-2222-4333-8444-555555555555
vmgenid: 66666666-7777-4888-9999-000000000000
"""

JAN_2026 = 1_767_225_600
#: VM.Backup on every guest, storage rights: may restore over an existing guest only.
BACKUP_ONLY = "PVEAPIToken=backup@pve!agent=backup-secret-1"
#: VM.Clone on the templates, VM.Allocate on pool ``felhom`` only.
CLONER = "PVEAPIToken=cloner@pve!tk=cloner-secret-1"
#: A token with every VM privilege but no Datastore.Allocate (reads backups via VM.Backup).
OPERATOR = "PVEAPIToken=op@pve!tk=op-secret-1"
_SPACE = ["Datastore.AllocateSpace", "Datastore.Audit"]
TOKENS = [
    {"id": "backup@pve!agent", "secret": "backup-secret-1", "privsep": False,
     "user_privileges": {"/vms": ["VM.Audit", "VM.Backup"], "/storage": _SPACE}},
    {"id": "cloner@pve!tk", "secret": "cloner-secret-1", "privsep": False,
     "user_privileges": {"/vms": ["VM.Audit"], "/vms/9000": ["VM.Audit", "VM.Clone"],
                         "/vms/9001": ["VM.Audit", "VM.Clone"],
                         "/pool/felhom": ["VM.Allocate"], "/storage": _SPACE}},
    {"id": "op@pve!tk", "secret": "op-secret-1", "privsep": False,
     "user_privileges": {"/vms": ["VM.Allocate", "VM.Audit", "VM.Backup", "VM.Clone",
                                  "VM.Config.CPU", "VM.Config.Memory", "VM.Config.Network",
                                  "VM.Config.Options", "VM.Config.Disk", "VM.PowerMgmt"],
                         "/storage": _SPACE}},
]

TEMPLATES: list[dict[str, Any]] = [
    {"vmid": 9000, "type": "lxc", "name": "golden", "template": True,
     "config": {"arch": "amd64", "cores": 1, "memory": 512, "ostype": "debian",
                "unprivileged": 1, "features": "keyctl=1,nesting=1",
                "rootfs": "local-lvm:base-9000-disk-0,size=8G",
                "net0": "name=eth0,bridge=vmbr0,hwaddr=BC:24:11:90:00:00,ip=dhcp,type=veth"}},
    {"vmid": 9001, "type": "qemu", "name": "vm-golden", "template": True,
     "config": {"cores": 2, "memory": "2048", "ostype": "l26", "scsihw": "virtio-scsi-single",
                "scsi0": "local-lvm:base-9001-disk-0,iothread=1,size=32G",
                "net0": "virtio=BC:24:11:90:01:00,bridge=vmbr0",
                "smbios1": "uuid=aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee",
                "vmgenid": "12345678-1234-4234-8234-123456789abc"}},
]


def provision_scenario(**overrides: Any) -> PveScenario:
    """The test scenario plus templates 9000 (lxc) and 9001 (qemu), backups of 102 (lxc),
    101 (qemu) and of a container template on ``local`` and ``pbs1``, and the tokens above."""
    d = scenario_dict(**overrides)
    d["tokens"].extend(TOKENS)
    if "guests" not in overrides:
        d["guests"] = [*d["guests"], *TEMPLATES]
    if "storages" not in overrides:
        storages = default_storages()
        storages[0]["backups"] = [
            {"vmid": 102, "type": "lxc", "ctime": JAN_2026, "config": CT_ARCHIVE},
            {"vmid": 101, "type": "qemu", "ctime": JAN_2026, "config": VM_ARCHIVE},
            {"vmid": 9500, "type": "lxc", "ctime": JAN_2026, "config": CT_TEMPLATE_ARCHIVE},
        ]
        storages[2]["backups"] = [
            {"vmid": 102, "type": "lxc", "ctime": JAN_2026, "size": None, "config": CT_ARCHIVE},
            {"vmid": 101, "type": "qemu", "ctime": JAN_2026, "size": None,
             "config": VM_ARCHIVE},
        ]
        d["storages"] = storages
    return PveScenario.from_dict(d)


@contextlib.contextmanager
def running(scenario: PveScenario | None = None) -> Iterator[tuple[PveSimulator, Api]]:
    """A simulator on ``scenario`` (default :func:`provision_scenario`) and a full-privilege
    client; asserts no handler failed and no thread outlived it."""
    before = set(threading.enumerate())
    with PveSimulator(scenario or provision_scenario()) as sim:
        yield sim, Api(sim)
        assert sim.internal_errors == [], sim.internal_errors[0]
    leaked = [t for t in threading.enumerate() if t not in before and t.is_alive()]
    assert not leaked, f"threads leaked: {leaked}"


def volid(sim: PveSimulator, storage: str, vmid: int, subtype: str) -> str:
    """The volid of the one scenario backup of ``vmid``/``subtype`` on ``storage``."""
    [vol] = [b["volid"] for b in sim.backups(storage)
             if b["vmid"] == vmid and b["subtype"] == subtype]
    return str(vol)
