"""The scenario: everything a simulated PVE host starts with, parsed strictly.

A scenario is plain JSON (see ``SCENARIO.md``): the node, the modelled PVE version, tokens
with their user's and their own privileges by ACL path, guests, storages, disks, task
durations, timing knobs and faults. Parsing is strict in the project's style: an unknown
key, a wrong type or a bad value raises :class:`ScenarioError` naming the key path and the
value, so ``python -m felhom_agent.sim pve --scenario FILE`` can exit 2 with a useful line.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import attrs

from felhom_agent.secret import Secret
from felhom_agent.sim.pve.defaults import default_disks, default_scenario_dict, default_storages
from felhom_agent.sim.pve.faults import Fault
from felhom_agent.sim.pve.privileges import TOKEN_ID_RE, Grants, expand_privileges
from felhom_agent.sim.pve.scenario_read import Reader as _Reader
from felhom_agent.sim.pve.scenario_read import ScenarioError
from felhom_agent.sim.pve.scenario_read import scenario_error as _err
from felhom_agent.sim.pve.scenario_storage import StorageSpec, parse_storage
from felhom_agent.vmids import VMID_MAX, VMID_MIN, VMID_RANGE

__all__ = [
    "DEFAULT_PVE_VERSION",
    "GuestSpec",
    "PveScenario",
    "ScenarioError",
    "SnapshotSpec",
    "StorageSpec",
    "TokenSpec",
]

#: pve-manager version whose behaviour is modelled (``docs/pve-facts.md``).
DEFAULT_PVE_VERSION = "9.2.11"

QEMU_LOCKS = ("backup", "clone", "create", "migrate", "rollback", "snapshot",
              "snapshot-delete", "suspending", "suspended", "destroyed")
LXC_LOCKS = ("backup", "create", "destroyed", "disk", "fstrim", "migrate", "mounted",
             "rollback", "snapshot", "snapshot-delete")
_NODE_RE = re.compile(r"^[a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?$")
_SNAP_RE = re.compile(r"^[a-zA-Z][a-zA-Z0-9_\-]{1,39}$")


@attrs.frozen
class TokenSpec:
    """An API token: its id, secret, privsep flag and both ACL grant sets."""

    token_id: str
    secret: Secret = attrs.field(repr=False)
    privsep: bool
    user_grants: Grants
    token_grants: Grants


@attrs.frozen
class SnapshotSpec:
    """A snapshot present at start (its config defaults to the guest's config)."""

    name: str
    description: str = ""
    snaptime: int = 1_700_000_000
    parent: str | None = None
    config: Mapping[str, Any] | None = None


@attrs.frozen
class GuestSpec:
    """A guest present at start; ``config`` holds raw config-file values."""

    vmid: int
    type: str
    name: str
    status: str
    config: Mapping[str, Any]
    snapshots: tuple[SnapshotSpec, ...] = ()
    ha_managed: bool = False
    #: bytes a backup of this guest writes; seconds it takes (None: the vzdump duration).
    backup_size: int = 1_073_741_824
    backup_duration_s: float | None = None
    #: the resource pool the guest is a member of (one of the scenario's ``pools``).
    pool: str | None = None
    #: the pid ``status/current`` reports while it runs (None: 100000 + vmid).
    pid: int | None = None


def _grants(value: object, key: str) -> Grants:
    if not isinstance(value, Mapping):
        raise _err(key, value, "must be an object mapping ACL path to a list of privileges")
    out: dict[str, frozenset[str]] = {}
    for path, privs in value.items():
        k = f"{key}[{path!r}]"
        if not isinstance(path, str) or not path.startswith("/"):
            raise _err(k, path, "ACL path must start with '/'")
        if not isinstance(privs, list) or not all(isinstance(p, str) for p in privs):
            raise _err(k, privs, "must be a list of privilege or role names")
        try:
            out[path.rstrip("/") or "/"] = expand_privileges(privs)
        except KeyError as err:
            raise _err(k, err.args[0], "unknown privilege or role") from None
    return Grants(out)


def _token(data: object, key: str) -> TokenSpec:
    r = _Reader(data, key, ("id", "secret", "privsep", "user_privileges", "token_privileges"))
    token_id = r.require("id", (str,), "USER@REALM!NAME")
    if not TOKEN_ID_RE.match(token_id):
        raise _err(r.path("id"), token_id, "is not a token id USER@REALM!NAME")
    secret = r.require("secret", (str,), "a non-empty string")
    if not secret or ";" in secret:
        raise _err(r.path("secret"), "<redacted>", "must be non-empty and contain no ';'")
    return TokenSpec(
        token_id=token_id,
        secret=Secret(secret),
        privsep=r.get("privsep", (bool,), True, "true or false"),
        user_grants=_grants(r.get("user_privileges", (dict,), {}, "an object"),
                            r.path("user_privileges")),
        token_grants=_grants(r.get("token_privileges", (dict,), {}, "an object"),
                             r.path("token_privileges")),
    )


def _config(value: object, key: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise _err(key, value, "must be an object of config keys")
    for k, v in value.items():
        if not isinstance(v, (str, int, float)) or isinstance(v, bool):
            raise _err(f"{key}.{k}", v, "config values must be strings or numbers")
    return dict(value)


def _snapshot(data: object, key: str) -> SnapshotSpec:
    r = _Reader(data, key, ("name", "description", "snaptime", "parent", "config"))
    name = r.require("name", (str,), "a snapshot name")
    if not _SNAP_RE.match(name) or name.lower() in ("current", "pending", "vzdump"):
        raise _err(r.path("name"), name, "is not a valid snapshot name")
    cfg = r.get("config", (dict,), None, "an object")
    return SnapshotSpec(
        name=name,
        description=r.get("description", (str,), "", "a string"),
        snaptime=r.get("snaptime", (int,), 1_700_000_000, "epoch seconds"),
        parent=r.get("parent", (str,), None, "a snapshot name"),
        config=None if cfg is None else _config(cfg, r.path("config")),
    )


def _guest(data: object, key: str) -> GuestSpec:
    r = _Reader(data, key, ("vmid", "type", "name", "status", "config", "snapshots",
                            "protection", "template", "lock", "ha_managed", "backup_size",
                            "backup_duration_s", "pool", "pid"))
    vmid = r.require("vmid", (int,), f"an integer {VMID_RANGE}")
    if not VMID_MIN <= vmid <= VMID_MAX:
        raise _err(r.path("vmid"), vmid, f"must be {VMID_RANGE}")
    gtype = r.require("type", (str,), "qemu or lxc")
    if gtype not in ("qemu", "lxc"):
        raise _err(r.path("type"), gtype, "must be one of qemu, lxc")
    status = r.get("status", (str,), "stopped", "running or stopped")
    if status not in ("running", "stopped"):
        raise _err(r.path("status"), status, "must be one of running, stopped")
    default_name = f"VM{vmid}" if gtype == "qemu" else f"CT{vmid}"
    name = r.get("name", (str,), default_name, "a DNS name")
    cfg = _config(r.get("config", (dict,), {}, "an object"), r.path("config"))
    cfg.setdefault("name" if gtype == "qemu" else "hostname", name)
    if r.get("protection", (bool,), False, "true or false"):
        cfg["protection"] = 1
    if r.get("template", (bool,), False, "true or false"):
        cfg["template"] = 1
    lock = r.get("lock", (str,), None, "a lock name")
    if lock is not None:
        allowed = QEMU_LOCKS if gtype == "qemu" else LXC_LOCKS
        if lock not in allowed:
            raise _err(r.path("lock"), lock, f"must be one of {', '.join(allowed)}")
        cfg["lock"] = lock
    snaps_raw = r.get("snapshots", (list,), [], "a list")
    snaps = tuple(_snapshot(s, f"{r.path('snapshots')}[{i}]") for i, s in enumerate(snaps_raw))
    size = r.get("backup_size", (int,), 1_073_741_824, "bytes")
    duration = r.get("backup_duration_s", (int, float), None, "seconds")
    if size < 0 or (duration is not None and duration < 0):
        raise _err(r.path("backup_size"), size, "backup_size and backup_duration_s must be >= 0")
    pid = r.get("pid", (int,), None, "a process id")
    if pid is not None and not 1 <= pid <= 4_194_304:
        raise _err(r.path("pid"), pid, "must be a process id 1..4194304")
    return GuestSpec(vmid=vmid, type=gtype, name=name, status=status, config=cfg,
                     snapshots=snaps, ha_managed=r.get("ha_managed", (bool,), False, "a bool"),
                     backup_size=size,
                     backup_duration_s=None if duration is None else float(duration),
                     pool=r.get("pool", (str,), None, "a pool id"), pid=pid)


def _number_map(value: object, key: str) -> dict[str, float]:
    if not isinstance(value, Mapping):
        raise _err(key, value, "must be an object of task type -> seconds")
    out: dict[str, float] = {}
    for k, v in value.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
            raise _err(f"{key}.{k}", v, "must be a number of seconds >= 0")
        out[k] = float(v)
    return out


_TOP_KEYS = ("node", "pve_version", "auth_failure_delay_s", "workers", "lock_wait_s",
             "request_latency_s", "tokens", "guests", "storages", "disks", "task_durations",
             "faults", "timezone", "cluster_name", "other_node_guests", "pools", "next_id",
             "mounts_file")
_POOL_RE = re.compile(r"^[A-Za-z0-9\-_]+$")
#: PVE's ``next-id`` defaults (datacenter.cfg): lower bound, exclusive upper bound.
DEFAULT_NEXT_ID = (100, 1_000_000)


def _pools(value: list[Any]) -> tuple[str, ...]:
    for i, pool in enumerate(value):
        if not isinstance(pool, str) or not _POOL_RE.match(pool):
            raise _err(f"pools[{i}]", pool, "is not a pool id ([A-Za-z0-9_-]+)")
    return tuple(value)


def _next_id(value: Mapping[str, Any]) -> tuple[int, int]:
    r = _Reader(value, "next_id", ("lower", "upper"))
    lower = r.get("lower", (int,), DEFAULT_NEXT_ID[0], "a vmid")
    upper = r.get("upper", (int,), DEFAULT_NEXT_ID[1], "a vmid")
    if not VMID_MIN <= lower < upper <= VMID_MAX + 1:
        raise _err("next_id", dict(value), f"needs {VMID_MIN} <= lower < upper")
    return lower, upper


def _timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise _err("timezone", value, "is not a known IANA time zone") from None
    return value


def _other_guests(value: list[Any], own: set[int]) -> dict[int, str]:
    out: dict[int, str] = {}
    for i, item in enumerate(value):
        r = _Reader(item, f"other_node_guests[{i}]", ("vmid", "node"))
        vmid = r.require("vmid", (int,), "a vmid")
        node = r.require("node", (str,), "a node name")
        if vmid in own or vmid in out or not _NODE_RE.match(node):
            raise _err(r.path("vmid"), vmid, "must be a unique vmid on a valid other node")
        out[vmid] = node
    return out


@attrs.frozen
class PveScenario:
    """A parsed scenario (immutable; the simulator copies it into live state)."""

    node: str
    pve_version: str
    auth_failure_delay_s: float
    workers: int
    lock_wait_s: float
    tokens: tuple[TokenSpec, ...]
    guests: tuple[GuestSpec, ...]
    storages: tuple[StorageSpec, ...]
    disks: tuple[Mapping[str, Any], ...]
    task_durations: Mapping[str, float]
    faults: tuple[Fault, ...]
    #: node local time zone (backup file names, prune periods, log time stamps).
    timezone: str = "UTC"
    #: ``{{cluster}}`` in notes templates (PVE says ``standalone node`` outside a cluster).
    cluster_name: str | None = None
    #: guests of the cluster living on other nodes: vmid -> node (vzdump answers ``OK``).
    other_node_guests: Mapping[int, str] = attrs.field(factory=dict)
    #: every authenticated request holds its worker slot at least this long (pveproxy's
    #: per-request processing time; 0 = answer as fast as the handler runs).
    request_latency_s: float = 0.0
    #: resource pools that exist (a ``pool`` parameter naming another one is a 400).
    pools: tuple[str, ...] = ()
    #: ``/cluster/nextid``'s search range: (lower, exclusive upper).
    next_id: tuple[int, int] = DEFAULT_NEXT_ID
    #: the node's mount table for ``is_mountpoint`` storages (``/proc/self/mounts`` format);
    #: None reads the real ``/proc/self/mounts``.
    mounts_file: str | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PveScenario:
        """Parse a scenario mapping.

        Raises:
            ScenarioError: naming the key path and value of the first problem found.
        """
        r = _Reader(data, "", _TOP_KEYS)
        node = r.get("node", (str,), "pve1", "a node name")
        if not _NODE_RE.match(node):
            raise _err("node", node, "is not a valid node name")
        workers = r.get("workers", (int,), 3, "an integer 1..64")
        if not 1 <= workers <= 64:
            raise _err("workers", workers, "must be 1..64")
        delay = r.get("auth_failure_delay_s", (int, float), 3, "seconds >= 0")
        lock_wait = r.get("lock_wait_s", (int, float), 10, "seconds >= 0")
        latency = r.get("request_latency_s", (int, float), 0, "seconds >= 0")
        for k, v in (("auth_failure_delay_s", delay), ("lock_wait_s", lock_wait),
                     ("request_latency_s", latency)):
            if v < 0:
                raise _err(k, v, "must be >= 0")
        if not math.isfinite(latency):
            raise _err("request_latency_s", latency, "must be a finite number of seconds")
        tokens = tuple(_token(t, f"tokens[{i}]")
                       for i, t in enumerate(r.require("tokens", (list,), "a list of tokens")))
        if not tokens:
            raise _err("tokens", [], "needs at least one token")
        guests = tuple(_guest(g, f"guests[{i}]")
                       for i, g in enumerate(r.get("guests", (list,), [], "a list")))
        seen: set[int] = set()
        for i, g in enumerate(guests):
            if g.vmid in seen:
                raise _err(f"guests[{i}].vmid", g.vmid, "duplicate vmid")
            seen.add(g.vmid)
        pools = _pools(r.get("pools", (list,), [], "a list of pool ids"))
        for i, g in enumerate(guests):
            if g.pool is not None and g.pool not in pools:
                raise _err(f"guests[{i}].pool", g.pool, "is not one of the scenario's pools")
        storages_raw = r.get("storages", (list,), None, "a list")
        if storages_raw is None:
            storages_raw = default_storages()
        storages = tuple(parse_storage(s, f"storages[{i}]") for i, s in enumerate(storages_raw))
        disks = r.get("disks", (list,), None, "a list of disk objects")
        faults: list[Fault] = []
        for i, f in enumerate(r.get("faults", (list,), [], "a list")):
            if not isinstance(f, Mapping):
                raise _err(f"faults[{i}]", f, "must be an object")
            try:
                faults.append(Fault.from_dict(f))
            except (TypeError, ValueError) as err:
                raise _err(f"faults[{i}]", dict(f), str(err)) from None
        return cls(
            node=node,
            pve_version=r.get("pve_version", (str,), DEFAULT_PVE_VERSION, "a version string"),
            auth_failure_delay_s=float(delay),
            workers=workers,
            lock_wait_s=float(lock_wait),
            tokens=tokens,
            guests=guests,
            storages=storages,
            disks=tuple(disks) if disks is not None else default_disks(),
            task_durations=_number_map(r.get("task_durations", (dict,), {}, "an object"),
                                       "task_durations"),
            faults=tuple(faults),
            timezone=_timezone(r.get("timezone", (str,), "UTC", "an IANA time zone")),
            cluster_name=r.get("cluster_name", (str,), None, "a cluster name"),
            other_node_guests=_other_guests(
                r.get("other_node_guests", (list,), [], "a list"), seen),
            request_latency_s=float(latency),
            pools=pools,
            next_id=_next_id(r.get("next_id", (dict,), {}, "an object")),
            mounts_file=r.get("mounts_file", (str,), None, "an absolute path"),
        )

    @classmethod
    def from_file(cls, path: Path) -> PveScenario:
        """Read and parse a JSON scenario file; errors name the file, key and value."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except OSError as err:
            raise ScenarioError(f"{path}: cannot read scenario: {err.strerror}",
                                key=None, value=str(path)) from None
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ScenarioError(f"{path}: not valid JSON: {err}", key=None,
                                value=str(path)) from None
        try:
            return cls.from_dict(data)
        except ScenarioError as err:
            raise ScenarioError(f"{path}: {err}", key=err.key, value=err.value) from None

    @classmethod
    def default(cls, *, token_secret: str | None = None) -> PveScenario:
        """The built-in scenario: node pve1, guests 100 (lxc running), 101 (qemu stopped),
        102 (lxc stopped), and one token ``felhom@pve!agent`` holding every privilege."""
        return cls.from_dict(default_scenario_dict(token_secret=token_secret))
