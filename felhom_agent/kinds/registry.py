"""THE kind registry: every operation kind the agent can run, defined once.

Each :class:`~felhom_agent.kinds.model.Kind` entry holds everything about one kind: its
signed-op name, whether the reconciler may plan it, its class (benign or destructive), how the
gate makes it reversible, the params a signed op may carry, the PVE worker types crash recovery
looks for, and its handlers (dispatch, "already satisfied", the kind's own gate checks). The
signed-op allow-list (:data:`SIGNED_KINDS`, handed to the verifier), the classifier
(:mod:`.classify`), the gate (:mod:`felhom_agent.signedops.gate`), the executor and crash
recovery (:mod:`felhom_agent.state.recovery`) all read this table; a test proves that no
other table of kinds exists. Adding a kind is one entry here plus its handlers in
:mod:`.handlers`. See ``docs/architecture.md`` ("Kinds").

PVE worker types: ``qm*`` for qemu, ``vz*`` for LXC, ``ha*`` when the HA manager handles a
start/stop. A synchronous LXC config write leaves no task at all, so ``set_config`` can only
ever match the qemu ``qmconfig`` task (``docs/pve-facts.md``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any, Final

from felhom_agent.kinds import backup_handlers as bh
from felhom_agent.kinds import guestapi_handlers as gh
from felhom_agent.kinds import handlers as h
from felhom_agent.kinds.model import Kind, Param, Reversibility, Safety, UnknownKind, executor_name

__all__ = ["PLAN_ACTIONS", "REGISTRY", "SIGNED_KINDS", "lookup", "plan_rank", "task_id",
           "task_types"]

_B, _D = Safety.BENIGN, Safety.DESTRUCTIVE
_NONE, _SNAP, _INV, _IRREV = (
    Reversibility.NONE_NEEDED,
    Reversibility.SNAPSHOT,
    Reversibility.INVERTIBLE,
    Reversibility.IRREVERSIBLE,
)
_INT, _BOOL, _STR = (int,), (bool,), (str,)


def _types(*names: str) -> frozenset[str]:
    return frozenset(names)


#: Registry order is meaningful for plan actions: a guest's actions run in this order
#: (``set_config`` lands before a ``start``; see :func:`plan_rank`).
_ENTRIES: Final = (
    Kind("set_config", "guest.set_config", _B, _NONE, _types("qmconfig"),
         h.set_config, h.config_matches, plan_action=True, config_write=True,
         reads_config=True),
    Kind("start", "guest.start", _B, _NONE, _types("qmstart", "vzstart", "hastart"),
         h.start, h.is_running, plan_action=True, settles=True,
         params={"timeout": Param(_INT)}),
    Kind("stop", "guest.stop", _B, _NONE, _types("qmstop", "vzstop", "hastop"),
         h.stop, h.is_stopped, plan_action=True, settles=True,
         params={"timeout": Param(_INT)}),
    Kind("shutdown", "guest.shutdown", _B, _NONE,
         _types("qmshutdown", "vzshutdown", "hastop"), h.shutdown, h.is_stopped, settles=True,
         params={"timeout": Param(_INT), "force_stop": Param(_BOOL)}),
    Kind("snapshot", "guest.snapshot", _B, _NONE, _types("qmsnapshot", "vzsnapshot"),
         h.snapshot, h.snapshot_present, reads_snapshots=True,
         params={"snapname": Param(_STR, required=True), "description": Param(_STR),
                 "vmstate": Param(_BOOL)}),
    # Judged by its task alone: the guest looks the same before and after.
    Kind("rollback", "guest.rollback", _D, _SNAP, _types("qmrollback", "vzrollback"),
         h.rollback, None, prepare=h.prepare_rollback,
         params={"snapname": Param(_STR, required=True), "start": Param(_BOOL)}),
    Kind("delete_snapshot", "guest.delete_snapshot", _D, _IRREV,
         _types("qmdelsnapshot", "vzdelsnapshot"), h.delete_snapshot, h.snapshot_absent,
         reads_snapshots=True,
         params={"snapname": Param(_STR, required=True), "force": Param(_BOOL)}),
    # A backup adds data: benign. Done means found: the volume with the op id in its notes.
    # One at a time per node (``backup.max_concurrent``) through the queue's limit group.
    Kind("backup", "guest.backup", _B, _NONE, _types("vzdump"), bh.backup, bh.backup_found,
         plan_action=True, reads_backups=True, preflight=bh.backup_preflight,
         failure_detail=bh.backup_failure, summary=bh.backup_summary, limit_group="backup",
         prepare=h.prepare_backup,
         params={"storage": Param(_STR, required=True), "mode": Param(_STR),
                 "protected": Param(_BOOL)}),
    # Planned after a policy backup; never below backup.min_keep, never a protected backup.
    Kind("prune", None, _B, _NONE, _types("prunebackups"), bh.prune, None, plan_action=True,
         reads_backups=True, preflight=bh.prune_preflight, task_id=bh.storage_task_id),
    Kind("backup.delete", "backup.delete", _D, _IRREV, _types("imgdel"), bh.delete_backup,
         bh.volume_gone, reads_status=False, reads_backups=True, prepare=h.prepare_volume,
         preflight=bh.volume_preflight, task_id=bh.storage_task_id,
         params={"volid": Param(_STR, required=True)}),
    # Synchronous (no task); unprotecting is undone by protecting again.
    Kind("backup.protect", "backup.protect", _D, _INV, frozenset(), bh.protect_backup,
         bh.protect_matches, reads_status=False, reads_backups=True, prepare=h.prepare_volume,
         preflight=bh.volume_preflight,
         params={"volid": Param(_STR, required=True), "protected": Param(_BOOL, required=True)}),
    # A VM's serial socket for the per-guest API: a hardware change, so a safety snapshot
    # first; a serial1 already in use is refused, never overwritten.
    Kind("guestapi.enable", "guestapi.enable", _D, _SNAP, _types("qmconfig"), gh.enable_serial,
         gh.serial_socket_set, reads_config=True, prepare=gh.prepare_enable,
         preflight=gh.serial_preflight),
    # Judged by its task: afterwards the guest is gone and cannot be re-read.
    Kind("destroy", "guest.destroy", _D, _IRREV, _types("qmdestroy", "vzdestroy"),
         h.destroy, None, reads_config=True, prepare=h.prepare_destroy,
         params={"stop_first": Param(_BOOL), "purge": Param(_BOOL),
                 "destroy_unreferenced_disks": Param(_BOOL)}),
)


def _build(entries: Iterable[Kind]) -> Mapping[str, Kind]:
    table: dict[str, Kind] = {}
    for kind in entries:
        if kind.name in table:
            raise AssertionError(f"kind {kind.name!r} is defined twice")
        if kind.signed is not None and executor_name(kind.signed) != kind.name:
            raise AssertionError(f"signed name {kind.signed!r} does not spell {kind.name!r}")
        table[kind.name] = kind
    return MappingProxyType(table)


#: Every kind by its executor name.
REGISTRY: Final[Mapping[str, Kind]] = _build(_ENTRIES)

#: The signed-op allow-list: the ``kind`` values a signed payload may carry.
SIGNED_KINDS: Final[frozenset[str]] = frozenset(
    k.signed for k in REGISTRY.values() if k.signed is not None
)

#: The kinds the reconciler may plan from unsigned desired state.
PLAN_ACTIONS: Final[frozenset[str]] = frozenset(
    k.name for k in REGISTRY.values() if k.plan_action
)


def lookup(name: str) -> Kind:
    """The entry for ``name``, spelled as executor (``start``) or signed (``guest.start``) name.

    Raises:
        UnknownKind: no such kind (the message lists the known ones).
    """
    kind = REGISTRY.get(executor_name(name))
    if kind is None or name not in (kind.name, kind.signed):
        raise UnknownKind(name, tuple(sorted(REGISTRY)))
    return kind


def task_id(name: str, vmid: int, params: Mapping[str, Any]) -> str:
    """The ``id`` of the PVE task kind ``name`` leaves for ``vmid`` (recovery matches it)."""
    kind = REGISTRY.get(executor_name(name))
    return kind.pve_task_id(vmid, params) if kind is not None else str(vmid)


def task_types(name: str) -> frozenset[str]:
    """The PVE worker types kind ``name`` can leave behind (empty for an unknown kind)."""
    kind = REGISTRY.get(executor_name(name))
    return kind.task_types if kind is not None else frozenset()


_PLAN_ORDER: Final = {name: i for i, name in enumerate(
    k.name for k in _ENTRIES if k.plan_action)}


def plan_rank(name: str) -> int:
    """Where a plan action of kind ``name`` sorts among one guest's actions (registry order;
    anything that is not a plan action sorts last)."""
    return _PLAN_ORDER.get(name, len(_PLAN_ORDER))
