"""The simulated storage config: ``POST``/``DELETE /storage`` and ``is_mountpoint``.

A dir storage with ``is_mountpoint`` is online only while its path is a mount target in the
node's mount table (the scenario's ``mounts_file`` here, a scratch file in ``/proc/self/mounts``
format): unmounted, it reports ``active: 0`` and a backup to it fails like an activation
failure; mounted, it takes backups. Removing the storage entry keeps the data: the same id and
path added again list the backups again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from felhom_agent.sim.pve import PveSimulator
from tests.sim.helpers import Api, make_scenario

USB = {"storage": "usb1", "type": "dir", "path": "/mnt/felhom/usb1", "content": "backup",
       "is_mountpoint": "yes", "nodes": "pve1"}


def _entry(api: Api, name: str) -> dict[str, Any] | None:
    listed = api.data("GET", "/nodes/pve1/storage")
    return next((s for s in listed if s["storage"] == name), None)


def _mount(table: Path, path: str) -> None:
    table.write_text(f"/dev/sdb1 {path} ext4 rw,nosuid,nodev,noexec,noatime 0 0\n")


def test_mountpoint_storage_is_offline_until_mounted(tmp_path: Path) -> None:
    """POST /storage adds the entry (synchronous, no task); it is active only when mounted."""
    table = tmp_path / "mounts"
    table.write_text("")
    with PveSimulator(make_scenario(mounts_file=str(table))) as sim:
        api = Api(sim)
        assert api.data("POST", "/storage", data=USB) == {"storage": "usb1", "type": "dir"}
        assert sim.tasks() == []
        entry = _entry(api, "usb1")
        assert entry is not None and entry["active"] == 0 and entry["total"] == 0
        config = next(s for s in api.data("GET", "/storage") if s["storage"] == "usb1")
        assert config["is_mountpoint"] == "yes" and config["path"] == "/mnt/felhom/usb1"
        failed = api.run_task("POST", "/nodes/pve1/vzdump",
                              data={"vmid": "102", "storage": "usb1"})
        assert "is not online" in failed["exitstatus"]
        _mount(table, "/mnt/felhom/usb1")
        entry = _entry(api, "usb1")
        assert entry is not None and entry["active"] == 1 and entry["total"] > 0
        done = api.run_task("POST", "/nodes/pve1/vzdump", data={"vmid": "102", "storage": "usb1"})
        assert done["exitstatus"] == "OK"
        assert len(api.data("GET", "/nodes/pve1/storage/usb1/content")) == 1


def test_is_mountpoint_may_name_its_own_path(tmp_path: Path) -> None:
    """``is_mountpoint=<path>`` waits for that path, not the storage's own."""
    table = tmp_path / "mounts"
    _mount(table, "/mnt/felhom/usb1")
    with PveSimulator(make_scenario(mounts_file=str(table))) as sim:
        api = Api(sim)
        api.data("POST", "/storage", data={**USB, "path": "/mnt/felhom/usb1/pve",
                                           "is_mountpoint": "/mnt/felhom/usb1"})
        entry = _entry(api, "usb1")
        assert entry is not None and entry["active"] == 1


def test_duplicate_id_and_missing_storage_are_errors(tmp_path: Path) -> None:
    """A second POST with the same id and a DELETE of an unknown id fail like PVE (500)."""
    with PveSimulator(make_scenario(mounts_file=str(tmp_path / "none"))) as sim:
        api = Api(sim)
        api.data("POST", "/storage", data=USB)
        again = api.request("POST", "/storage", data=USB)
        assert again.status_code == 500 and "already defined" in again.reason
        gone = api.request("DELETE", "/storage/nope")
        assert gone.status_code == 500 and "does not exist" in gone.reason
        no_path = api.request("POST", "/storage", data={"storage": "x1", "type": "dir"})
        assert no_path.status_code == 400


def test_removing_the_entry_keeps_the_data(tmp_path: Path) -> None:
    """DELETE /storage drops the entry and its listing; adding it again shows the backups."""
    table = tmp_path / "mounts"
    _mount(table, "/mnt/felhom/usb1")
    with PveSimulator(make_scenario(mounts_file=str(table))) as sim:
        api = Api(sim)
        api.data("POST", "/storage", data=USB)
        api.run_task("POST", "/nodes/pve1/vzdump", data={"vmid": "102", "storage": "usb1"})
        assert api.data("DELETE", "/storage/usb1") is None
        assert _entry(api, "usb1") is None
        api.data("POST", "/storage", data=USB)
        assert len(api.data("GET", "/nodes/pve1/storage/usb1/content")) == 1


def test_storage_config_changes_need_datastore_allocate(tmp_path: Path) -> None:
    """A token without Datastore.Allocate on /storage gets 403 and nothing changes."""
    with PveSimulator(make_scenario(mounts_file=str(tmp_path / "none"))) as sim:
        api = Api(sim, auth="PVEAPIToken=snap@pve!only=snap-secret-1")
        denied = api.request("POST", "/storage", data=USB)
        assert denied.status_code == 403
        assert "/storage" in denied.reason
        assert api.request("DELETE", "/storage/local").status_code == 403
        assert "usb1" not in {s["storage"] for s in Api(sim).data("GET", "/storage")}


def test_storage_of_another_node_is_not_listed_here(tmp_path: Path) -> None:
    """``nodes`` leaving our node out hides the storage from /nodes/{node}/storage."""
    with PveSimulator(make_scenario(mounts_file=str(tmp_path / "none"))) as sim:
        api = Api(sim)
        api.data("POST", "/storage", data={**USB, "nodes": "pve2"})
        assert _entry(api, "usb1") is None
