"""Conformance of the simulator's routes with the official PVE API schema subset.

The schema subset (``pve/api-schema-subset.json`` in the shared reference directory, extracted
from pve-docs 9.1.3) is read at test time, never copied into the repository. These are
cross-checks: they run only when that directory is found (see :mod:`tests.shared_dir`).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from felhom_agent.sim.pve.routes import ROUTES
from tests.shared_dir import CROSSCHECK, shared_path
from tests.sim.test_conformance_backup import BACKUP_ENDPOINTS
from tests.sim.test_conformance_hoststorage import HOST_STORAGE_ENDPOINTS
from tests.sim.test_conformance_provision import PROVISION_ENDPOINTS

pytestmark = CROSSCHECK


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    """The official schema subset, keyed by path then method."""
    path = shared_path("pve", "api-schema-subset.json")
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def _route_differences(schema: dict[str, Any]) -> list[str]:
    diffs: list[str] = []
    for route in ROUTES:
        where = f"{route.method} {route.path}"
        info = schema.get(route.path, {}).get(route.method)
        if info is None and (route.method, route.path) in (
                BACKUP_ENDPOINTS | PROVISION_ENDPOINTS | HOST_STORAGE_ENDPOINTS):
            continue  # checked against the backup extract (test_conformance_backup, _provision,
            # _hoststorage)
        if info is None:
            diffs.append(f"{where}: not in the official schema")
            continue
        if info.get("allowtoken") != 1:
            diffs.append(f"{where}: schema does not allow API tokens")
        props: dict[str, Any] = info.get("parameters", {}).get("properties", {})
        required = {k for k, v in props.items() if not v.get("optional")}
        ours = {p.name: p for p in route.params}
        ours_required = {p.name for p in route.params if not p.optional}
        if ours_required != required:
            diffs.append(f"{where}: required params differ: simulator {sorted(ours_required)}"
                         f" vs schema {sorted(required)}")
        for name, param in ours.items():
            spec = props.get(name)
            if spec is None:
                diffs.append(f"{where}: parameter {name!r} is not in the schema")
                continue
            if spec.get("type") != param.type:
                diffs.append(f"{where}: {name!r} type {param.type} vs schema {spec.get('type')}")
            if param.enum is not None and tuple(spec.get("enum", ())) != param.enum:
                diffs.append(f"{where}: {name!r} enum {param.enum} vs schema {spec.get('enum')}")
            for ours_val, key in ((param.minimum, "minimum"), (param.maximum, "maximum"),
                                  (param.max_length, "maxLength")):
                if ours_val is not None and (key not in spec or float(spec[key]) != ours_val):
                    diffs.append(f"{where}: {name!r} {key} {ours_val} vs schema {spec.get(key)}")
        theirs = {k: v for k, v in info.get("permissions", {}).items() if k in ("check", "user")}
        if dict(route.permissions) != theirs:
            diffs.append(f"{where}: permission {dict(route.permissions)} vs schema {theirs}")
    return diffs


def test_routes_agree_with_official_schema(schema: dict[str, Any]) -> None:
    """Every served endpoint's parameter names, types, required set and permission match
    the official schema; all differences are listed in the failure message."""
    diffs = _route_differences(schema)
    assert not diffs, "simulator differs from the PVE schema:\n" + "\n".join(diffs)


def test_conformance_covers_the_endpoints_of_the_facts_file(schema: dict[str, Any]) -> None:
    """The simulator serves every schema path/method of the facts file except the two it
    deliberately leaves out (node power, volume allocation)."""
    served = {(r.method, r.path) for r in ROUTES}
    left_out = {
        ("POST", "/nodes/{node}/status"), ("POST", "/nodes/{node}/storage/{storage}/content"),
    }
    missing = sorted({(m, p) for p, ms in schema.items() for m in ms} - served - left_out)
    assert not missing, f"schema endpoints not served: {missing}"


def test_conformance_check_detects_a_difference(schema: dict[str, Any]) -> None:
    """The comparison itself reports a wrong permission (so a green run means something)."""
    doctored = json.loads(json.dumps(schema))
    doctored["/version"]["GET"]["permissions"] = {"check": ["perm", "/", ["Sys.Audit"]]}
    doctored["/nodes/{node}/status"]["GET"]["parameters"]["properties"]["extra"] = {
        "type": "string"}
    diffs = _route_differences(doctored)
    assert any("GET /version: permission" in d for d in diffs)
    assert any("required params differ" in d for d in diffs)
