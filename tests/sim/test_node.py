"""Node-level endpoints: node status, nodes, storage, disks and permissions visibility."""

from __future__ import annotations

from tests.sim.helpers import Api

AUDITOR = "PVEAPIToken=auditor@pve!ro=ro-secret-1"
SPLIT = "PVEAPIToken=ops@pve!split=split-secret-1"


def test_node_status_needs_sys_audit(api: Api) -> None:
    """Node status answers PVE's fields with Sys.Audit and 403 without it."""
    st = api.data("GET", "/nodes/pve1/status")
    assert {"uptime", "loadavg", "memory", "rootfs", "pveversion", "cpuinfo"} <= set(st)
    assert st["pveversion"].startswith("pve-manager/9.2.11/")
    r = Api(api.sim, auth="PVEAPIToken=ops@pve!split=split-secret-1").get("/nodes/pve1/status")
    assert (r.status_code, r.reason) == (403, "Permission check failed (/nodes/pve1, Sys.Audit)")


def test_nodes_omit_stats_without_sys_audit(api: Api) -> None:
    """GET /nodes drops RRD stats for callers without Sys.Audit on the node."""
    entry = Api(api.sim, auth=SPLIT).data("GET", "/nodes")[0]
    assert entry["status"] == "online" and "maxmem" not in entry
    assert "maxmem" in api.data("GET", "/nodes")[0]


def test_storage_list_status_and_unknown_storage(api: Api) -> None:
    """Storage list/status report PVE's fields; an unknown storage is 400 'No such storage.'"""
    names = [s["storage"] for s in api.data("GET", "/nodes/pve1/storage")]
    assert names == ["local", "local-lvm", "pbs1"]
    only_images = api.data("GET", "/nodes/pve1/storage", params={"content": "images"})
    assert [s["storage"] for s in only_images] == ["local-lvm"]
    st = api.data("GET", "/nodes/pve1/storage/local/status")
    assert st["avail"] == st["total"] - st["used"] and st["active"] == 1
    r = api.get("/nodes/pve1/storage/nosuch/status")
    assert r.status_code == 400 and r.json()["errors"] == {"storage": "No such storage."}
    assert Api(api.sim, auth=SPLIT).data("GET", "/nodes/pve1/storage") == []


def test_storage_content_lists_templates(api: Api) -> None:
    """Storage content lists the scenario's volumes, filterable by content type."""
    vols = api.data("GET", "/nodes/pve1/storage/local/content", params={"content": "vztmpl"})
    assert [v["volid"] for v in vols] == ["local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"]


def test_disks_list_or_permission(api: Api) -> None:
    """disks/list works with Sys.Audit on / and is a bare 'Permission check failed' without."""
    disks = api.data("GET", "/nodes/pve1/disks/list")
    assert {d["devpath"] for d in disks} == {"/dev/nvme0n1", "/dev/sda"}
    assert Api(api.sim, auth=AUDITOR).get("/nodes/pve1/disks/list").status_code == 200
    r = Api(api.sim, auth="PVEAPIToken=ops@pve!full=full-secret-1")
    assert r.get("/nodes/pve1/disks/list").status_code == 200
    split = Api(api.sim, auth=SPLIT).get("/nodes/pve1/disks/list")
    assert (split.status_code, split.reason) == (403, "Permission check failed")


def test_numbers_typed_number_stay_strings(api: Api) -> None:
    """A number-typed key (cpulimit) is stored and returned as the string given."""
    api.data("PUT", "/nodes/pve1/lxc/102/config", data={"cpulimit": "1.5"})
    assert api.data("GET", "/nodes/pve1/lxc/102/config")["cpulimit"] == "1.5"


def test_cluster_resources_type_filter(api: Api) -> None:
    """cluster/resources filters by type and reports lock/tags only when set."""
    api.data("PUT", "/nodes/pve1/lxc/100/config", data={"tags": "web"})
    vms = {r["id"]: r for r in api.data("GET", "/cluster/resources", params={"type": "vm"})}
    assert set(vms) == {"lxc/100", "qemu/101", "lxc/102"}
    assert vms["lxc/100"]["tags"] == "web" and "lock" not in vms["lxc/100"]
    kinds = {r["type"] for r in api.data("GET", "/cluster/resources")}
    assert kinds == {"node", "lxc", "qemu", "storage"}
    r = api.get("/cluster/resources", params={"type": "bogus"})
    assert r.status_code == 400 and "type" in r.json()["errors"]


def test_other_tokens_tasks_need_sys_audit(api: Api) -> None:
    """A token without Sys.Audit on the node sees only its own tasks and gets 403 on others'."""
    upid = api.data("POST", "/nodes/pve1/qemu/101/status/start")
    api.sim.wait_task(upid)
    split = Api(api.sim, auth=SPLIT)
    assert split.data("GET", "/nodes/pve1/tasks") == []
    r = split.get(f"/nodes/pve1/tasks/{upid}/status")
    assert (r.status_code, r.reason) == (403, "Permission check failed (/nodes/pve1, Sys.Audit)")


def test_disks_smart_needs_sys_audit_on_root(api: Api) -> None:
    """disks/smart answers health and needs Sys.Audit on '/', not on the node."""
    smart = api.data("GET", "/nodes/pve1/disks/smart", params={"disk": "/dev/sda"})
    assert smart["health"] == "PASSED"
    only = api.data("GET", "/nodes/pve1/disks/smart",
                    params={"disk": "/dev/sda", "healthonly": "1"})
    assert only == {"health": "PASSED"}
    r = Api(api.sim, auth=SPLIT).get("/nodes/pve1/disks/smart", params={"disk": "/dev/sda"})
    assert (r.status_code, r.reason) == (403, "Permission check failed (/, Sys.Audit)")
