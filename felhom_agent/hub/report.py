"""The HostReport: what the agent tells the hub on every poll.

Its shape is in ``docs/architecture.md`` ("Hub protocol").

A report states only what the agent actually observed. A fact it could not read is ``null``
(node facts, reconcile status) or an empty list (``storage``, ``disks``, ``sensors``,
``backup``, ``restore``, ``pbs``, ``audit``), and the reason, when there is one, is an entry
in ``errors`` -- never a made-up zero. A report whose whole collection
failed is still sent (:meth:`HostReport.failed_collection`), so the hub sees the host is
alive and why it knows nothing else.

The model is frozen attrs classes; :meth:`HostReport.to_json` is the wire form (compact
UTF-8 JSON, ``NaN``/``Infinity`` refused because they are not JSON). No field holds a secret.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import attrs

from felhom_agent.execution.status import (
    OP_STATES,
    BlockedGuest,
    OpResult,
    ReconcileStatus,
    RefusedAction,
)

__all__ = [
    "OP_STATES",
    "SCHEMA",
    "BlockedGuest",
    "GuestEntry",
    "HostReport",
    "NodeFacts",
    "OpResult",
    "ReconcileStatus",
    "RefusedAction",
    "ReportError",
]

SCHEMA = 1
def _finite(_inst: object, attr: attrs.Attribute[Any], value: float | None) -> None:
    if value is not None and not math.isfinite(value):
        raise ValueError(f"{attr.name} must be a finite number, got {value!r}")


@attrs.frozen
class NodeFacts:
    """The PVE node as read from the API; ``None`` where the agent could not read a fact."""

    name: str
    pve_version: str | None = None
    uptime_s: int | None = None
    cpu: float | None = attrs.field(default=None, validator=_finite)
    mem_used: int | None = None
    mem_total: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """The wire form of ``node``."""
        return attrs.asdict(self)


@attrs.frozen
class GuestEntry:
    """One guest on our node (``type`` is ``qemu`` or ``lxc``, as PVE names it)."""

    vmid: int
    type: str
    name: str | None
    status: str
    lock: str | None = None
    template: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The wire form of one ``guests`` entry (spelled out: ``attrs.asdict`` is 10x slower)."""
        return {
            "vmid": self.vmid,
            "type": self.type,
            "name": self.name,
            "status": self.status,
            "lock": self.lock,
            "template": self.template,
        }


@attrs.frozen
class ReportError:
    """Something the collector could not read (``source`` names the part, e.g. ``storage``)."""

    source: str
    message: str

    def to_dict(self) -> dict[str, Any]:
        """The wire form of one ``errors`` entry."""
        return attrs.asdict(self)


@attrs.frozen
class HostReport:
    """One heartbeat report (schema 1).

    Lists are tuples so a report is immutable once built; ``storage``, ``disks``,
    ``sensors``, ``backup``, ``restore``, ``pbs``, ``audit`` and ``guestapi`` hold JSON objects
    whose shape belongs to the parts of the agent that fill them (empty while the agent knows
    nothing there; ``guestapi`` has one ``{vmid, transport, listening, requests, refused,
    last_error}`` per guest whose local API is enabled). ``disks`` and ``sensors`` were added
    to schema 1 (fields are only ever added).
    """

    host_id: str
    agent_version: str
    collected_at: str
    node: NodeFacts | None = None
    guests: tuple[GuestEntry, ...] = ()
    reconcile: ReconcileStatus | None = None
    ops: tuple[OpResult, ...] = ()
    storage: tuple[Mapping[str, Any], ...] = ()
    disks: tuple[Mapping[str, Any], ...] = ()
    sensors: tuple[Mapping[str, Any], ...] = ()
    backup: tuple[Mapping[str, Any], ...] = ()
    restore: tuple[Mapping[str, Any], ...] = ()
    pbs: tuple[Mapping[str, Any], ...] = ()
    audit: tuple[Mapping[str, Any], ...] = ()
    guestapi: tuple[Mapping[str, Any], ...] = ()
    errors: tuple[ReportError, ...] = ()

    @classmethod
    def failed_collection(
        cls, *, host_id: str, agent_version: str, collected_at: str, error: ReportError
    ) -> HostReport:
        """A report for when collecting failed as a whole: identity plus the error, nothing else."""
        return cls(
            host_id=host_id,
            agent_version=agent_version,
            collected_at=collected_at,
            errors=(error,),
        )

    def with_errors(self, *errors: ReportError) -> HostReport:
        """Return a copy with ``errors`` appended (the loop adds its own findings this way)."""
        return attrs.evolve(self, errors=self.errors + errors)

    def to_dict(self) -> dict[str, Any]:
        """The wire form as plain JSON-ready data, keys in the documented order.

        The order is the one of ``docs/architecture.md`` ("Hub protocol"): ``schema``, then
        the fields in their declared order (an object's own ``to_dict``, a list for a tuple).
        """
        out: dict[str, Any] = {"schema": SCHEMA}
        for field in _FIELDS:
            out[field] = _wire(getattr(self, field))
        return out

    def to_json(self) -> bytes:
        """Compact UTF-8 JSON; raises ``ValueError`` for non-finite numbers (not valid JSON)."""
        return json.dumps(
            self.to_dict(), separators=(",", ":"), ensure_ascii=False, allow_nan=False
        ).encode("utf-8")


def _wire(value: Any) -> Any:
    """One report field in its wire form."""
    if isinstance(value, tuple):
        return [_wire(v) for v in value]
    if isinstance(value, Mapping):
        return dict(value)
    to_dict = getattr(value, "to_dict", None)
    return value if to_dict is None else to_dict()


#: The report's fields in wire order (the attrs declaration order).
_FIELDS: tuple[str, ...] = tuple(f.name for f in attrs.fields(HostReport))
