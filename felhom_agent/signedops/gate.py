"""The reversibility gate: what must happen before a verified signed op runs.

See ``docs/architecture.md`` ("Classes and the reversibility gate").

Pure policy, no I/O: the signed-op consumer (:mod:`felhom_agent.signedops.consumer`) calls
:func:`check_op` right after verification (payload rules that need no guest state) and
:func:`plan_steps` on the guest's facts, read just before the op is queued. The result is
either a :class:`GateRefused` (the op is refused with that reason, nothing runs) or the
ordered :class:`Step` list that the consumer submits, one journalled queue job per step:

* **benign** kinds (start, stop, shutdown, snapshot create, config writes of only
  ``description``/``tags``/``onboot``/``startup``): the op itself;
* **reversible by snapshot** (``guest.rollback``, a config write with any other key): first a safety
  snapshot ``felhom-pre-<first 8 hex of the op id>``, then the op. The op runs only if the snapshot
  step ended ``applied``. The name is valid for PVE (letter first, ``[A-Za-z0-9_-]``, at most 40
  characters; ``docs/pve-facts.md``, "Calls: synchronous or a task") and unique per op; an existing
  snapshot of that name refuses the op rather than counting an older snapshot as the safety net. The
  snapshot is disk-only (no ``vmstate``): cheap, and enough to undo a rollback or a config change.
  Caveat: on storage that can only roll back the *newest* snapshot (ZFS), a rollback to an older
  snapshot fails once the safety snapshot exists; PVE reports it and the op fails with that text
  (nothing is lost: the guest is unchanged);
* **reversible by a safety backup** (``guest.restore`` over an existing guest): the kind's
  gate hook names the storage (:attr:`~felhom_agent.kinds.model.Prepared.safety_backup`)
  and the gate puts a ``backup`` step ``<op_id>.safety-backup`` after the other pre-steps: a
  protected vzdump of the guest as it is, notes ``felhom safety op=<step op id>``, ``applied``
  only once found in the listing. The op runs only if it was; a failed safety backup leaves
  the guest untouched. A restore into a free vmid destroys nothing and gets no backup;
* **irreversible** (``guest.destroy``, ``guest.delete_snapshot``): only with
  ``"irreversible": true`` in the signed payload. A guest with ``protection: 1`` is never
  destroyed. A running guest is destroyed only when the op says ``params.stop_first: true``;
  then a ``stop`` step (journalled, audited) runs first. Without it: refused, "guest is
  running".

Step op ids: the op itself keeps the signed ``op_id`` (idempotency and the hub's
``ops`` entry hang on it); a pre-step gets ``<op_id>.safety-snapshot``,
``<op_id>.safety-backup`` or ``<op_id>.stop-first``, with the same source (the signer
principal) in journal and audit.
An op accepted before a restart and run after it passes the step ids already in the journal
(``journalled``): those steps are kept and resumed by the executor, never sent twice.

Params are checked strictly per kind (the ``params`` of its registry entry,
:mod:`felhom_agent.kinds.registry`): an unknown key or a wrong type refuses the op (refusing
over guessing); a host kind's values are checked by its own ``check`` handler too (a UUID
that is not one, a name outside the rule, an fstype outside the list). A host op has no
steps here: it acts on no guest, so there is nothing to snapshot or stop first. A kind's own
guest checks (destroy, rollback) are its registry ``prepare``
hook; this module applies the rules common to all kinds.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

from felhom_agent.authz.envelope import SignedOp
from felhom_agent.backup.notes import SAFETY_BACKUP_SUFFIX
from felhom_agent.core.normalise import NormaliseError, normalise_value
from felhom_agent.kinds.classify import Classification, Reversibility, classify_op
from felhom_agent.kinds.handlers import STOP_SUFFIX
from felhom_agent.kinds.model import (
    GateRefused,
    GuestFacts,
    Kind,
    Prepared,
    Step,
    UnknownKind,
)
from felhom_agent.kinds.registry import lookup

__all__ = [
    "SAFETY_BACKUP_SUFFIX",
    "SAFETY_PREFIX",
    "SAFETY_SUFFIX",
    "STEP_SUFFIXES",
    "STOP_SUFFIX",
    "GateRefused",
    "GuestFacts",
    "Step",
    "check_op",
    "plan_steps",
    "safety_snapshot_name",
]

SAFETY_PREFIX: Final = "felhom-pre-"
SAFETY_SUFFIX: Final = ".safety-snapshot"
#: The op id suffixes of every pre-step (a step's op id is the signed op id plus one).
STEP_SUFFIXES: Final = (STOP_SUFFIX, SAFETY_SUFFIX, SAFETY_BACKUP_SUFFIX)
_SNAPNAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{1,39}")
_RESERVED = frozenset({"current", "pending", "vzdump"})
_CONFIG_KEY = re.compile(r"[a-z][a-z0-9_-]{0,63}")
_NUM = (int, float)


def safety_snapshot_name(op_id: str) -> str:
    """``felhom-pre-`` + the first 8 hex digits of ``op_id`` (dashes dropped)."""
    return SAFETY_PREFIX + op_id.replace("-", "")[:8].lower()


def _type_name(types: tuple[type, ...]) -> str:
    return {bool: "true/false", int: "an integer", str: "a string"}.get(types[0], "a value")


def _signed_kind(name: str) -> Kind:
    try:
        kind = lookup(name)
    except UnknownKind:
        raise GateRefused(f"unknown kind {name!r}") from None
    if kind.signed != name:
        raise GateRefused(f"unknown kind {name!r}")
    return kind


def _check_plain(op: SignedOp, kind: Kind) -> None:
    spec = kind.params
    unknown = sorted(set(op.params) - set(spec))
    if unknown:
        raise GateRefused(f"invalid params for {op.kind}: unknown key(s) {', '.join(unknown)} "
                          f"(allowed: {', '.join(sorted(spec)) or 'none'})")
    for name, param in spec.items():
        if name not in op.params:
            if param.required:
                raise GateRefused(f"invalid params for {op.kind}: {name} is required")
            continue
        value = op.params[name]
        types = param.types
        ok = isinstance(value, types) and (bool in types or not isinstance(value, bool))
        if not ok:
            raise GateRefused(f"invalid params for {op.kind}: {name} must be "
                              f"{_type_name(types)}")
    snapname = op.params.get("snapname")
    if isinstance(snapname, str) and (not _SNAPNAME.fullmatch(snapname)
                                      or snapname.lower() in _RESERVED):
        raise GateRefused(f"invalid params for {op.kind}: snapname {snapname[:60]!r} is not a "
                          "PVE snapshot name (letter first, [A-Za-z0-9_-], 2-40 characters)")


def _check_config(op: SignedOp) -> None:
    what = f"invalid params for {op.kind}"
    if not op.params:
        raise GateRefused(f"{what}: no config key given")
    for key, value in op.params.items():
        if not _CONFIG_KEY.fullmatch(key) or key in ("digest", "delete"):
            raise GateRefused(f"{what}: key {key[:40]!r}")
        if not isinstance(value, (str, *_NUM)):
            raise GateRefused(f"{what}: {key} must be a string, number or boolean")
        try:
            normalise_value(key, value)
        except NormaliseError as err:
            raise GateRefused(f"{what}: {err}") from err


def check_op(op: SignedOp) -> Classification:
    """The checks that need no guest state: params, classification, the irreversible flag.

    Raises:
        GateRefused: the op is refused (the message is the reason).
    """
    kind = _signed_kind(op.kind)
    if kind.config_write:
        _check_config(op)
        verdict = classify_op(op.kind, config_keys=tuple(op.params))
    else:
        _check_plain(op, kind)
        if kind.host is not None:
            kind.host.check(op.params)
        verdict = classify_op(op.kind)
    if verdict.reversibility is Reversibility.IRREVERSIBLE and not op.irreversible:
        raise GateRefused(f"{op.kind} cannot be undone: it runs only with "
                          '"irreversible": true in the signed op')
    return verdict


def plan_steps(op: SignedOp, verdict: Classification, guest: GuestFacts,
               journalled: frozenset[str] = frozenset(),
               params: Mapping[str, Any] | None = None) -> tuple[Step, ...]:
    """The steps of ``op`` on ``guest`` (pre-steps first, the op itself last).

    ``params`` are the op's params as the kind's own gate reads resolved them
    (:attr:`~felhom_agent.kinds.model.Kind.gate_read`); ``None``: the signed ones.

    ``journalled`` names the step op ids the journal already holds: the op was accepted
    before a restart and some of its pre-steps were begun then. Such a step is kept whatever
    the facts say now (the executor returns its stored outcome or re-attaches to its task;
    it is never sent twice), and the safety snapshot it made is not mistaken for a name
    someone else took.

    Raises:
        GateRefused: the guest's state forbids the op (protected, running, names taken).
    """
    kind = _signed_kind(op.kind)
    given = op.params if params is None else params
    prepared = (kind.prepare(op.op_id, given, guest) if kind.prepare is not None
                else Prepared(given))
    pre = list(prepared.pre)
    stop_id = op.op_id + STOP_SUFFIX
    if stop_id in journalled and all(s.op_id != stop_id for s in pre):
        # begun while the guest was running; now stopped (or stopping): await that step
        pre.insert(0, Step(stop_id, "stop", {}, "stop-first"))
    if verdict.reversibility is Reversibility.SNAPSHOT:
        name = safety_snapshot_name(op.op_id)
        if name in guest.snapshots and op.op_id + SAFETY_SUFFIX not in journalled:
            raise GateRefused(f"safety snapshot name {name} is already taken on guest "
                              f"{guest.vmid}; sign the op again with a new op id")
        desc = f"felhom-agent safety snapshot before {op.kind} (op {op.op_id})"
        pre.append(Step(op.op_id + SAFETY_SUFFIX, "snapshot",
                        {"snapname": name, "description": desc}, "safety-snapshot"))
    if (verdict.reversibility is Reversibility.SAFETY_BACKUP
            and prepared.safety_backup is not None):
        if not prepared.safety_backup.get("storage"):
            raise GateRefused(f"{op.kind}: no storage for the safety backup")
        pre.append(Step(op.op_id + SAFETY_BACKUP_SUFFIX, "backup",
                        {**prepared.safety_backup, "protected": True}, "safety-backup"))
    return (*pre, Step(op.op_id, kind.name, prepared.params))
