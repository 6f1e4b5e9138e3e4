"""Live guest state and the config-file round-trip quirks.

Each guest keeps its config the way PVE's config file holds it: ``description`` as the
raw written text (rendered as ``#`` comment lines), booleans as 0/1, qemu ``memory`` as a
string, and ``lock`` as a plain key. Reading it back applies PVE's quirks: LXC appends a
newline to the description (``"hello"`` reads ``"hello\\n"``), qemu trims trailing
whitespace, an empty description is absent, and ``digest`` is the SHA-1 of the rendered
file, so it changes on *any* write (lock changes and snapshots included).

All state lives in one :class:`NodeState` guarded by one condition variable; the per-guest
config *flock* (``/var/lock/qemu-server/lock-<vmid>.conf``) is modelled as an owner slot
that tasks and synchronous writes wait on with a timeout, plus shared holders (a clone of a
stopped qemu VM holds its source's flock shared: other clones may share it, an exclusive
writer waits).
"""

from __future__ import annotations

import copy
import hashlib
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import attrs

from felhom_agent.sim.pve.scenario import GuestSpec, PveScenario
from felhom_agent.sim.pve.storage import MOUNTS, SimStorage

__all__ = ["Guest", "NodeState", "Snapshot", "description_read", "normalise_tags"]


def description_read(gtype: str, written: str) -> str | None:
    """The value GET config returns for a written description (None = key absent)."""
    stripped = written.rstrip("\n")
    if gtype == "lxc":
        return None if not stripped else stripped + "\n"
    trimmed = written.rstrip()
    return trimmed or None


def normalise_tags(value: str) -> str:
    """PVE's tag normalisation: split on ``;, `` , lower-case, dedupe, sort, join by ``;``."""
    parts = {p.lower() for p in value.replace(",", ";").replace(" ", ";").split(";") if p}
    return ";".join(sorted(parts))


def _encode_text(line: str) -> str:
    out: list[str] = []
    for ch in line:
        if ch in ":%" or ord(ch) < 32 or ord(ch) > 126:
            out.extend(f"%{b:02X}" for b in ch.encode("utf-8"))
        else:
            out.append(ch)
    return "".join(out)


def render_section(config: Mapping[str, Any]) -> str:
    """Render one config section as PVE writes it (comment lines, then sorted keys)."""
    lines: list[str] = []
    descr = str(config.get("description", ""))
    lines.extend("#" + _encode_text(line) for line in descr.rstrip("\n").split("\n") if descr)
    lines.extend(f"{k}: {config[k]}" for k in sorted(config) if k != "description")
    return "\n".join(lines) + "\n"


@attrs.define
class Snapshot:
    """A snapshot: its own config copy plus list metadata."""

    name: str
    description: str
    snaptime: int
    parent: str | None
    config: dict[str, Any]
    vmstate: int = 0
    snapstate: str | None = None


@attrs.define
class Guest:
    """One guest's live state."""

    vmid: int
    type: str
    status: str
    config: dict[str, Any]
    snapshots: dict[str, Snapshot] = attrs.field(factory=dict)
    ha_managed: bool = False
    started_at: float | None = None
    pending_tasks: list[str] = attrs.field(factory=list)
    backup_size: int = 1_073_741_824
    backup_duration_s: float | None = None
    #: the resource pool the guest is a member of (``pool`` in cluster resources).
    pool: str | None = None
    #: the pid ``status/current`` reports while it runs (None: 100000 + vmid).
    pid: int | None = None

    @property
    def lock(self) -> str | None:
        """The ``lock`` config key, if set."""
        value = self.config.get("lock")
        return None if value is None else str(value)

    @property
    def kind_word(self) -> str:
        """``VM`` or ``CT``: the word PVE uses in messages for this guest type."""
        return "VM" if self.type == "qemu" else "CT"

    @property
    def name(self) -> str:
        """The list/status name (falls back like PVE: ``VM <id>`` / ``CT<id>``)."""
        if self.type == "qemu":
            return str(self.config.get("name", f"VM {self.vmid}"))
        return str(self.config.get("hostname", f"CT{self.vmid}")).replace(" ", "")

    def conf_path(self, node: str) -> str:
        """The pmxcfs path PVE names in ``does not exist`` errors."""
        sub = "qemu-server" if self.type == "qemu" else "lxc"
        return f"nodes/{node}/{sub}/{self.vmid}.conf"

    def flock_path(self) -> str:
        """The flock file PVE names in ``got timeout`` errors."""
        if self.type == "qemu":
            return f"/var/lock/qemu-server/lock-{self.vmid}.conf"
        return f"/run/lock/lxc/pve-config-{self.vmid}.lock"

    def rendered(self) -> str:
        """The whole config file: main section then ``[snapname]`` sections."""
        out = render_section(self.config)
        for name in sorted(self.snapshots):
            snap = self.snapshots[name]
            cfg = dict(snap.config)
            cfg["snaptime"] = snap.snaptime
            if snap.parent:
                cfg["parent"] = snap.parent
            if snap.description:
                cfg["description"] = snap.description
            if snap.snapstate:
                cfg["snapstate"] = snap.snapstate
            out += f"\n[{name}]\n" + render_section(cfg)
        return out

    def digest(self) -> str:
        """SHA-1 hex of the rendered file (changes on any write)."""
        return hashlib.sha1(self.rendered().encode("utf-8"), usedforsecurity=False).hexdigest()

    def config_view(self) -> dict[str, Any]:
        """GET config: stored keys (quirks applied) plus ``digest``."""
        out: dict[str, Any] = {}
        for key, value in self.config.items():
            if key == "description":
                shown = description_read(self.type, str(value))
                if shown is not None:
                    out[key] = shown
            else:
                out[key] = value
        out["digest"] = self.digest()
        return out

    def snapshot_config(self) -> dict[str, Any]:
        """The config a new snapshot captures (without lock/parent bookkeeping)."""
        return {k: v for k, v in self.config.items() if k not in ("lock", "parent")}


def guest_from_spec(spec: GuestSpec, now: float) -> Guest:
    """Build live state from a scenario guest."""
    guest = Guest(vmid=spec.vmid, type=spec.type, status=spec.status,
                  config=copy.deepcopy(dict(spec.config)), ha_managed=spec.ha_managed,
                  started_at=now if spec.status == "running" else None,
                  backup_size=spec.backup_size, backup_duration_s=spec.backup_duration_s,
                  pool=spec.pool, pid=spec.pid)
    last: str | None = None
    for s in spec.snapshots:
        cfg = copy.deepcopy(dict(s.config)) if s.config is not None else guest.snapshot_config()
        guest.snapshots[s.name] = Snapshot(name=s.name, description=s.description,
                                           snaptime=s.snaptime, parent=s.parent or last,
                                           config=cfg)
        last = s.name
    if last is not None:
        guest.config.setdefault("parent", last)
    return guest


class NodeState:
    """All mutable simulator state, guarded by :attr:`cond` (a re-entrant condition)."""

    def __init__(self, scenario: PveScenario, clock: Callable[[], float]) -> None:
        self.cond = threading.Condition(threading.RLock())
        self.clock = clock
        self.node = scenario.node
        self.guests: dict[int, Guest] = {
            g.vmid: guest_from_spec(g, clock()) for g in scenario.guests
        }
        self.tz = ZoneInfo(scenario.timezone)
        self.cluster_name = scenario.cluster_name
        self.other_node_guests = dict(scenario.other_node_guests)
        archived = {vmid: (g.type, render_section(g.snapshot_config()))
                    for vmid, g in self.guests.items()}
        #: the mount table ``is_mountpoint`` storages are checked against.
        self.mounts = Path(scenario.mounts_file) if scenario.mounts_file else MOUNTS
        self.storages: dict[str, SimStorage] = {
            s.storage: SimStorage(s, self.tz, scenario.node, archived, mounts=self.mounts)
            for s in scenario.storages
        }
        #: backups of removed dir storages by (storage id, path): the files stay on the disk,
        #: and a storage added again with the same id and path lists them again.
        self.detached: dict[tuple[str, str], list[Any]] = {}
        #: the UPID holding the node-wide vzdump lock (``/var/run/vzdump.lock``), if any.
        self.vzdump_lock: str | None = None
        #: resource pools that exist (``pool`` parameters must name one).
        self.pools = frozenset(scenario.pools)
        #: datacenter.cfg ``next-id``: the range ``/cluster/nextid`` searches.
        self.next_id = scenario.next_id
        self._flock_owner: dict[int, str] = {}
        self._flock_shared: dict[int, set[str]] = {}
        self.stopping = False

    def flock_free(self, vmid: int, owner: str) -> bool:
        """Whether ``owner`` could take the config flock of ``vmid`` exclusively now."""
        shared = self._flock_shared.get(vmid, set())
        return self._flock_owner.get(vmid, owner) == owner and shared <= {owner}

    def acquire_shared_flock(self, vmid: int, owner: str, timeout: float) -> bool:
        """Take the config flock shared (waiting up to ``timeout`` for an exclusive holder);
        caller holds :attr:`cond`."""
        ok = self.cond.wait_for(
            lambda: self.stopping or self._flock_owner.get(vmid, owner) == owner,
            timeout=timeout)
        if not ok or self.stopping:
            return False
        self._flock_shared.setdefault(vmid, set()).add(owner)
        return True

    def release_shared_flock(self, vmid: int, owner: str) -> None:
        """Drop ``owner``'s shared hold and wake waiters."""
        holders = self._flock_shared.get(vmid)
        if holders is not None and owner in holders:
            holders.discard(owner)
            if not holders:
                del self._flock_shared[vmid]
            self.cond.notify_all()

    def acquire_flock(self, vmid: int, owner: str, timeout: float) -> bool:
        """Take the config flock (waiting up to ``timeout``); caller holds :attr:`cond`."""
        ok = self.cond.wait_for(
            lambda: self.stopping or self.flock_free(vmid, owner), timeout=timeout
        )
        if not ok or self.stopping:
            return False
        self._flock_owner[vmid] = owner
        return True

    def release_flock(self, vmid: int, owner: str) -> None:
        """Release the flock if ``owner`` holds it and wake waiters."""
        if self._flock_owner.get(vmid) == owner:
            del self._flock_owner[vmid]
            self.cond.notify_all()
