"""Scenario parsing for storages and the backups they hold at start.

A storage is ``{"storage", "type", "content", "total", "used", "avail"?, "shared", "active",
"enabled", "config", "volumes", "backups"}``. ``config`` holds the storage.cfg keys that
``GET /storage`` returns (``path``, ``server``, ``datastore``, ``fingerprint``,
``encryption-key``, ``prune-backups``, ``max-protected-backups`` ...). ``volumes`` are plain
non-backup volumes returned as given; ``backups`` are backup volumes whose volid the simulator
derives from the storage type (see :mod:`felhom_agent.sim.pve.storage`) unless ``volid`` names
a renamed file explicitly.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from felhom_agent.sim.pve.prune import parse_keep
from felhom_agent.sim.pve.scenario_read import Reader, scenario_error
from felhom_agent.vmids import VMID_RANGE, is_vmid

__all__ = ["STORAGE_TYPES", "BackupSpec", "StorageSpec", "parse_storage"]

#: ``GET /storage?type=`` enumeration (pve-docs 9.1.3).
STORAGE_TYPES = ("btrfs", "cephfs", "cifs", "dir", "esxi", "iscsi", "iscsidirect", "lvm",
                 "lvmthin", "nfs", "pbs", "rbd", "zfs", "zfspool")
_CONFIG_KEYS = ("path", "server", "port", "datastore", "username", "fingerprint", "namespace",
                "encryption-key", "master-pubkey", "prune-backups", "max-protected-backups",
                "is_mountpoint", "nodes", "thinpool", "vgname", "export", "share", "pool",
                "mkdir", "comment")
_VERIFY_STATES = ("ok", "failed")


@attrs.frozen
class BackupSpec:
    """A backup present at start (``size`` None on PBS = PBS reported no size)."""

    vmid: int
    type: str
    ctime: int
    size: int | None = 1_073_741_824
    notes: str | None = None
    protected: bool = False
    encrypted: str | None = None
    verification: str | None = None
    volid: str | None = None
    config: str | None = None


@attrs.frozen
class StorageSpec:
    """A storage with its type, content types, capacity, storage.cfg keys and volumes."""

    storage: str
    type: str
    content: str
    total: int
    used: int
    avail: int | None = None
    shared: bool = False
    active: bool = True
    enabled: bool = True
    config: Mapping[str, str | int] = attrs.field(factory=dict)
    volumes: tuple[Mapping[str, Any], ...] = ()
    backups: tuple[BackupSpec, ...] = ()


def _backup(data: object, key: str) -> BackupSpec:
    r = Reader(data, key, ("vmid", "type", "ctime", "size", "notes", "protected", "encrypted",
                           "verification", "volid", "config"))
    vmid = r.require("vmid", (int,), f"a vmid {VMID_RANGE}")
    if not is_vmid(vmid):
        raise scenario_error(r.path("vmid"), vmid, f"must be {VMID_RANGE}")
    gtype = r.require("type", (str,), "qemu or lxc")
    if gtype not in ("qemu", "lxc"):
        raise scenario_error(r.path("type"), gtype, "must be one of qemu, lxc")
    ctime = r.require("ctime", (int,), "epoch seconds")
    if ctime <= 0:
        raise scenario_error(r.path("ctime"), ctime, "must be > 0")
    size = r.get("size", (int, type(None)), 1_073_741_824, "bytes or null")
    if size is not None and size < 0:
        raise scenario_error(r.path("size"), size, "must be >= 0")
    verification = r.get("verification", (str,), None, "ok or failed")
    if verification is not None and verification not in _VERIFY_STATES:
        raise scenario_error(r.path("verification"), verification, "must be ok or failed")
    return BackupSpec(
        vmid=vmid, type=gtype, ctime=ctime, size=size,
        notes=r.get("notes", (str,), None, "a string"),
        protected=r.get("protected", (bool,), False, "true or false"),
        encrypted=r.get("encrypted", (str,), None, "a key fingerprint or '1'"),
        verification=verification,
        volid=r.get("volid", (str,), None, "a volume id"),
        config=r.get("config", (str,), None, "the archived config text"),
    )


def _storage_config(value: object, key: str) -> dict[str, str | int]:
    r = Reader(value, key, _CONFIG_KEYS)
    out: dict[str, str | int] = {}
    for k, v in r.data.items():
        if isinstance(v, bool) or not isinstance(v, (str, int)):
            raise scenario_error(r.path(k), v, "must be a string or an integer")
        out[k] = v
    prune = out.get("prune-backups")
    if prune is not None:
        try:
            parse_keep(str(prune))
        except ValueError as err:
            raise scenario_error(r.path("prune-backups"), prune, str(err)) from None
    return out


def parse_storage(data: object, key: str) -> StorageSpec:
    """Parse one ``storages[i]`` object."""
    r = Reader(data, key, ("storage", "type", "content", "total", "used", "avail", "shared",
                           "active", "enabled", "config", "volumes", "backups"))
    stype = r.get("type", (str,), "dir", "a storage type")
    if stype not in STORAGE_TYPES:
        raise scenario_error(r.path("type"), stype, f"must be one of {', '.join(STORAGE_TYPES)}")
    vols = r.get("volumes", (list,), [], "a list of volume objects")
    for i, v in enumerate(vols):
        if not isinstance(v, Mapping) or not isinstance(v.get("volid"), str):
            raise scenario_error(f"{r.path('volumes')}[{i}]", v, "must be an object with a volid")
        if v.get("content") == "backup":
            raise scenario_error(f"{r.path('volumes')}[{i}]", v,
                                 "backup volumes go in 'backups'")
    total = r.get("total", (int,), 100 * 2**30, "bytes")
    used = r.get("used", (int,), 10 * 2**30, "bytes")
    avail = r.get("avail", (int,), None, "bytes")
    for name, value in (("total", total), ("used", used), ("avail", avail)):
        if value is not None and value < 0:
            raise scenario_error(r.path(name), value, "must be >= 0")
    raw_backups = r.get("backups", (list,), [], "a list of backup objects")
    return StorageSpec(
        storage=r.require("storage", (str,), "a storage id"),
        type=stype,
        content=r.get("content", (str,), "images,rootdir", "a content list"),
        total=total, used=used, avail=avail,
        shared=r.get("shared", (bool,), False, "true or false"),
        active=r.get("active", (bool,), True, "true or false"),
        enabled=r.get("enabled", (bool,), True, "true or false"),
        config=_storage_config(r.get("config", (dict,), {}, "an object"), r.path("config")),
        volumes=tuple(vols),
        backups=tuple(_backup(b, f"{r.path('backups')}[{i}]")
                      for i, b in enumerate(raw_backups)),
    )
