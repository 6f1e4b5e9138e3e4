"""The ``--demo`` scenario: a small simulated node and the hub's desired state for it.

Three guests on node ``pve1``: 100 ``web`` (LXC, running), 101 ``db`` (qemu, stopped) and
102 ``cache`` (LXC, running). The hub's desired state (generation 1) starts ``db``, stops
``cache`` and changes ``web``'s description -- one action of each kind the reconciler plans.
Task durations are short but visible (0.3 s), so the demo shows real UPIDs and waits.

Secrets (the PVE token secret, the hub token) are generated per run by the caller; nothing
here is a credential.
"""

from __future__ import annotations

from typing import Any

__all__ = ["DEMO_NODE", "DEMO_TOKEN_ID", "demo_desired", "demo_pve_scenario"]

DEMO_NODE = "pve1"
DEMO_TOKEN_ID = "felhom@pve!agent"  # noqa: S105 - a token *id* (user!name), not a secret


def demo_pve_scenario(*, token_secret: str) -> dict[str, Any]:
    """The simulated PVE node of the demo as scenario data (``PveScenario.from_dict``)."""
    return {
        "node": DEMO_NODE,
        "auth_failure_delay_s": 0,
        "task_durations": {"default": 0.3},
        "tokens": [{
            "id": DEMO_TOKEN_ID, "secret": token_secret, "privsep": True,
            "user_privileges": {"/": ["Administrator"]},
            "token_privileges": {"/": ["PVEVMUser", "PVEAuditor", "VM.Config.Options"]},
        }],
        "guests": [
            {"vmid": 100, "type": "lxc", "name": "web", "status": "running",
             "config": {"arch": "amd64", "cores": 2, "memory": 1024, "ostype": "debian",
                        "unprivileged": 1, "onboot": 1,
                        "rootfs": "local-lvm:vm-100-disk-0,size=8G",
                        "description": "web frontend"}},
            {"vmid": 101, "type": "qemu", "name": "db", "status": "stopped",
             "config": {"cores": 2, "sockets": 1, "memory": "4096", "ostype": "l26",
                        "scsi0": "local-lvm:vm-101-disk-0,size=32G",
                        "description": "database"}},
            {"vmid": 102, "type": "lxc", "name": "cache", "status": "running",
             "config": {"arch": "amd64", "cores": 1, "memory": 512, "ostype": "alpine",
                        "unprivileged": 1, "rootfs": "local-lvm:vm-102-disk-0,size=4G"}},
        ],
    }


def demo_desired() -> dict[str, Any]:
    """The hub's desired state: start 101, stop 102, new description on 100."""
    return {
        "generation": 1,
        "guests": {
            "100": {"type": "lxc", "config": {"description": "web frontend (managed by felhom)"}},
            "101": {"type": "qemu", "state": "running"},
            "102": {"type": "lxc", "state": "stopped"},
        },
    }
