"""Scenario parsing of storages, backups, time zone and other-node guests."""

from __future__ import annotations

from typing import Any

import pytest

from felhom_agent.sim.pve import PveScenario, ScenarioError
from felhom_agent.sim.pve.privileges import expand_privileges
from tests.sim.helpers import scenario_dict

_BAD: list[tuple[dict[str, Any], str]] = [
    ({"timezone": "Mars/Olympus"}, "timezone"),
    ({"other_node_guests": [{"vmid": 100, "node": "pve2"}]}, "other_node_guests[0].vmid"),
    ({"storages": [{"storage": "s", "type": "floppy"}]}, "storages[0].type"),
    ({"storages": [{"storage": "s", "config": {"prune-backups": "keep-most=1"}}]},
     "storages[0].config.prune-backups"),
    ({"storages": [{"storage": "s", "config": {"password": "x"}}]},
     "storages[0].config.password"),
    ({"storages": [{"storage": "s", "volumes": [{"volid": "s:backup/x", "content": "backup"}]}]},
     "storages[0].volumes[0]"),
    ({"storages": [{"storage": "s", "backups": [{"vmid": 100, "type": "lxc"}]}]},
     "storages[0].backups[0].ctime"),
    ({"storages": [{"storage": "s", "backups": [{"vmid": 100, "type": "lxc", "ctime": 1,
                                                 "verification": "maybe"}]}]},
     "storages[0].backups[0].verification"),
    ({"guests": [{"vmid": 100, "type": "lxc", "backup_size": -1}]}, "guests[0].backup_size"),
]


@pytest.mark.parametrize(("patch", "key"), _BAD)
def test_bad_backup_scenarios_name_the_key(patch: dict[str, Any], key: str) -> None:
    """Each malformed backup-related value is refused with its key path."""
    d = scenario_dict()
    d.update(patch)
    with pytest.raises(ScenarioError) as info:
        PveScenario.from_dict(d)
    assert info.value.key == key, str(info.value)


def test_defaults_and_datastore_roles() -> None:
    """Default storages are local, local-lvm and pbs1 (PBS fields set); UTC; the datastore
    roles expand to PVE's privileges."""
    scen = PveScenario.default()
    assert [s.storage for s in scen.storages] == ["local", "local-lvm", "pbs1"]
    pbs = scen.storages[2]
    assert pbs.type == "pbs" and {"server", "datastore", "fingerprint", "encryption-key"} <= set(
        pbs.config)
    assert "backup" not in scen.storages[1].content.split(",")
    assert scen.timezone == "UTC" and scen.other_node_guests == {}
    assert expand_privileges(["PVEDatastoreUser"]) == {"Datastore.AllocateSpace",
                                                        "Datastore.Audit"}
    assert "Datastore.Allocate" in expand_privileges(["PVEDatastoreAdmin"])
