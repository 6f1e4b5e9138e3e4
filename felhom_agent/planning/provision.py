"""Provision planning: which desired guests that do not exist get a ``provision`` action.

Pure, like :func:`felhom_agent.planning.plan.plan` (``docs/architecture.md``, "Provisioning").
A desired guest with a ``provision`` block whose vmid is not on the node becomes a
``provision`` action when every local limit of ``provision.*`` holds, checked in this order
(the first that fails is the refusal's reason, naming the rule):

1. the vmid is inside ``provision.vmid_min``..``provision.vmid_max``;
2. the source is listed in ``provision.allowed_sources`` (a template vmid, or a glob the
   archive volid matches);
3. the source is usable: a template must be a template guest on this node of the desired
   type; an archive must be a backup of the desired type (as its volid says);
4. the node holds fewer than ``provision.max_guests`` guests in the range -- counting the
   guests listed, the provisions still queued from earlier passes and those planned earlier in
   this pass (vmid order), so one pass never plans past the limit.

A target whose lane is busy (its provision is queued or running) is blocked ``busy``, never
planned twice; one whose last planned provision failed is blocked with that failure until the
engine's backoff lets it try again (``held``), so a failing clone is not repeated every pass.
A vmid that exists is never a provision target: it is reconciled as usual (the executor checks
again right before the call, across the cluster, and refuses a collision).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import attrs

from felhom_agent.core.desired import DesiredState, GuestDesired
from felhom_agent.core.normalise import NormValue
from felhom_agent.core.provision import ProvisionLimits, ProvisionSpec
from felhom_agent.proxmox.models import GuestType
from felhom_agent.proxmox.provision import archive_guest_type

__all__ = ["ProvisionPlan", "TargetInfo", "plan_provisions", "source_refusal"]


@attrs.frozen
class TargetInfo:
    """What the planner knows of a guest on the node (a template source is looked up here)."""

    vmid: int
    type: str
    template: bool


@attrs.frozen
class ProvisionPlan:
    """The provision part of one pass: actions (vmid, params, type), refusals, blocks."""

    actions: tuple[tuple[int, dict[str, NormValue], str], ...] = ()
    refused: tuple[tuple[int, str], ...] = ()
    blocked: tuple[tuple[int, str], ...] = ()


def source_refusal(spec: ProvisionSpec, guest_type: str,
                   source: TargetInfo | None, node: str | None) -> str | None:
    """Why the source of ``spec`` cannot make a guest of ``guest_type``, or ``None``."""
    if spec.template is not None:
        where = f"node {node}" if node is not None else "the node"
        if source is None:
            return (f"source template {spec.template} is not a guest on {where} (or the token "
                    "cannot see it: VM.Audit)")
        if not source.template:
            return f"source {spec.template} is not a template"
        if source.type != guest_type:
            return (f"source template {spec.template} is {source.type}, the desired guest "
                    f"is {guest_type}")
        return None
    archived = archive_guest_type(spec.archive or "")
    if archived is not None and archived is not GuestType(guest_type):
        return (f"archive {spec.archive} is a {archived.value} backup, the desired guest is "
                f"{guest_type}")
    return None


def plan_provisions(desired: DesiredState, on_node: Mapping[int, TargetInfo],
                    elsewhere: Iterable[int], limits: ProvisionLimits, *,
                    busy: Callable[[int], bool], node: str | None = None,
                    held: Mapping[int, str] | None = None) -> ProvisionPlan:
    """The provision actions, refusals and blocks of one pass (see the module doc).

    Args:
        desired: the desired state.
        on_node: the guests listed on our node, by vmid.
        elsewhere: vmids listed on other nodes (never targets).
        limits: ``provision.*``.
        busy: ``busy(vmid)`` while the target's lane holds work (its provision is queued).
        node: our node's name, for reasons.
        held: targets whose last provision failed and may not be tried yet, with the reason.
    """
    taken = set(on_node) | set(elsewhere)
    wanted: list[GuestDesired] = [g for v, g in sorted(desired.guests.items())
                                  if g.provision is not None and v not in taken]
    count = sum(1 for v in on_node if limits.in_range(v))
    count += sum(1 for g in wanted if limits.in_range(g.vmid) and busy(g.vmid))
    actions: list[tuple[int, dict[str, NormValue], str]] = []
    refused: list[tuple[int, str]] = []
    blocked: list[tuple[int, str]] = []
    for want in wanted:
        spec = want.provision
        assert spec is not None  # noqa: S101 - filtered above
        vmid = want.vmid
        reason = limits.range_refusal(vmid) or limits.source_refusal(spec)
        if reason is None and busy(vmid):
            blocked.append((vmid, "busy"))
            continue
        if reason is None and held and vmid in held:
            blocked.append((vmid, held[vmid]))
            continue
        source = on_node.get(spec.template) if spec.template is not None else None
        reason = reason or source_refusal(spec, want.type, source, node)
        reason = reason or limits.count_refusal(count)
        if reason is not None:
            refused.append((vmid, reason))
            continue
        count += 1
        actions.append((vmid, spec.params(limits.pool), want.type))
    return ProvisionPlan(actions=tuple(actions), refused=tuple(refused), blocked=tuple(blocked))
