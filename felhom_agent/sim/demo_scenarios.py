"""The ``--demo`` scenario: a small simulated node, the hub's desired state and a signed op.

Four guests on node ``pve1``: 100 ``web`` (LXC, running), 101 ``db`` (qemu, stopped), 102
``cache`` (LXC, running) and 103 ``app`` (qemu, running, snapshot ``before-upgrade``).

The hub's desired state (generation 1) starts ``db``, stops ``cache`` and changes ``web``'s
description -- one benign action of each kind the reconciler plans -- and also asks for
``memory: 8192`` on ``db``. ``memory`` is not a benign key (``docs/architecture.md``, "Kinds"),
so from unsigned desired state it is refused and reported, never written.

Backups (``docs/architecture.md``, "Backup policy"): ``web`` has a policy for storage ``local``
(every 24 h) and its only backup there is two days old, so it is due: the daemon runs one
vzdump, finds the new volume in the listing by the op id in its notes and reports it. ``cache``
has a policy for ``usb-backup``, a nearly full disk whose free space (1 GiB) is less than its
last backup there (2 GiB) plus the 20 % margin: the backup is refused with the numbers and no
vzdump task is started for it. The old backups' times are relative to ``now``, so the demo
shows the same thing whenever it runs.

The signed op is a ``guest.rollback`` of ``app`` to ``before-upgrade`` (with ``start: true``,
so the guest ends running as it began). It targets a guest the desired state does not
mention, on purpose: a rollback stops a running guest, and on a guest the plan also starts
the outcome would depend on which of the two ran first. ``before-upgrade`` holds an older
config (1 core instead of 2) so the rollback is visible in the guest's config.

Provisioning (``docs/architecture.md``, "Provisioning"): the node holds a container template,
9000 ``golden`` (keyctl and nesting, as a golden image made with ``guest.create_golden`` would
have). The desired state asks for guest 1001 ``c42-web``, which does not exist, with a
``provision`` block cloning that template; the agent's config allows template 9000 as a
source. The first pass plans a ``provision`` action (a full clone), and the pass that follows
sets 1001's description and starts it -- no operator action.

Task durations are short but visible (0.3 s), so the demo shows real UPIDs and waits.
Secrets (the PVE token secret, the hub token) and the operator key are made per run by the
caller; nothing here is a credential.
"""

from __future__ import annotations

from typing import Any, Final

__all__ = [
    "DEMO_BACKUP_STORAGE",
    "DEMO_BACKUP_VMID",
    "DEMO_FULL_STORAGE",
    "DEMO_FULL_VMID",
    "DEMO_NODE",
    "DEMO_PRINCIPAL",
    "DEMO_PROVISION_NAME",
    "DEMO_PROVISION_VMID",
    "DEMO_ROLLBACK_SNAPSHOT",
    "DEMO_ROLLBACK_VMID",
    "DEMO_TEMPLATE_VMID",
    "DEMO_TOKEN_ID",
    "DEMO_VMIDS",
    "demo_desired",
    "demo_mount_table",
    "demo_pve_scenario",
    "demo_rollback_op",
]

DEMO_NODE: Final = "pve1"
DEMO_TOKEN_ID: Final = "felhom@pve!agent"  # noqa: S105 - a token *id* (user!name), not a secret
#: The allowed_signers principal of the demo's throwaway operator key.
DEMO_PRINCIPAL: Final = "demo-operator@felhom"
DEMO_VMIDS: Final = (100, 101, 102, 103)
DEMO_ROLLBACK_VMID: Final = 103
DEMO_ROLLBACK_SNAPSHOT: Final = "before-upgrade"
#: The guest whose policy backup runs, and its storage.
DEMO_BACKUP_VMID: Final = 100
DEMO_BACKUP_STORAGE: Final = "local"
#: The guest whose policy targets the nearly full storage, and that storage.
DEMO_FULL_VMID: Final = 102
DEMO_FULL_STORAGE: Final = "usb-backup"
#: The container template on the node, and the guest the desired state provisions from it.
DEMO_TEMPLATE_VMID: Final = 9000
DEMO_PROVISION_VMID: Final = 1001
DEMO_PROVISION_NAME: Final = "c42-web"
_GIB: Final = 2**30
_DAY: Final = 24 * 3600

_APP_CONFIG: Final = {"cores": 2, "sockets": 1, "memory": "2048", "ostype": "l26",
                      "scsi0": "local-lvm:vm-103-disk-0,size=16G",
                      "description": "application server"}


def _demo_storages(now: int) -> list[dict[str, Any]]:
    """``local`` (room to spare, a two-day-old backup of 100), ``local-lvm`` (guest disks) and
    ``usb-backup`` (1 GiB free, a three-day-old 2 GiB backup of 102)."""
    return [
        {"storage": DEMO_BACKUP_STORAGE, "type": "dir", "content": "backup,iso,vztmpl",
         "total": 100 * _GIB, "used": 12 * _GIB, "config": {"path": "/var/lib/vz"},
         "backups": [{"vmid": DEMO_BACKUP_VMID, "type": "lxc", "ctime": now - 2 * _DAY,
                      "size": 700_000_000}]},
        {"storage": "local-lvm", "type": "lvmthin", "content": "images,rootdir",
         "total": 400 * _GIB, "used": 60 * _GIB,
         "config": {"thinpool": "data", "vgname": "pve"}},
        {"storage": DEMO_FULL_STORAGE, "type": "dir", "content": "backup",
         "total": 32 * _GIB, "used": 31 * _GIB,
         "config": {"path": "/mnt/usb-backup", "is_mountpoint": "yes"},
         "backups": [{"vmid": DEMO_FULL_VMID, "type": "lxc", "ctime": now - 3 * _DAY,
                      "size": 2 * _GIB}]},
    ]


def demo_mount_table() -> str:
    """The demo node's mount table (``/proc/self/mounts`` format): its USB backup disk
    (``usb-backup``, an ``is_mountpoint`` storage) is mounted, so PVE has it online."""
    return "/dev/sdb1 /mnt/usb-backup ext4 rw,nosuid,nodev,noexec,noatime 0 0\n"


def demo_pve_scenario(*, token_secret: str, now: float,
                      mounts_file: str | None = None) -> dict[str, Any]:
    """The simulated PVE node of the demo as scenario data (``PveScenario.from_dict``);
    ``now`` (POSIX seconds) dates the backups already on the storages; ``mounts_file`` is
    the node's mount table (:func:`demo_mount_table` written to a file)."""
    extra: dict[str, Any] = {} if mounts_file is None else {"mounts_file": mounts_file}
    return {
        **extra,
        "node": DEMO_NODE,
        "auth_failure_delay_s": 0,
        "task_durations": {"default": 0.3},
        "storages": _demo_storages(int(now)),
        "tokens": [{
            "id": DEMO_TOKEN_ID, "secret": token_secret, "privsep": True,
            "user_privileges": {"/": ["Administrator"]},
            # The README's FelhomAgent role: VM.Snapshot covers the safety snapshot and the
            # rollback; VM.Clone and VM.Allocate (FelhomAgentExtra) the provisioning.
            "token_privileges": {"/": ["PVEVMUser", "PVEAuditor", "VM.Config.Options",
                                       "VM.Snapshot", "VM.Clone", "VM.Allocate"]},
        }],
        "guests": [
            {"vmid": DEMO_BACKUP_VMID, "type": "lxc", "name": "web", "status": "running",
             "backup_size": 720_000_000,
             "config": {"arch": "amd64", "cores": 2, "memory": 1024, "ostype": "debian",
                        "unprivileged": 1, "onboot": 1,
                        "rootfs": "local-lvm:vm-100-disk-0,size=8G",
                        "description": "web frontend"}},
            {"vmid": 101, "type": "qemu", "name": "db", "status": "stopped",
             "config": {"cores": 2, "sockets": 1, "memory": "4096", "ostype": "l26",
                        "scsi0": "local-lvm:vm-101-disk-0,size=32G",
                        "description": "database"}},
            {"vmid": DEMO_FULL_VMID, "type": "lxc", "name": "cache", "status": "running",
             "config": {"arch": "amd64", "cores": 1, "memory": 512, "ostype": "alpine",
                        "unprivileged": 1, "rootfs": "local-lvm:vm-102-disk-0,size=4G"}},
            {"vmid": DEMO_ROLLBACK_VMID, "type": "qemu", "name": "app", "status": "running",
             "config": dict(_APP_CONFIG),
             "snapshots": [{"name": DEMO_ROLLBACK_SNAPSHOT,
                            "description": "known good, before the failed upgrade",
                            "snaptime": 1_764_000_000,
                            # a snapshot's config is the whole config file section, the name
                            # included
                            "config": {**_APP_CONFIG, "name": "app", "cores": 1}}]},
            {"vmid": DEMO_TEMPLATE_VMID, "type": "lxc", "name": "golden", "status": "stopped",
             "template": True,
             "config": {"arch": "amd64", "cores": 1, "memory": 512, "ostype": "debian",
                        "unprivileged": 1, "features": "keyctl=1,nesting=1",
                        "rootfs": "local-lvm:base-9000-disk-0,size=8G",
                        "net0": "name=eth0,bridge=vmbr0,hwaddr=BC:24:11:90:00:00,ip=dhcp,"
                                "type=veth"}},
        ],
    }


def demo_desired() -> dict[str, Any]:
    """The hub's desired state: start 101, stop 102, new description on 100; 101's memory
    change is destructive and will be refused. 100 is backed up to ``local`` daily (keeping
    the last 7); 102's daily backup to the nearly full ``usb-backup`` will be refused. 1001
    does not exist: it is cloned from template 9000, then described and started."""
    return {
        "generation": 1,
        "guests": {
            "100": {"type": "lxc", "config": {"description": "web frontend (managed by felhom)"},
                    "backup": {"storage": DEMO_BACKUP_STORAGE, "every_h": 24,
                               "keep": {"last": 7}}},
            "101": {"type": "qemu", "state": "running", "config": {"memory": 8192}},
            "102": {"type": "lxc", "state": "stopped",
                    "backup": {"storage": DEMO_FULL_STORAGE, "every_h": 24}},
            str(DEMO_PROVISION_VMID): {
                "type": "lxc", "state": "running", "config": {"description": "customer 42"},
                "provision": {"from": {"template": DEMO_TEMPLATE_VMID},
                              "name": DEMO_PROVISION_NAME, "storage": "local-lvm"}},
        },
    }


def demo_rollback_op() -> dict[str, Any]:
    """The signed op's kind, vmid and params (the caller adds ids, nonce, times, signer)."""
    return {"kind": "guest.rollback", "vmid": DEMO_ROLLBACK_VMID,
            "params": {"snapname": DEMO_ROLLBACK_SNAPSHOT, "start": True}}
