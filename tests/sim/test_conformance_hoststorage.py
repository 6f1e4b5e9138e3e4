"""Conformance of the simulator's host-storage endpoints with the official PVE schema.

``POST /storage``, ``DELETE /storage/{storage}``, ``disks/list`` and ``disks/smart`` are in the
backup schema extract (``pve/api-schema-backup.json`` in the shared reference directory, read at
test time and never copied). Their parameters and permissions are compared by
``test_conformance_backup`` (every served route the extract lists); here each one is called on a
running simulator and its ``data`` validated against the schema's ``returns``. Cross-checks: they
run only when the shared directory is found (see :mod:`tests.shared_dir`).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from felhom_agent.sim.pve import PveSimulator
from felhom_agent.sim.pve.routes import ROUTES
from tests.shared_dir import CROSSCHECK, shared_path
from tests.sim.helpers import Api, make_scenario
from tests.sim.test_conformance_backup import validate

pytestmark = CROSSCHECK

#: The endpoints issue 15 added or relies on; each must be served and in the schema extract.
HOST_STORAGE_ENDPOINTS = {
    ("POST", "/storage"),
    ("DELETE", "/storage/{storage}"),
    ("GET", "/nodes/{node}/disks/list"),
    ("GET", "/nodes/{node}/disks/smart"),
}


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    """The official backup schema extract, keyed by path then method."""
    data: dict[str, Any] = json.loads(
        shared_path("pve", "api-schema-backup.json").read_text(encoding="utf-8"))
    return data


def test_host_storage_endpoints_are_served_and_in_the_schema(schema: dict[str, Any]) -> None:
    """Every host-storage endpoint is a route of the simulator and of the official extract."""
    served = {(r.method, r.path) for r in ROUTES}
    assert served >= HOST_STORAGE_ENDPOINTS, sorted(HOST_STORAGE_ENDPOINTS - served)
    listed = {(m, p) for p, ms in schema.items() for m in ms}
    assert listed >= HOST_STORAGE_ENDPOINTS, sorted(HOST_STORAGE_ENDPOINTS - listed)


def test_host_storage_endpoints_return_what_the_schema_says(schema: dict[str, Any]) -> None:
    """disks/list, disks/smart (ATA and NVMe, health only) and POST/DELETE /storage answer
    what the schema's ``returns`` describe."""
    checks: list[str] = []
    with PveSimulator(make_scenario()) as sim:
        api = Api(sim)
        calls: list[tuple[str, str, str, dict[str, Any]]] = [
            ("GET", "/nodes/{node}/disks/list", "/nodes/pve1/disks/list", {}),
            ("GET", "/nodes/{node}/disks/smart", "/nodes/pve1/disks/smart",
             {"params": {"disk": "/dev/sda"}}),
            ("GET", "/nodes/{node}/disks/smart", "/nodes/pve1/disks/smart",
             {"params": {"disk": "/dev/nvme0n1"}}),
            ("GET", "/nodes/{node}/disks/smart", "/nodes/pve1/disks/smart",
             {"params": {"disk": "/dev/sda", "healthonly": "1"}}),
            ("POST", "/storage", "/storage",
             {"data": {"storage": "usb1", "type": "dir", "path": "/mnt/felhom/usb1",
                       "content": "backup", "is_mountpoint": "yes", "nodes": "pve1"}}),
            ("DELETE", "/storage/{storage}", "/storage/usb1", {}),
        ]
        for method, template, path, kw in calls:
            data = api.data(method, path, **kw)
            checks += validate(data, schema[template][method]["returns"],
                               f"{method} {template}")
    assert not checks, "\n".join(checks)
