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

Host kinds (``host.*``, :data:`HOST_KINDS`) act on the node, not on a guest: their signed
payload carries ``"vmid": null``, they run on the queue's host lane through their
:class:`~felhom_agent.kinds.model.HostHandlers` (no ``dispatch``), leave no PVE task, and are
convergent, so recovery runs a pending one again (``docs/architecture.md``, "Host kinds").
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any, Final

from felhom_agent.kinds import backup_handlers as bh
from felhom_agent.kinds import guestapi_handlers as gh
from felhom_agent.kinds import handlers as h
from felhom_agent.kinds import host_handlers as hh
from felhom_agent.kinds import provision_handlers as ph
from felhom_agent.kinds import restore_handlers as rh
from felhom_agent.kinds.model import (
    HOST_PREFIX,
    Kind,
    Param,
    Reversibility,
    Safety,
    UnknownKind,
    executor_name,
)

__all__ = ["HOST_KINDS", "PLAN_ACTIONS", "REGISTRY", "SIGNED_KINDS", "is_host_kind", "lookup",
           "plan_rank", "task_id", "task_types"]

_B, _D = Safety.BENIGN, Safety.DESTRUCTIVE
_NONE, _SNAP, _INV, _SAFE, _IRREV = (
    Reversibility.NONE_NEEDED,
    Reversibility.SNAPSHOT,
    Reversibility.INVERTIBLE,
    Reversibility.SAFETY_BACKUP,
    Reversibility.IRREVERSIBLE,
)
_INT, _BOOL, _STR, _OBJ, _LIST = (int,), (bool,), (str,), (dict,), (list,)


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
    # Over an existing guest: a safety backup first (the gate's step), then ``force``; into a
    # free vmid: additive. Its own reads: the target may not exist, the archive must be listed.
    # Done: its own task ended OK and the target exists unlocked (the guest alone cannot tell).
    Kind("restore", "guest.restore", _D, _SAFE, _types("vzrestore", "qmrestore"),
         rh.restore, rh.restored, reads_status=False, observe=rh.observe_restore,
         gate_read=rh.read_restore_gate, prepare=rh.prepare_restore, summary=rh.restore_summary,
         params={"archive": Param(_STR, required=True), "target_vmid": Param(_INT),
                 "storage": Param(_STR), "start": Param(_BOOL), "unique": Param(_BOOL),
                 "stop_first": Param(_BOOL)}),
    # A new guest from a template (full clone) or a golden backup (restore, new MACs), inside
    # the local limits (provision.*). Done means found: the target exists, unlocked. A clone's
    # task names its source, so after a crash the target guest decides, not the task list.
    Kind("provision", "guest.provision", _B, _NONE,
         _types("vzclone", "qmclone", "vzrestore", "qmrestore"), ph.provision, ph.target_ready,
         plan_action=True, prepare=ph.prepare_provision, preflight=ph.provision_preflight,
         failure_detail=ph.partial_guest, summary=ph.provision_summary,
         group_of=ph.clone_group, creates_guest=True, gate_read=ph.provision_gate_read,
         observe=ph.observe_target, complete=ph.complete_provision,
         params={"from": Param(_OBJ, required=True), "name": Param(_STR, required=True),
                 "storage": Param(_STR, required=True), "pool": Param(_STR)}),
    # The golden image: the fenced `pct create` (keyctl=1 is root@pam's alone), then the
    # template conversion over the API. Signed only; never planned; additive.
    Kind("create_golden", "guest.create_golden", _B, _NONE, _types("vztemplate"),
         ph.convert_golden, ph.golden_ready, prepare=ph.prepare_golden,
         preflight=ph.golden_preflight, failure_detail=ph.partial_guest,
         creates_guest=True, gate_read=ph.golden_gate_read, observe=ph.observe_target,
         fenced=ph.create_golden_ct,
         params={"ostemplate": Param(_STR, required=True),
                 "hostname": Param(_STR, required=True),
                 "storage": Param(_STR, required=True),
                 "features": Param(_LIST, required=True),
                 "memory": Param(_INT, required=True), "cores": Param(_INT, required=True),
                 "net0": Param(_STR)}),
    # Judged by its task: afterwards the guest is gone and cannot be re-read.
    Kind("destroy", "guest.destroy", _D, _IRREV, _types("qmdestroy", "vzdestroy"),
         h.destroy, None, reads_config=True, prepare=h.prepare_destroy,
         params={"stop_first": Param(_BOOL), "purge": Param(_BOOL),
                 "destroy_unreferenced_disks": Param(_BOOL)}),
    # Host kinds: no guest, no task. Mounting adds a place for backups (benign, signed only);
    # unmounting is undone by mounting again, the data stays on the disk.
    Kind("host.mount_usb", "host.mount_usb", _B, _NONE, frozenset(), None, None,
         reads_status=False, host=hh.MOUNT_USB,
         params={"uuid": Param(_STR, required=True), "name": Param(_STR, required=True),
                 "fstype": Param(_STR, required=True), "content": Param(_STR, required=True)}),
    Kind("host.unmount_usb", "host.unmount_usb", _D, _INV, frozenset(), None, None,
         reads_status=False, host=hh.UNMOUNT_USB, params={"name": Param(_STR, required=True)}),
)


def _check_host_rule(kind: Kind) -> None:
    """A host kind is ``host.*``, signed, has host handlers and nothing a guest kind has."""
    named_host = kind.name.startswith(HOST_PREFIX)
    if named_host != (kind.host is not None):
        raise AssertionError(f"{kind.name!r}: host handlers iff the name starts with "
                             f"{HOST_PREFIX!r}")
    if kind.host is None:
        if kind.dispatch is None:
            raise AssertionError(f"guest kind {kind.name!r} has no dispatch")
        return
    if (kind.signed != kind.name or kind.dispatch is not None or kind.plan_action
            or kind.task_types or kind.reversibility is Reversibility.SNAPSHOT
            or kind.reads_status):
        raise AssertionError(f"host kind {kind.name!r} must be signed only, without dispatch, "
                             "task types, guest reads or a safety snapshot")


def _build(entries: Iterable[Kind]) -> Mapping[str, Kind]:
    table: dict[str, Kind] = {}
    for kind in entries:
        if kind.name in table:
            raise AssertionError(f"kind {kind.name!r} is defined twice")
        if kind.signed is not None and executor_name(kind.signed) != kind.name:
            raise AssertionError(f"signed name {kind.signed!r} does not spell {kind.name!r}")
        _check_host_rule(kind)
        table[kind.name] = kind
    return MappingProxyType(table)


#: Every kind by its executor name.
REGISTRY: Final[Mapping[str, Kind]] = _build(_ENTRIES)

#: The signed-op allow-list: the ``kind`` values a signed payload may carry.
SIGNED_KINDS: Final[frozenset[str]] = frozenset(
    k.signed for k in REGISTRY.values() if k.signed is not None
)

#: The signed names of the host kinds (their payload's ``vmid`` is ``null``).
HOST_KINDS: Final[frozenset[str]] = frozenset(
    k.name for k in REGISTRY.values() if k.host is not None
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


def is_host_kind(name: str) -> bool:
    """True if ``name`` is a host kind (acts on no guest; see :data:`HOST_KINDS`)."""
    return name in HOST_KINDS


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
