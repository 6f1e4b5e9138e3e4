"""The built-in default scenario, storages and disks (plain data, no behaviour).

``python -m felhom_agent.sim pve`` without ``--scenario`` serves this: node ``pve1``; guests
100 (LXC, running), 101 (qemu, stopped, one snapshot) and 102 (LXC, stopped); the resource
pool ``felhom``; one token
``felhom@pve!agent`` holding every privilege (privsep, granted to user and token) with a fresh
random secret per call, so nothing fixed ever needs to be committed.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

__all__ = ["default_disks", "default_scenario_dict", "default_storages"]


def default_scenario_dict(*, token_secret: str | None = None) -> dict[str, Any]:
    """The default scenario as JSON-ready data (a fresh random secret unless given)."""
    secret = token_secret or str(uuid.uuid4())
    return {
        "node": "pve1",
        "tokens": [{
            "id": "felhom@pve!agent", "secret": secret, "privsep": True,
            "user_privileges": {"/": ["Administrator"]},
            "token_privileges": {"/": ["Administrator"]},
        }],
        "pools": ["felhom"],
        "guests": [
            {"vmid": 100, "type": "lxc", "name": "web", "status": "running",
             "config": {"arch": "amd64", "cores": 2, "memory": 1024, "swap": 512,
                        "ostype": "debian", "unprivileged": 1, "onboot": 1,
                        "rootfs": "local-lvm:vm-100-disk-0,size=8G",
                        "net0": "name=eth0,bridge=vmbr0,hwaddr=BC:24:11:00:01:00,ip=dhcp,type=veth",
                        "description": "web frontend"}},
            {"vmid": 101, "type": "qemu", "name": "db", "status": "stopped",
             "config": {"cores": 2, "sockets": 1, "memory": "4096", "ostype": "l26",
                        "boot": "order=scsi0", "scsihw": "virtio-scsi-single",
                        "scsi0": "local-lvm:vm-101-disk-0,iothread=1,size=32G",
                        "net0": "virtio=BC:24:11:00:01:01,bridge=vmbr0"},
             "snapshots": [{"name": "initial", "description": "fresh install",
                            "snaptime": 1_750_000_000}]},
            {"vmid": 102, "type": "lxc", "name": "cache", "status": "stopped",
             "config": {"arch": "amd64", "cores": 1, "memory": 512, "swap": 512,
                        "ostype": "alpine", "unprivileged": 1,
                        "rootfs": "local-lvm:vm-102-disk-0,size=4G",
                        "net0": ("name=eth0,bridge=vmbr0,hwaddr=BC:24:11:00:01:02,ip=dhcp,"
                                 "type=veth")}},
        ],
    }


def default_storages() -> list[dict[str, Any]]:
    """``local`` (dir: backups, ISOs, templates), ``local-lvm`` (lvmthin: disks, no backups)
    and ``pbs1`` (a Proxmox Backup Server datastore with client-side encryption)."""
    return [
        {"storage": "local", "type": "dir", "content": "backup,iso,vztmpl",
         "total": 100 * 2**30, "used": 12 * 2**30,
         "config": {"path": "/var/lib/vz", "prune-backups": "keep-all=1"},
         "volumes": [{"volid": "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst",
                      "content": "vztmpl", "format": "tzst", "size": 126_000_000}]},
        {"storage": "local-lvm", "type": "lvmthin", "content": "images,rootdir",
         "total": 400 * 2**30, "used": 60 * 2**30,
         "config": {"thinpool": "data", "vgname": "pve"}},
        {"storage": "pbs1", "type": "pbs", "content": "backup",
         "total": 2048 * 2**30, "used": 300 * 2**30,
         "config": {"server": "192.0.2.10", "datastore": "store1", "username": "felhom@pbs",
                    "fingerprint": _PBS_FINGERPRINT, "encryption-key": _PBS_KEY_FINGERPRINT}},
    ]


#: Fixed, made-up fingerprints of the simulated PBS server certificate and encryption key.
_PBS_FINGERPRINT = ":".join(f"{(7 * i + 3) % 256:02x}" for i in range(32))
_PBS_KEY_FINGERPRINT = ":".join(f"{(11 * i + 5) % 256:02x}" for i in range(32))


def default_disks() -> tuple[Mapping[str, Any], ...]:
    """An NVMe system disk and a USB backup disk, as ``disks/list`` reports them (``mounted``
    and ``osdid-list`` as the schema lists them: a 0/1 boolean and an array)."""
    return (
        {"devpath": "/dev/nvme0n1", "size": 512_110_190_592, "type": "nvme",
         "model": "Samsung SSD 980 PRO 500GB", "serial": "S5GXNF0R000001", "vendor": "unknown",
         "wwn": "unknown", "gpt": 1, "rpm": 0, "health": "PASSED", "wearout": 98,
         "used": "LVM", "mounted": 0, "osdid": -1, "osdid-list": []},
        {"devpath": "/dev/sda", "size": 4_000_787_030_016, "type": "usb",
         "model": "Elements_25A3", "serial": "575836314142", "vendor": "WD",
         "wwn": "unknown", "gpt": 1, "rpm": 5400, "health": "PASSED", "wearout": "N/A",
         "mounted": 0, "osdid": -1, "osdid-list": []},
    )
