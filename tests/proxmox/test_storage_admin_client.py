"""The client's storage-config calls against the PVE simulator (real HTTPS, real pin)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from felhom_agent.proxmox import ParameterError, ServerError
from felhom_agent.sim.pve import PveSimulator
from tests.sim.helpers import make_scenario
from tests.support.pve import sim_client


def test_add_and_delete_a_mountpoint_dir_storage(tmp_path: Path) -> None:
    """The storage is added with is_mountpoint=yes for our node, and removed again."""
    with PveSimulator(make_scenario(mounts_file=str(tmp_path / "mounts"))) as sim, \
            sim_client(sim) as client:
        client.add_mountpoint_dir_storage("usb1", "/mnt/felhom/usb1", content=["backup"],
                                          nodes=["pve1"])
        entry = next(c for c in client.storage_config() if c.storage == "usb1")
        assert (entry.type, entry.path, entry.is_mountpoint) == ("dir", "/mnt/felhom/usb1",
                                                                  "yes")
        assert entry.content == ("backup",) and entry.nodes == ("pve1",)
        listed = next(s for s in client.storages() if s.storage == "usb1")
        assert not listed.reachable and listed.total is None
        with pytest.raises(ServerError, match="already defined"):
            client.add_mountpoint_dir_storage("usb1", "/mnt/felhom/usb1", content=["backup"],
                                              nodes=["pve1"])
        client.delete_storage("usb1")
        assert "usb1" not in {c.storage for c in client.storage_config()}
        with pytest.raises(ServerError, match="does not exist"):
            client.delete_storage("usb1")


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"storage": "u"}, "storage"),
        ({"storage": "usb-"}, "storage"),
        ({"path": "mnt/x"}, "path"),
        ({"path": "/mnt/../etc"}, "path"),
        ({"path": "/mnt/a b"}, "path"),
        ({"content": []}, "content"),
        ({"content": ["backup", "everything"]}, "content"),
        ({"nodes": []}, "nodes"),
        ({"nodes": ["pve 1"]}, "nodes"),
    ],
)
def test_bad_arguments_are_refused_before_sending(kwargs: dict[str, Any], key: str) -> None:
    """A malformed id, path, content type or node list never reaches PVE."""
    args: dict[str, Any] = {"storage": "usb1", "path": "/mnt/felhom/usb1",
                            "content": ["backup"], "nodes": ["pve1"], **kwargs}
    with PveSimulator(make_scenario()) as sim, sim_client(sim) as client:
        with pytest.raises(ParameterError) as info:
            client.add_mountpoint_dir_storage(args.pop("storage"), args.pop("path"), **args)
        assert key in info.value.errors
        assert sim.served == 0
