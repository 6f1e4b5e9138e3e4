"""Conformance of the simulator's storage and backup endpoints with the official PVE schema.

The backup schema extract (``pve/api-schema-backup.json`` in the shared reference directory,
from pve-docs 9.1.3) is read at test time, never copied into the repository; these are
cross-checks that run only when that directory is found (see :mod:`tests.shared_dir`):

* **parameters and permissions**: every served route that the extract lists has parameter
  names, types, required flags, enums and bounds, and a permission declaration, equal to the
  schema's;
* **returns**: every backup endpoint is called on a running simulator and its ``data`` is
  validated against the schema's ``returns`` (types, required members, nested objects).
"""

from __future__ import annotations

import json
import urllib.parse
from typing import Any

import pytest

from felhom_agent.sim.pve import PveSimulator
from felhom_agent.sim.pve.routes import ROUTES
from tests.shared_dir import CROSSCHECK, shared_path
from tests.sim.helpers import TIMEOUT, Api, make_scenario

pytestmark = CROSSCHECK

#: The endpoints issue 13 added; each must be served and in the schema extract.
BACKUP_ENDPOINTS = {
    ("POST", "/nodes/{node}/vzdump"),
    ("GET", "/nodes/{node}/vzdump/extractconfig"),
    ("GET", "/nodes/{node}/storage"),
    ("GET", "/nodes/{node}/storage/{storage}/status"),
    ("GET", "/nodes/{node}/storage/{storage}/content"),
    ("GET", "/nodes/{node}/storage/{storage}/content/{volume}"),
    ("PUT", "/nodes/{node}/storage/{storage}/content/{volume}"),
    ("DELETE", "/nodes/{node}/storage/{storage}/content/{volume}"),
    ("GET", "/nodes/{node}/storage/{storage}/prunebackups"),
    ("DELETE", "/nodes/{node}/storage/{storage}/prunebackups"),
    ("GET", "/storage"),
    ("GET", "/storage/{storage}"),
    ("GET", "/nodes/{node}/tasks"),
}


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    """The official backup schema extract, keyed by path then method."""
    path = shared_path("pve", "api-schema-backup.json")
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def _param_differences(schema: dict[str, Any]) -> list[str]:
    diffs: list[str] = []
    for route in ROUTES:
        info = schema.get(route.path, {}).get(route.method)
        if info is None:
            continue
        where = f"{route.method} {route.path}"
        if info.get("allowtoken") != 1:
            diffs.append(f"{where}: schema does not allow API tokens")
        props: dict[str, Any] = info.get("parameters", {}).get("properties", {})
        required = {k for k, v in props.items() if not v.get("optional")}
        ours_required = {p.name for p in route.params if not p.optional}
        if ours_required != required:
            diffs.append(f"{where}: required {sorted(ours_required)} vs {sorted(required)}")
        for param in route.params:
            spec = props.get(param.name)
            if spec is None:
                diffs.append(f"{where}: parameter {param.name!r} is not in the schema")
                continue
            if spec.get("type") != param.type:
                diffs.append(f"{where}: {param.name!r} type {param.type} vs {spec.get('type')}")
            if param.enum is not None and tuple(spec.get("enum", ())) != param.enum:
                diffs.append(f"{where}: {param.name!r} enum {param.enum} vs {spec.get('enum')}")
            for ours, key in ((param.minimum, "minimum"), (param.maximum, "maximum"),
                              (param.max_length, "maxLength")):
                if ours is not None and (key not in spec or float(spec[key]) != ours):
                    diffs.append(f"{where}: {param.name!r} {key} {ours} vs {spec.get(key)}")
        theirs = {k: v for k, v in info.get("permissions", {}).items() if k in ("check", "user")}
        if dict(route.permissions) != theirs:
            diffs.append(f"{where}: permission {dict(route.permissions)} vs {theirs}")
    return diffs


def _type_ok(value: Any, stype: str) -> bool:
    if stype == "boolean":  # PVE renders booleans as 0/1
        return value in (0, 1) and not isinstance(value, float)
    if stype == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if stype == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    expected: dict[str, type] = {"string": str, "object": dict, "array": list,
                                 "null": type(None)}
    return isinstance(value, expected[stype])


def validate(value: Any, spec: dict[str, Any], where: str = "data") -> list[str]:
    """Differences between ``value`` and a PVE ``returns`` schema (extra members allowed)."""
    if value is None and spec.get("optional"):
        return []
    stype = spec.get("type")
    if stype is None:
        return []
    if not _type_ok(value, stype):
        return [f"{where}: {value!r} is not {stype}"]
    errors: list[str] = []
    if stype == "object":
        for key, sub in spec.get("properties", {}).items():
            if key not in value:
                if not sub.get("optional"):
                    errors.append(f"{where}.{key}: required member missing")
                continue
            errors += validate(value[key], sub, f"{where}.{key}")
    if stype == "array" and "items" in spec:
        for i, item in enumerate(value):
            errors += validate(item, spec["items"], f"{where}[{i}]")
    if stype == "string" and "enum" in spec and value not in spec["enum"]:
        errors.append(f"{where}: {value!r} not in {spec['enum']}")
    return errors


def test_backup_routes_agree_with_official_schema(schema: dict[str, Any]) -> None:
    """Every served route in the backup extract has the schema's params and permissions."""
    diffs = _param_differences(schema)
    assert not diffs, "simulator differs from the PVE backup schema:\n" + "\n".join(diffs)


def test_every_backup_endpoint_is_served_and_in_the_schema(schema: dict[str, Any]) -> None:
    """The issue's endpoints are all routes of the simulator and of the official extract."""
    served = {(r.method, r.path) for r in ROUTES}
    assert served >= BACKUP_ENDPOINTS, sorted(BACKUP_ENDPOINTS - served)
    listed = {(m, p) for p, ms in schema.items() for m in ms}
    assert listed >= BACKUP_ENDPOINTS, sorted(BACKUP_ENDPOINTS - listed)


def test_the_check_detects_differences(schema: dict[str, Any]) -> None:
    """A doctored schema is reported (a green run means something)."""
    doctored = json.loads(json.dumps(schema))
    doctored["/storage/{storage}"]["GET"]["permissions"] = {"user": "all"}
    doctored["/nodes/{node}/vzdump"]["POST"]["parameters"]["properties"].pop("notes-template")
    diffs = _param_differences(doctored)
    assert any("GET /storage/{storage}: permission" in d for d in diffs)
    assert any("'notes-template' is not in the schema" in d for d in diffs)
    spec = schema["/nodes/{node}/storage/{storage}/content"]["GET"]["returns"]
    assert validate([{"volid": 1, "format": "tar", "size": 5}], spec) == [
        "data[0].volid: 1 is not string"]


def _returns(schema: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    spec: dict[str, Any] = schema[path][method]["returns"]
    return spec


def test_backup_endpoints_return_what_the_schema_says(schema: dict[str, Any]) -> None:
    """Each backup endpoint's answer, on a simulator holding local and PBS backups, is valid
    against the schema's ``returns``."""
    backups = [{"vmid": 100, "type": "lxc", "ctime": 1_767_225_600, "notes": "a\nb",
                "protected": True},
               {"vmid": 101, "type": "qemu", "ctime": 1_767_312_000}]
    pbs_backups = [{"vmid": 100, "type": "lxc", "ctime": 1_767_225_600, "size": None,
                    "verification": "ok", "encrypted": "1"}]
    storages = [{"storage": "local", "type": "dir", "content": "backup,iso",
                 "config": {"path": "/var/lib/vz", "prune-backups": "keep-last=1"},
                 "backups": backups},
                {"storage": "pbs1", "type": "pbs", "content": "backup",
                 "config": {"server": "192.0.2.10", "datastore": "d1"},
                 "backups": pbs_backups}]
    checks: list[str] = []
    with PveSimulator(make_scenario(storages=storages)) as sim:
        api = Api(sim)
        base = "/nodes/pve1/storage/local"
        volid = api.data("GET", f"{base}/content")[0]["volid"]
        vol = urllib.parse.quote(volid, safe="")
        calls: list[tuple[str, str, str, dict[str, Any]]] = [
            ("GET", "/nodes/{node}/storage", "/nodes/pve1/storage", {}),
            ("GET", "/nodes/{node}/storage/{storage}/status", f"{base}/status", {}),
            ("GET", "/nodes/{node}/storage/{storage}/content", f"{base}/content", {}),
            ("GET", "/nodes/{node}/storage/{storage}/content",
             "/nodes/pve1/storage/pbs1/content", {"params": {"content": "backup"}}),
            ("GET", "/nodes/{node}/storage/{storage}/content/{volume}",
             f"{base}/content/{vol}", {}),
            ("PUT", "/nodes/{node}/storage/{storage}/content/{volume}",
             f"{base}/content/{vol}", {"data": {"notes": "x"}}),
            ("GET", "/nodes/{node}/storage/{storage}/prunebackups",
             f"{base}/prunebackups", {}),
            ("GET", "/nodes/{node}/vzdump/extractconfig", "/nodes/pve1/vzdump/extractconfig",
             {"params": {"volume": volid}}),
            ("GET", "/storage", "/storage", {}),
            ("GET", "/storage/{storage}", "/storage/pbs1", {}),
            ("POST", "/nodes/{node}/vzdump", "/nodes/pve1/vzdump",
             {"data": {"vmid": "102", "storage": "local"}}),
            ("DELETE", "/nodes/{node}/storage/{storage}/prunebackups",
             f"{base}/prunebackups", {"params": {"vmid": "101"}}),
            ("DELETE", "/nodes/{node}/storage/{storage}/content/{volume}",
             f"{base}/content/{urllib.parse.quote(volid, safe='')}", {}),
            ("GET", "/nodes/{node}/tasks", "/nodes/pve1/tasks",
             {"params": {"typefilter": "vzdump", "source": "all"}}),
        ]
        for method, template, path, kw in calls:
            data = api.data(method, path, **kw)
            checks += validate(data, _returns(schema, method, template),
                               f"{method} {template}")
        for rec in sim.tasks():
            sim.wait_task(rec["upid"], TIMEOUT)
    assert not checks, "\n".join(checks)
