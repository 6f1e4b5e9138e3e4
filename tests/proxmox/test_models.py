"""Model coercion of PVE's loose JSON (``docs/pve-facts.md``, "Config round trip")."""

from __future__ import annotations

from felhom_agent.proxmox import GuestType, Permissions, StorageInfo, TaskEntry
from felhom_agent.proxmox.models import Guest, GuestStatus, StorageVolume


def test_permissions_inherit_only_propagated_privileges() -> None:
    """An unlisted path inherits the nearest listed ancestor's propagated privileges only."""
    perms = Permissions.from_api(
        {"/": {"Sys.Audit": 0}, "/vms": {"VM.Audit": 1, "VM.Allocate": 0}, "/vms/100": {}}
    )
    assert perms.privileges_at("/vms/101") == frozenset({"VM.Audit"})
    assert perms.privileges_at("/vms") == frozenset({"VM.Audit", "VM.Allocate"})
    assert perms.privileges_at("/vms/100") == frozenset()
    assert perms.privileges_at("/nodes/pve") == frozenset()


def test_absent_flags_and_string_numbers() -> None:
    """Absent lock/template read as None/False; numeric strings are coerced."""
    g = Guest.from_api({"vmid": "105", "type": "lxc", "node": "pve", "mem": "1024.0"})
    assert (g.vmid, g.lock, g.template, g.mem, g.name) == (105, None, False, 1024, "")
    st = GuestStatus.from_api(105, GuestType.LXC, {"status": "stopped", "ha": {"managed": 0}})
    assert not st.running and not st.ha_managed and st.qmpstatus is None


def test_storage_and_volume_parsing() -> None:
    """Storage content lists split on commas; volumes keep vmid and protection."""
    s = StorageInfo.from_api({"type": "dir", "content": "iso,backup", "active": 1}, "local")
    assert (s.storage, s.content, s.active, s.enabled) == ("local", ("iso", "backup"), True, True)
    v = StorageVolume.from_api({"volid": "local:backup/x.tar", "vmid": "100", "protected": 1})
    assert (v.vmid, v.protected, v.ctime) == (100, True, None)


def test_task_entry_keeps_running_marker() -> None:
    """Active task entries carry RUNNING and no endtime; tokenid is optional."""
    e = TaskEntry.from_api(
        {
            "upid": "UPID:pve:00000001:00000002:6650A1B2:vzdump::agent@pve!a:",
            "starttime": 1716560306,
            "status": "RUNNING",
            "user": "agent@pve!a",
        }
    )
    assert (e.status, e.endtime, e.tokenid, e.id) == ("RUNNING", None, None, "")
    assert e.parsed_upid.vmid is None
