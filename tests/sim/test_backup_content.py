"""Backup volumes over HTTPS: the silent permission filter, details, notes/protection, delete,
storage.cfg and status of an unreachable storage."""

from __future__ import annotations

import urllib.parse
from typing import Any

from felhom_agent.sim.pve import PveSimulator
from tests.sim.backup_helpers import AUDITOR, BACKUP_100, BACKUP_USER, backup_scenario, running
from tests.sim.helpers import TIMEOUT, Api

_LOCAL = {"storage": "local", "type": "dir", "content": "backup,iso",
          "total": 100 * 2**30, "used": 20 * 2**30,
          "config": {"path": "/var/lib/vz", "prune-backups": "keep-last=2"},
          "backups": [{"vmid": 100, "type": "lxc", "ctime": 1_767_225_600, "notes": "n1\nn2"},
                      {"vmid": 101, "type": "qemu", "ctime": 1_767_225_600, "size": 5 * 2**30},
                      {"vmid": 100, "type": "lxc", "ctime": 1_767_139_200,
                       "protected": True}]}
_PBS = {"storage": "pbs1", "type": "pbs", "content": "backup",
        "total": 1000 * 2**30, "used": 100 * 2**30,
        "config": {"server": "192.0.2.10", "datastore": "d1", "fingerprint": "ab:cd"},
        "backups": [{"vmid": 100, "type": "lxc", "ctime": 1_767_225_600, "size": None,
                     "verification": "ok", "encrypted": "1"},
                    {"vmid": 101, "type": "qemu", "ctime": 1_767_225_600}]}


def _sim() -> Any:
    return running(backup_scenario(storages=[_LOCAL, _PBS]))


def _vol(volid: str) -> str:
    return urllib.parse.quote(volid, safe="")


def _volids(api: Api, storage: str = "local") -> list[str]:
    return [v["volid"] for v in api.data("GET", f"/nodes/pve1/storage/{storage}/content",
                                         params={"content": "backup"})]


def test_listing_is_silently_filtered_by_privilege() -> None:
    """Datastore.Allocate sees every backup; AllocateSpace + VM.Backup sees its guests';
    Datastore.Audit alone sees the storage but an empty listing -- never a 403."""
    with _sim() as sim:
        full = _volids(Api(sim))
        assert len(full) == 3
        assert full == sorted(full)
        assert _volids(Api(sim, auth=BACKUP_USER)) == full
        mine = _volids(Api(sim, auth=BACKUP_100))
        assert mine == [v for v in full if "-100-" in v]
        auditor = Api(sim, auth=AUDITOR)
        assert "local" in [s["storage"] for s in auditor.data("GET", "/nodes/pve1/storage")]
        r = auditor.get("/nodes/pve1/storage/local/content", params={"content": "backup"})
        assert r.status_code == 200 and r.json()["data"] == []
        vmid_only = Api(sim).data("GET", "/nodes/pve1/storage/local/content",
                                  params={"content": "backup", "vmid": "101"})
        assert [v["vmid"] for v in vmid_only] == [101]


def test_pbs_listing_size_one_verification_and_encryption() -> None:
    """PBS items: size 1 when PBS reported none, ``verification`` {state, upid}, encrypted."""
    with _sim() as sim:
        item, other = Api(sim).data("GET", "/nodes/pve1/storage/pbs1/content")
        assert other["format"] == "pbs-vm" and "verification" not in other
        assert item["size"] == 1 and item["encrypted"] == "1"
        assert item["verification"]["state"] == "ok"
        assert item["verification"]["upid"].startswith("UPID:")
        assert item["volid"] == "pbs1:backup/ct/100/2026-01-01T00:00:00Z"


def test_volume_details_encoded_relative_and_forbidden() -> None:
    """content/{volume} answers for the encoded or unencoded volid and for a name relative to
    the storage; without access it is a 403 naming the missing privilege."""
    with _sim() as sim:
        api = Api(sim)
        v101 = next(v for v in _volids(api) if "-101-" in v)
        detail = api.data("GET", f"/nodes/pve1/storage/local/content/{_vol(v101)}")
        assert detail == api.data("GET", f"/nodes/pve1/storage/local/content/{v101}")
        assert detail == api.data("GET",
                                  f"/nodes/pve1/storage/local/content/{v101.split(':')[1]}")
        assert detail["size"] == 5 * 2**30 and detail["format"] == "vma.zst"
        assert detail["path"] == "/var/lib/vz/dump/" + v101.split("/", 1)[1]
        r = Api(sim, auth=BACKUP_100).get(f"/nodes/pve1/storage/local/content/{_vol(v101)}")
        assert (r.status_code, r.reason) == (403, "Permission check failed (/vms/101, VM.Backup)")
        r = api.get(f"/nodes/pve1/storage/pbs1/content/{_vol(v101)}")
        assert r.status_code == 400 and "storage ID mismatch" in r.json()["errors"]["volume"]


def test_update_notes_and_protection_with_the_protected_limit() -> None:
    """PUT sets notes and protection; without Datastore.Allocate at most 5 protected backups
    per guest (here: a configured limit of 1 already reached)."""
    local = {**_LOCAL, "config": {"path": "/var/lib/vz", "max-protected-backups": 1}}
    with running(backup_scenario(storages=[local])) as sim:
        api = Api(sim, auth=BACKUP_USER)
        vol = next(v for v in _volids(api) if "-100-" in v and "2026_01_01" in v)
        assert api.data("PUT", f"/nodes/pve1/storage/local/content/{_vol(vol)}",
                        data={"notes": "felhom op=9\nline 2"}) is None
        item = next(v for v in api.data("GET", "/nodes/pve1/storage/local/content")
                    if v["volid"] == vol)
        assert item["notes"] == "felhom op=9"
        r = api.put(f"/nodes/pve1/storage/local/content/{_vol(vol)}", data={"protected": "1"})
        assert r.status_code == 500 and r.reason == (
            "The number of protected backups per guest is limited to 1 on storage 'local'")
        v101 = next(v for v in _volids(api) if "-101-" in v)
        r = Api(sim, auth=BACKUP_100).put(f"/nodes/pve1/storage/local/content/{_vol(v101)}",
                                          data={"notes": "x"})
        assert (r.status_code, r.reason) == (403, "Permission check failed (/vms/101, VM.Backup)")


def test_delete_runs_imgdel_frees_dir_space_and_refuses_protected() -> None:
    """DELETE answers an ``imgdel`` UPID with id ``<vmid>@<storage>``; dir space comes back
    at once; a protected backup fails inside the task; ``delay`` answers null when done."""
    with _sim() as sim:
        api = Api(sim, auth=BACKUP_USER)
        before = sim.storage("local")
        vols = _volids(api)
        v101 = next(v for v in vols if "-101-" in v)
        protected = next(v for v in vols if "-100-" in v and "2025_12_31" in v)
        upid = api.data("DELETE", f"/nodes/pve1/storage/local/content/{_vol(v101)}")
        assert upid.split(":")[5:7] == ["imgdel", "101@local"]
        rec = sim.wait_task(upid, TIMEOUT)
        assert rec["exitstatus"] == "OK" and f"Removed volume '{v101}'" in rec["log"]
        assert v101 not in _volids(api)
        assert sim.storage("local")["avail"] == before["avail"] + 5 * 2**30
        rec = api.run_task("DELETE", f"/nodes/pve1/storage/local/content/{_vol(protected)}")
        assert rec["exitstatus"] == ("cannot remove protected volume 'backup/"
                                     f"{protected.split('/', 1)[1]}' on 'local'")
        r = api.delete(f"/nodes/pve1/storage/local/content/{_vol(protected)}",
                       params={"delay": "5"})
        assert r.status_code == 500 and r.reason.startswith("cannot remove protected volume")
        last = next(v for v in _volids(api) if v != protected)
        r = api.delete(f"/nodes/pve1/storage/local/content/{_vol(last)}", params={"delay": "5"})
        assert r.status_code == 200 and r.json()["data"] is None


def test_pbs_delete_frees_space_only_at_garbage_collection() -> None:
    """Removing a PBS snapshot leaves ``used`` until the datastore's GC runs."""
    with _sim() as sim:
        api = Api(sim)
        vol = _volids(api, "pbs1")[1]
        used = sim.storage("pbs1")["used"]
        rec = api.run_task("DELETE", f"/nodes/pve1/storage/pbs1/content/{_vol(vol)}")
        assert rec["exitstatus"] == "OK" and vol not in _volids(api, "pbs1")
        assert sim.storage("pbs1")["used"] == used
        assert sim.run_gc("pbs1") == 2**30
        assert sim.storage("pbs1")["used"] == used - 2**30


def test_storage_config_and_permissions() -> None:
    """GET /storage lists storage.cfg entries the token may audit (``type`` filter); GET
    /storage/{id} needs Datastore.Allocate; /access/permissions names the backup privileges."""
    with _sim() as sim:
        [pbs] = Api(sim).data("GET", "/storage", params={"type": "pbs"})
        assert (pbs["server"], pbs["datastore"], pbs["fingerprint"]) == (
            "192.0.2.10", "d1", "ab:cd")
        assert len(pbs["digest"]) == 40
        backup = Api(sim, auth=BACKUP_USER)
        assert [s["storage"] for s in backup.data("GET", "/storage")] == ["local", "pbs1"]
        r = backup.get("/storage/pbs1")
        assert (r.status_code, r.reason) == (
            403, "Permission check failed (/storage/pbs1, Datastore.Allocate)")
        perms = backup.data("GET", "/access/permissions", params={"path": "/storage/pbs1"})
        assert perms == {"/storage/pbs1": {"Datastore.AllocateSpace": 1, "Datastore.Audit": 1}}
        perms = backup.data("GET", "/access/permissions", params={"path": "/vms/100"})
        assert "VM.Backup" in perms["/vms/100"]


def test_unreachable_storage_reports_inactive_not_empty(sim: PveSimulator) -> None:
    """An inactive storage is ``active: 0`` with zero sizes in the list and status, its
    content listing fails (500), and cluster resources call it ``unknown``."""
    api = Api(sim)
    sim.set_storage("pbs1", active=False)
    [st] = api.data("GET", "/nodes/pve1/storage", params={"storage": "pbs1"})
    assert (st["active"], st["total"], st["avail"]) == (0, 0, 0)
    assert api.data("GET", "/nodes/pve1/storage/pbs1/status")["active"] == 0
    r = api.get("/nodes/pve1/storage/pbs1/content")
    assert r.status_code == 500 and "pbs1" in r.reason
    assert api.data("GET", "/nodes/pve1/storage/local-lvm/content",
                    params={"content": "backup"}) == []
    res = api.data("GET", "/cluster/resources", params={"type": "storage"})
    assert {e["storage"]: e["status"] for e in res}["pbs1"] == "unknown"
