"""Reading actual state for a reconcile pass, cheaply: one bulk listing plus targeted reads.

``docs/pve-facts.md`` ("Status freshness") and ``docs/control-core.md`` ("Failure lessons"): the
bulk listing (``GET /cluster/resources?type=vm``, via :meth:`ProxmoxClient.guests`, filtered to our
node) only *finds candidate drift*; it may lag the live state by pvestatd's 10 s cycle, so the
executor re-reads ``status/current`` right before it mutates. Config is read (with its ``digest``)
only for guests whose desired state names config keys and that exist on our node; a guest we do not
manage costs nothing beyond its line in the listing.

Read budget per pass (asserted by tests and printed by ``scripts/bench-converge``)::

    reads <= 2 + (guests on our node whose desired state names config keys)

— the listing is one read and the rest is per configured guest, independent of N for
state-only desired state.
"""

from __future__ import annotations

from typing import Protocol

import attrs

from felhom_agent.core.desired import DesiredState
from felhom_agent.planning.plan import GuestActual
from felhom_agent.proxmox.models import Guest, GuestConfig
from felhom_agent.proxmox.models import GuestType as PveGuestType

__all__ = ["ActualReader", "ActualState", "read_actual", "read_budget"]


class ActualReader(Protocol):
    """The two reads a pass needs (the :class:`~felhom_agent.proxmox.ProxmoxClient`)."""

    def guests(self) -> tuple[Guest, ...]:
        """Guests on our node (one bulk listing)."""
        ...

    def guest_config(
        self, vmid: int, kind: PveGuestType, *, current: bool = False
    ) -> GuestConfig:
        """One guest's config with its digest."""
        ...


@attrs.frozen
class ActualState:
    """The actual state one pass read, and what reading it cost.

    Attributes:
        guests: every guest on our node; ``config``/``digest`` are filled only for guests
            whose desired state names config keys.
        reads: API reads issued (1 listing + config reads).
        config_reads: how many of those were config reads.
    """

    guests: tuple[GuestActual, ...]
    reads: int
    config_reads: int


def read_budget(desired: DesiredState | None) -> int:
    """The upper bound of reads for ``desired``: 2 + guests whose desired state names config."""
    if desired is None:
        return 2
    return 2 + sum(1 for g in desired.guests.values() if g.config)


def read_actual(client: ActualReader, node: str, desired: DesiredState | None) -> ActualState:
    """Read the guests of ``node`` and the config of those whose desired state names keys.

    Nothing is read when nothing is desired (the plan is empty anyway).

    Raises:
        PveError: a read failed (the pass records it and tries again next interval).
    """
    if desired is None:
        return ActualState(guests=(), reads=0, config_reads=0)
    listed = client.guests()
    out: list[GuestActual] = []
    config_reads = 0
    for g in listed:
        if g.node != node:
            continue
        want = desired.guests.get(g.vmid)
        config = None
        digest = None
        if want is not None and want.config and want.type == g.type.value:
            read = client.guest_config(g.vmid, g.type)
            config_reads += 1
            config, digest = dict(read.values), read.digest
        out.append(
            GuestActual(
                vmid=g.vmid,
                type=g.type.value,
                node=g.node,
                name=g.name,
                status=g.status,
                lock=g.lock,
                template=g.template,
                config=config,
                digest=digest,
            )
        )
    return ActualState(guests=tuple(out), reads=1 + config_reads, config_reads=config_reads)
