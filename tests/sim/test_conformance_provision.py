"""Conformance of the simulator's restore, clone, template and nextid endpoints with the
official PVE schema extract (``pve/api-schema-backup.json`` in the shared reference directory,
read at test time, never copied; cross-checks run only when that directory is found).

Parameters and permissions of these routes are compared by
``test_conformance_backup.test_backup_routes_agree_with_official_schema`` (it covers every
served route the extract lists); here: every endpoint is served and listed, and each answer
validates against the schema's ``returns`` -- except ``/cluster/nextid``, whose integer PVE
sends as a JSON string (checked as such).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from felhom_agent.sim.pve import PveSimulator
from felhom_agent.sim.pve.routes import ROUTES
from tests.shared_dir import CROSSCHECK, shared_path
from tests.sim.helpers import TIMEOUT, Api, make_scenario
from tests.sim.test_conformance_backup import _param_differences, validate

pytestmark = CROSSCHECK

#: The endpoints issue 14 added (POST lxc/qemu gained the restore parameters).
PROVISION_ENDPOINTS = {
    ("POST", "/nodes/{node}/qemu/{vmid}/clone"),
    ("POST", "/nodes/{node}/lxc/{vmid}/clone"),
    ("POST", "/nodes/{node}/qemu/{vmid}/template"),
    ("POST", "/nodes/{node}/lxc/{vmid}/template"),
    ("GET", "/cluster/nextid"),
    ("POST", "/nodes/{node}/lxc"),
    ("POST", "/nodes/{node}/qemu"),
}


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    """The official backup/provisioning schema extract, keyed by path then method."""
    data: dict[str, Any] = json.loads(
        shared_path("pve", "api-schema-backup.json").read_text(encoding="utf-8"))
    return data


def test_every_provision_endpoint_is_served_and_in_the_schema(schema: dict[str, Any]) -> None:
    """The issue's endpoints are routes of the simulator and of the official extract."""
    served = {(r.method, r.path) for r in ROUTES}
    assert served >= PROVISION_ENDPOINTS, sorted(PROVISION_ENDPOINTS - served)
    listed = {(m, p) for p, ms in schema.items() for m in ms}
    assert listed >= PROVISION_ENDPOINTS, sorted(PROVISION_ENDPOINTS - listed)


def test_provision_routes_agree_with_the_schema(schema: dict[str, Any]) -> None:
    """Names, types, required flags, bounds and the permission declarations (the clone's
    ``and``/``or``/``require_param`` check included) equal the schema's."""
    mine = {(m, p) for m, p in PROVISION_ENDPOINTS}
    diffs = [d for d in _param_differences(schema)
             if any(d.startswith(f"{m} {p}:") for m, p in mine)]
    assert not diffs, "\n".join(diffs)
    doctored = json.loads(json.dumps(schema))
    clone = doctored["/nodes/{node}/lxc/{vmid}/clone"]["POST"]
    clone["permissions"]["check"][2][2] = ["perm", "/pool/{pool}", ["VM.Allocate"]]
    clone["parameters"]["properties"].pop("hostname")
    found = _param_differences(doctored)
    assert any("POST /nodes/{node}/lxc/{vmid}/clone: permission" in d for d in found)
    assert any("'hostname' is not in the schema" in d for d in found)


def test_provision_endpoints_return_what_the_schema_says(schema: dict[str, Any]) -> None:
    """Restore (lxc and qemu), clone (both), template (both: a UPID and null) and nextid
    answer data valid against the schema's ``returns``."""
    backups = [{"vmid": 100, "type": "lxc", "ctime": 1_767_225_600},
               {"vmid": 101, "type": "qemu", "ctime": 1_767_225_600}]
    storages = [{"storage": "local", "type": "dir", "content": "backup,vztmpl",
                 "config": {"path": "/var/lib/vz"}, "backups": backups},
                {"storage": "local-lvm", "type": "lvmthin", "content": "images,rootdir"}]
    problems: list[str] = []
    with PveSimulator(make_scenario(storages=storages)) as sim:
        api = Api(sim)
        lxc_vol, qemu_vol = (b["volid"] for b in sorted(sim.backups("local"),
                                                        key=lambda b: b["subtype"]))
        calls: list[tuple[str, str, str, dict[str, Any]]] = [
            ("POST", "/nodes/{node}/lxc", "/nodes/pve1/lxc",
             {"data": {"vmid": "300", "ostemplate": lxc_vol, "restore": "1",
                       "storage": "local-lvm"}}),
            ("POST", "/nodes/{node}/qemu", "/nodes/pve1/qemu",
             {"data": {"vmid": "301", "archive": qemu_vol}}),
            ("POST", "/nodes/{node}/lxc/{vmid}/clone", "/nodes/pve1/lxc/102/clone",
             {"data": {"newid": "302", "hostname": "c302"}}),
            ("POST", "/nodes/{node}/qemu/{vmid}/clone", "/nodes/pve1/qemu/101/clone",
             {"data": {"newid": "303", "name": "v303"}}),
        ]
        for method, template, path, kw in calls:
            upid = api.data(method, path, **kw)
            problems += validate(upid, schema[template][method]["returns"], template)
            assert sim.wait_task(upid, TIMEOUT)["exitstatus"] == "OK"
        for gtype, vmid in (("qemu", 303), ("lxc", 302)):
            template = f"/nodes/{{node}}/{gtype}/{{vmid}}/template"
            data = api.data("POST", f"/nodes/pve1/{gtype}/{vmid}/template")
            problems += validate(data, schema[template]["POST"]["returns"], template)
        nextid = api.data("GET", "/cluster/nextid")
        assert schema["/cluster/nextid"]["GET"]["returns"]["type"] == "integer"
        assert isinstance(nextid, str) and nextid == "103"
        for rec in sim.tasks():
            sim.wait_task(rec["upid"], TIMEOUT)
    assert not problems, "\n".join(problems)
