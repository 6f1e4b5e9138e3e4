"""A policy against the node's storages: unknown, no backup content, disabled, inactive."""

from __future__ import annotations

import pytest

from felhom_agent.backup.policy import check_policy, check_storage
from felhom_agent.core.backup_policy import BackupPolicy
from felhom_agent.proxmox.models import StorageInfo
from tests.backup.helpers import storage as info

STORAGES = [
    info("local", "dir", "iso,vztmpl,backup", avail=10**12),
    info("local-lvm", "lvmthin", "images,rootdir"),
    info("pbs1", "pbs", "backup"),
    info("nfs-off", "nfs", "backup", enabled=False, active=False),
    info("pbs-down", "pbs", "backup", active=False),
]


def test_a_backup_storage_is_ok() -> None:
    """A known, enabled, active storage with backup content passes."""
    check = check_policy(BackupPolicy("pbs1", 24), STORAGES)
    assert check.ok and check.problem is None and check.reason == ""
    assert check.storage is not None and check.storage.is_pbs
    assert check_policy(BackupPolicy("local", 24), {s.storage: s for s in STORAGES}).ok


@pytest.mark.parametrize(
    ("storage", "problem", "reason"),
    [
        ("pbs9", "invalid", "backup storage pbs9 does not exist on this node (storages: local, "
         "local-lvm, nfs-off, pbs-down, pbs1); a storage the agent's token may not audit "
         "(Datastore.Audit) is not listed either"),
        ("local-lvm", "invalid", "backup storage local-lvm does not hold backups (content: "
         "images, rootdir); add backup to its content types or choose another storage"),
        ("nfs-off", "unavailable", "backup storage nfs-off is disabled in the storage "
         "configuration"),
        ("pbs-down", "unavailable", "backup storage pbs-down is not active (PVE cannot reach "
         "or mount it)"),
    ],
)
def test_problems_have_a_kind_and_a_reason(storage: str, problem: str, reason: str) -> None:
    """Wrong for this host (invalid) or not usable now (unavailable), each with the fix."""
    check = check_policy(BackupPolicy(storage, 24), STORAGES)
    assert not check.ok
    assert check.problem == problem
    assert check.reason == reason


def test_no_storages_listed_and_safety_storage_wording() -> None:
    """An empty listing says so; the same check serves backup.safety_storage."""
    assert "(storages: none)" in check_policy(BackupPolicy("pbs1", 1), []).reason
    check = check_storage("local-lvm", STORAGES, what="backup.safety_storage")
    assert check.reason.startswith("backup.safety_storage local-lvm does not hold backups")


def test_content_parsing() -> None:
    """PVE's comma list becomes the content types; blanks are dropped; backups and PBS told."""
    listed = StorageInfo.from_api({"storage": "x1", "type": "dir",
                                   "content": "images,rootdir,,backup", "active": 1})
    assert listed.content == ("images", "rootdir", "backup")
    assert listed.holds_backups and not listed.is_pbs
    bare = StorageInfo.from_api({"storage": "x1", "type": "pbs"})
    assert bare.content == () and not bare.holds_backups and bare.is_pbs
