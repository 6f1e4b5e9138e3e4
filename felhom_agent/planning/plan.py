"""The plan: a pure diff of desired state against actual state, and its two renderings.

See ``docs/architecture.md`` ("Desired state and the plan").

:func:`plan` has no I/O, no clock and no randomness: the same inputs give the same
:class:`Plan`, whatever order the actual guests arrive in. It is:

* **minimal** — an action only where a normalised value differs (one ``set_config`` carrying
  all differing benign keys, one ``start``/``stop``), so ``plan(x, x)`` is empty;
* **deterministic** — actions sorted by vmid, then kind (``set_config`` < ``start`` <
  ``stop``: config lands before a start); blocked and refused sorted the same way;
* **scoped** — guests present in both desired and actual state, and only guests on ``node``
  when one is given; destroying is never a plan action. A desired guest that does not exist
  is created only when it carries a ``provision`` block and the local limits allow it
  (:mod:`.provision`: a ``provision`` action or a refusal naming the rule); once it exists
  the steps below apply to it like to any other guest.

Per guest, in this order:

1. type mismatch (desired ``lxc``, actual ``qemu``) → refused with kind ``"guest"``; the desired
   entry is wrong and nothing else is considered for that guest;
2. config keys outside the benign set whose values differ → refused ``set_config``
   ``"destructive key: memory"`` (they run only as signed ops: ``docs/architecture.md``,
   "Classes and the reversibility gate"). Differing benign keys are
   still planned: they are independent and harmless. A desired value that does not normalise
   is refused the same way (``"invalid value: ..."``);
3. ``state: running`` for a template → refused ``start`` (PVE cannot start a template);
4. if anything is left to do, the first that applies: a guest with a ``lock`` → blocked
   ``"locked: backup"``; run state or config that was not read (``status`` ``unknown``,
   ``config`` ``None``) → blocked ``"status unknown"`` / ``"config not read"``; a guest whose
   serializer lane still holds earlier work (``busy(vmid)``) → blocked ``"busy"`` (reported,
   so an operator can see why a drift persists; it is gone once the lane drains). Otherwise
   the actions are emitted. A blocked guest gets none of its actions this pass.

A guest that is in sync is never reported, even while locked or busy.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Final, cast

import attrs

from felhom_agent.core.desired import DesiredState, GuestDesired, GuestType
from felhom_agent.core.normalise import (
    ConfigValue,
    NormaliseError,
    NormValue,
    config_diff,
)
from felhom_agent.core.provision import ProvisionLimits
from felhom_agent.errors import ReconcileError
from felhom_agent.kinds.classify import BENIGN_CONFIG_KEYS, classify_action
from felhom_agent.kinds.registry import plan_rank
from felhom_agent.planning.backups import BackupFacts, BackupStatus, plan_guest_backup
from felhom_agent.planning.provision import TargetInfo, plan_provisions

__all__ = [
    "Action",
    "ActionKind",
    "Blocked",
    "GuestActual",
    "Plan",
    "PlanInputError",
    "Refusal",
    "plan",
    "render_text",
]

#: A plan action's kind: a registry kind with ``plan_action`` set.
ActionKind = str
#: Refusal kind for a whole desired guest entry (type mismatch).
GUEST_KIND: Final = "guest"


class PlanInputError(ReconcileError, ValueError):
    """The actual-state input is inconsistent (the same vmid listed twice)."""


def _frozen_config(
    value: Mapping[str, ConfigValue] | None,
) -> Mapping[str, ConfigValue] | None:
    return None if value is None else MappingProxyType(dict(value))


def _frozen_params(value: Mapping[str, NormValue]) -> Mapping[str, NormValue]:
    return MappingProxyType(dict(sorted(value.items())))


@attrs.frozen
class GuestActual:
    """What one guest looks like on PVE, as read by the engine.

    Attributes:
        vmid, type, node, name: from the listing.
        status: ``running``/``stopped``; anything else (``unknown`` before pvestatd reported
            the guest) blocks state actions.
        lock: the config lock (``backup``, ``snapshot``, …) or ``None``.
        template: the guest is a template.
        config: ``GET .../config`` (``digest`` may be included, it is ignored), or ``None``
            when not read this pass (the engine reads it only for guests whose desired state
            names config keys).
        digest: the config digest read with ``config``, carried to the config write.
    """

    vmid: int
    type: GuestType
    node: str
    name: str
    status: str
    lock: str | None = None
    template: bool = False
    config: Mapping[str, ConfigValue] | None = attrs.field(
        default=None, converter=_frozen_config
    )
    digest: str | None = None


@attrs.frozen
class Action:
    """One mutation the reconciler will submit to the guest's lane.

    Attributes:
        vmid: the guest.
        kind: ``start``, ``stop`` or ``set_config``.
        params: for ``set_config``, the keys to write with their *normalised* desired values
            (see :func:`felhom_agent.core.normalise.split_for_write`); empty otherwise.
        guest_type: ``qemu``/``lxc``, which picks the API path.
        digest: the config digest read with the actual state (``set_config`` only), to send
            for optimistic concurrency; the engine may refresh it right before the write.
    """

    vmid: int
    kind: ActionKind
    params: Mapping[str, NormValue] = attrs.field(converter=_frozen_params)
    guest_type: GuestType
    digest: str | None = None

    def to_json(self) -> dict[str, object]:
        """``{"vmid": 101, "kind": "start"}``; an action with params (``set_config``,
        ``backup``, ``prune``) adds ``"params"``."""
        out: dict[str, object] = {"vmid": self.vmid, "kind": self.kind}
        if self.params or self.kind == "set_config":
            out["params"] = dict(self.params)
        return out


@attrs.frozen
class Blocked:
    """A guest that needs work but gets none this pass (transient: lock, busy lane, unread)."""

    vmid: int
    reason: str

    def to_json(self) -> dict[str, object]:
        """``{"vmid": 103, "reason": "locked: backup"}``."""
        return {"vmid": self.vmid, "reason": self.reason}


@attrs.frozen
class Refusal:
    """A difference the reconciler will not act on without an operator (a signed op).

    ``kind`` is the action kind refused, or ``"guest"`` for the whole desired entry.
    """

    vmid: int
    kind: str
    reason: str

    def to_json(self) -> dict[str, object]:
        """``{"vmid": 104, "kind": "set_config", "reason": "destructive key: memory"}``."""
        return {"vmid": self.vmid, "kind": self.kind, "reason": self.reason}


@attrs.frozen
class Plan:
    """The outcome of one planning pass.

    Attributes:
        generation: the desired state's generation, ``None`` when nothing is desired.
        actions: what to submit, in submit order.
        blocked: guests with work that waits for a later pass.
        refused: differences that need a signed op or a corrected desired state.
        backups: the backup state of every desired guest with a policy (planned only when
            backup facts were read; not part of ``--plan --json``).
    """

    generation: int | None
    actions: tuple[Action, ...] = ()
    blocked: tuple[Blocked, ...] = ()
    refused: tuple[Refusal, ...] = ()
    backups: tuple[BackupStatus, ...] = ()

    @property
    def in_sync(self) -> bool:
        """True when there is no drift at all (``--plan`` exit status 0)."""
        return not (self.actions or self.blocked or self.refused)

    def to_json(self) -> dict[str, object]:
        """Exactly the ``--plan --json`` document (``docs/architecture.md``, "Command line")."""
        return {
            "generation": self.generation,
            "actions": [a.to_json() for a in self.actions],
            "blocked": [b.to_json() for b in self.blocked],
            "refused": [r.to_json() for r in self.refused],
        }


def _rank(vmid: int, kind: str) -> tuple[int, int, str]:
    return (vmid, plan_rank(kind), kind)


@attrs.define
class _GuestPlan:
    actions: list[Action] = attrs.Factory(list)
    refused: list[Refusal] = attrs.Factory(list)
    blocked: str | None = None
    backup: BackupStatus | None = None


def _plan_guest(want: GuestDesired, have: GuestActual,
                backups: BackupFacts | None) -> _GuestPlan:
    """Everything about one guest except the lock/busy gate."""
    out = _GuestPlan()
    vmid = want.vmid
    if want.type != have.type:
        reason = f"type mismatch: desired {want.type}, actual {have.type}"
        out.refused.append(Refusal(vmid, GUEST_KIND, reason))
        return out
    if want.config:
        if have.config is None:
            out.blocked = "config not read"
        else:
            try:
                diff = config_diff(want.config, have.config)
            except NormaliseError as err:
                out.refused.append(Refusal(vmid, "set_config", f"invalid value: {err}"))
                diff = {}
            verdict = classify_action("set_config", diff)
            if not verdict.benign:
                out.refused.append(Refusal(vmid, "set_config", verdict.reason))
            benign = {k: v for k, v in diff.items() if k in BENIGN_CONFIG_KEYS}
            if benign:
                out.actions.append(
                    Action(vmid, "set_config", benign, guest_type=have.type,
                           digest=have.digest)
                )
    if want.state is not None and want.state != have.status:
        if have.status not in ("running", "stopped"):
            out.blocked = out.blocked or f"status {have.status or 'unknown'}"
        elif want.state == "running" and have.template:
            out.refused.append(Refusal(vmid, "start", "template cannot be started"))
        else:
            kind: ActionKind = "start" if want.state == "running" else "stop"
            out.actions.append(Action(vmid, kind, {}, guest_type=have.type))
    if backups is not None and not have.template:
        bp = plan_guest_backup(want, backups)
        if bp is not None:
            out.backup = bp.status
            if bp.refused is not None:
                out.refused.append(Refusal(vmid, "backup", bp.refused))
            if bp.blocked is not None:
                out.blocked = out.blocked or bp.blocked
            if bp.action is not None:
                kind, params = bp.action
                out.actions.append(Action(vmid, kind, params, guest_type=have.type))
    return out


def plan(
    desired: DesiredState | None,
    actual: Iterable[GuestActual],
    *,
    busy: Callable[[int], bool],
    node: str | None = None,
    backups: BackupFacts | None = None,
    provision: ProvisionLimits | None = None,
    held: Mapping[int, str] | None = None,
) -> Plan:
    """Diff ``desired`` against ``actual``; pure and deterministic (see the module doc).

    Args:
        desired: the desired state, or ``None`` when nothing is desired (empty plan).
        actual: the guests as read from PVE, in any order.
        busy: ``busy(vmid)`` is true while the guest's serializer lane still holds work from
            an earlier pass; such a guest gets no new action (no pile-up). Only called for
            guests that would get an action.
        node: when given, guests on other cluster nodes are out of scope (one agent per node).
        backups: what this pass read about storages and backups; with it, guests with a
            ``backup`` policy get ``backup``/``prune`` actions (:mod:`.backups`).
        provision: the local limits (``provision.*``); with them, desired guests that do not
            exist and carry a ``provision`` block get ``provision`` actions or refusals
            (:mod:`.provision`). Without them such guests are left alone.
        held: provision targets blocked by the engine's retry backoff, with the reason.

    Raises:
        PlanInputError: the same vmid appears twice in ``actual``.
    """
    if desired is None:
        return Plan(generation=None)
    by_vmid: dict[int, GuestActual] = {}
    for guest in actual:
        if guest.vmid in by_vmid:
            raise PlanInputError(f"vmid {guest.vmid} listed twice in the actual state")
        by_vmid[guest.vmid] = guest
    actions: list[Action] = []
    blocked: list[Blocked] = []
    refused: list[Refusal] = []
    statuses: list[BackupStatus] = []
    for vmid, want in sorted(desired.guests.items()):
        have = by_vmid.get(vmid)
        if have is None or (node is not None and have.node != node):
            continue
        gp = _plan_guest(want, have, backups)
        refused.extend(gp.refused)
        if gp.backup is not None:
            statuses.append(gp.backup)
        if not gp.actions and gp.blocked is None:
            continue
        if have.lock:
            blocked.append(Blocked(vmid, f"locked: {have.lock}"))
        elif gp.blocked is not None:
            blocked.append(Blocked(vmid, gp.blocked))
        elif busy(vmid):
            blocked.append(Blocked(vmid, "busy"))
        else:
            actions.extend(gp.actions)
    if provision is not None:
        on_node = {g.vmid: TargetInfo(g.vmid, g.type, g.template) for g in by_vmid.values()
                   if node is None or g.node == node}
        pp = plan_provisions(desired, on_node, (v for v in by_vmid if v not in on_node),
                             provision, busy=busy, node=node, held=held)
        actions.extend(Action(vmid, "provision", params, guest_type=cast(GuestType, gtype))
                       for vmid, params, gtype in pp.actions)
        refused.extend(Refusal(vmid, "provision", reason) for vmid, reason in pp.refused)
        blocked.extend(Blocked(vmid, reason) for vmid, reason in pp.blocked)
    return Plan(
        generation=desired.generation,
        actions=tuple(sorted(actions, key=lambda a: _rank(a.vmid, a.kind))),
        blocked=tuple(sorted(blocked, key=lambda b: b.vmid)),
        refused=tuple(sorted(refused, key=lambda r: _rank(r.vmid, r.kind))),
        backups=tuple(statuses),
    )


def _show_value(value: NormValue) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 60 else text[:56] + '..."'


def render_text(result: Plan) -> str:
    """A human-readable plan: a summary line, then one line per action, block and refusal."""
    if result.generation is None:
        return "plan: nothing desired (no desired state)\n"
    head = f"plan for generation {result.generation}: "
    if result.in_sync:
        return head + "in sync\n"
    lines = [
        head
        + f"{len(result.actions)} action(s), {len(result.blocked)} blocked, "
        + f"{len(result.refused)} refused"
    ]
    for a in result.actions:
        params = ", ".join(f"{k}={_show_value(v)}" for k, v in a.params.items())
        lines.append(f"  {a.vmid:>9}  {a.kind}" + (f"  {params}" if params else ""))
    lines.extend(f"  {b.vmid:>9}  blocked: {b.reason}" for b in result.blocked)
    lines.extend(f"  {r.vmid:>9}  refused {r.kind}: {r.reason}" for r in result.refused)
    return "\n".join(lines) + "\n"
