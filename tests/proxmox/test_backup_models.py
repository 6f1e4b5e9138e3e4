"""Backup models and the vzdump log parser on PVE-shaped data (pure: no server)."""

from __future__ import annotations

import pickle

import pytest

from felhom_agent.proxmox import (
    BackupVolume,
    GuestType,
    NoGuestSelected,
    PruneMark,
    PruneMarkKind,
    StorageConfig,
    StorageInfo,
    parse_vzdump_log,
)
from felhom_agent.proxmox.backup_models import guest_type_of_volid


def test_backup_volume_from_dir_and_pbs_items() -> None:
    """Dir items keep their size; PBS size 1 means unknown; verification and encryption
    parse; a renamed file has no subtype."""
    local = BackupVolume.from_api({
        "volid": "local:backup/vzdump-qemu-101-2026_01_01-01_00_00.vma.zst", "format": "vma.zst",
        "size": 123, "ctime": 1_767_225_600, "vmid": 101, "subtype": "qemu", "notes": "n",
        "protected": 1, "content": "backup"}, "local")
    assert (local.storage, local.subtype, local.size, local.protected, local.pbs) == (
        "local", GuestType.QEMU, 123, True, False)
    pbs = BackupVolume.from_api({
        "volid": "pbs1:backup/ct/100/2026-01-01T00:00:00Z", "format": "pbs-ct", "size": 1,
        "ctime": 1_767_225_600, "vmid": 100, "subtype": "lxc", "encrypted": "ab:cd",
        "verification": {"state": "failed", "upid": "UPID:x"}}, "pbs1")
    assert (pbs.size, pbs.encrypted, pbs.verification, pbs.verification_upid) == (
        None, "ab:cd", "failed", "UPID:x")
    renamed = BackupVolume.from_api({"volid": "local:backup/copy.tar", "format": "tar",
                                     "size": 5, "subtype": "unknown"}, "local")
    assert renamed.subtype is None and renamed.vmid is None and renamed.verification is None


def test_storage_info_unreachable_has_no_sizes() -> None:
    """``active: 0`` (PVE's zeros) becomes unknown sizes, never 0 bytes."""
    dead = StorageInfo.from_api({"storage": "nfs", "type": "nfs", "active": 0, "total": 0,
                                 "used": 0, "avail": 0})
    assert not dead.reachable and (dead.total, dead.used, dead.avail) == (None, None, None)
    alive = StorageInfo.from_api({"storage": "l", "active": 1, "total": 10, "used": 4,
                                  "avail": 6})
    assert alive.reachable and alive.avail == 6


def test_storage_config_pbs_fields() -> None:
    """A PBS storage.cfg entry carries server, datastore, namespace, fingerprint and the
    encryption key fingerprint; other types have no PBS part."""
    cfg = StorageConfig.from_api({
        "storage": "pbs1", "type": "pbs", "content": "backup", "server": "pbs.lan",
        "port": 8007, "datastore": "d", "namespace": "ns", "username": "u@pbs",
        "fingerprint": "aa:bb", "encryption-key": "1", "master-pubkey": 1,
        "prune-backups": "keep-last=3", "nodes": "pve1,pve2", "digest": "x"})
    assert cfg.pbs is not None
    assert (cfg.pbs.server, cfg.pbs.port, cfg.pbs.namespace, cfg.pbs.encryption) == (
        "pbs.lan", 8007, "ns", "1")
    assert cfg.pbs.master_pubkey and cfg.nodes == ("pve1", "pve2")
    assert cfg.prune_backups == "keep-last=3"
    plain = StorageConfig.from_api({"storage": "local", "type": "dir", "path": "/x",
                                    "disable": 1})
    assert plain.pbs is None and plain.disabled and plain.path == "/x"


def test_backup_volume_ownership_and_known_size() -> None:
    """A backup belongs to a guest by vmid *and* type; an untyped one to nobody. PBS's size 1
    is no size."""
    ct = BackupVolume.from_api({"volid": "local:backup/vzdump-lxc-100-x.tar.zst", "size": 50,
                                "vmid": 100, "subtype": "lxc", "format": "tar.zst"}, "local")
    assert ct.belongs_to(100, GuestType.LXC) and ct.belongs_to(100, "lxc")
    assert not ct.belongs_to(100, "qemu") and not ct.belongs_to(101, "lxc")
    assert ct.size_known
    renamed = BackupVolume.from_api({"volid": "local:backup/copy.tar", "vmid": 100,
                                     "subtype": "unknown", "size": 5}, "local")
    assert not renamed.belongs_to(100, "lxc") and not renamed.belongs_to(100, "unknown")
    pbs = BackupVolume.from_api({"volid": "pbs1:backup/ct/100/2026-01-01T00:00:00Z",
                                 "format": "pbs-ct", "size": 1, "vmid": 100,
                                 "subtype": "lxc"}, "pbs1")
    assert pbs.size is None and not pbs.size_known
    tiny = BackupVolume.from_api({"volid": "local:backup/t.tar", "size": 1, "format": "tar"},
                                 "local")
    assert tiny.size == 1 and not tiny.size_known


def test_storage_info_backup_target() -> None:
    """Whether a storage holds backups, and whether it is a PBS datastore."""
    pbs = StorageInfo.from_api({"storage": "pbs1", "type": "pbs", "content": "backup",
                                "active": 1})
    assert pbs.holds_backups and pbs.is_pbs
    lvm = StorageInfo.from_api({"storage": "lvm", "type": "lvmthin",
                                "content": "images,rootdir"})
    assert not lvm.holds_backups and not lvm.is_pbs


def test_prune_mark_parsing() -> None:
    """Marks map to the enum; an unknown mark is treated as keep (never as remove)."""
    m = PruneMark.from_api({"volid": "v", "ctime": 1, "type": "lxc", "vmid": 100,
                            "mark": "remove"})
    assert m.mark is PruneMarkKind.REMOVE and m.vmid == 100
    assert PruneMark.from_api({"volid": "v", "mark": "zap"}).mark is PruneMarkKind.KEEP


def test_vzdump_log_parser() -> None:
    """Per-guest results, job failure, task error and warnings from PVE's lines."""
    log = parse_vzdump_log([
        "INFO: starting new backup job: vzdump 100 101 --storage local",
        "INFO: Starting Backup of VM 100 (lxc)",
        "WARN: unable to add notes - read-only",
        "INFO: Finished Backup of VM 100 (01:02:03)",
        "INFO: Starting Backup of VM 101 (qemu)",
        "ERROR: Backup of VM 101 failed - VM is locked (snapshot)",
        "INFO: Backup job finished with errors",
        "TASK ERROR: job errors",
    ])
    assert log.guests[100].ok and log.guests[100].duration_s == 3723
    assert log.guests[100].guest_type == "lxc"
    assert log.error_for(101) == "VM is locked (snapshot)"
    assert log.error_for(100) == "job errors"
    assert log.warnings == ("unable to add notes - read-only",)
    job = parse_vzdump_log(["ERROR: Backup job failed - interrupted by signal",
                            "TASK ERROR: interrupted by signal"])
    assert job.error_for(100) == "interrupted by signal" and job.guests == {}


def test_no_guest_selected_pickles() -> None:
    """The refusal survives pickling (it crosses process boundaries in the daemon)."""
    err = NoGuestSelected("nothing ran", vmids=(300,), node="pve1", path="/nodes/pve1/vzdump")
    clone = pickle.loads(pickle.dumps(err))  # noqa: S301 - our own object
    assert (clone.vmids, clone.node, str(clone)) == ((300,), "pve1", str(err))


@pytest.mark.parametrize(("volid", "want"), [
    ("local:backup/vzdump-lxc-999-2026_01_01-00_00_00.tar.zst", "lxc"),
    ("local:backup/vzdump-qemu-101-2026_01_01-00_00_00.vma.zst", "qemu"),
    ("pbs1:backup/ct/999/2026-01-01T00:00:00Z", "lxc"),
    ("pbs1:backup/vm/101/2026-01-01T00:00:00Z", "qemu"),
    ("local:backup/my-own-name.tar", None),
    ("local:iso/vzdump-lxc-1-x.iso", None),
])
def test_guest_type_of_volid(volid: str, want: str | None) -> None:
    """The type a backup's name carries (the guest may be gone)."""
    got = guest_type_of_volid(volid)
    assert (None if got is None else got.value) == want
