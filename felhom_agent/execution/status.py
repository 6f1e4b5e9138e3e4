"""What the engine and the signed-op consumer say about their work: status and op outcomes.

These are the agent's own records of reconciling and of ops; the hub report carries them
as they are (``reconcile`` and ``ops``, :mod:`felhom_agent.hub.report`). They live here, with
the execution layer that produces them, so the import graph runs one way: the hub side
imports execution, never the reverse (``docs/architecture.md``, "Package map").
"""

from __future__ import annotations

from typing import Any

import attrs

__all__ = ["OP_STATES", "BlockedGuest", "OpResult", "ReconcileStatus", "RefusedAction",
           "RestoreEntry"]

#: Op states the hub understands; anything but ``running`` is an outcome that stops redelivery.
OP_STATES = frozenset({"applied", "failed", "refused", "unknown", "running"})


def _op_state(_inst: object, _attr: object, value: str) -> None:
    if value not in OP_STATES:
        raise ValueError(f"op state {value!r} is not one of {', '.join(sorted(OP_STATES))}")


@attrs.frozen
class BlockedGuest:
    """A guest the last plan left alone this pass, with why (``locked: backup``)."""

    vmid: int
    reason: str


@attrs.frozen
class RefusedAction:
    """A desired change the classifier refused (destructive from unsigned desired state)."""

    vmid: int
    kind: str
    reason: str


@attrs.frozen
class ReconcileStatus:
    """What the reconciler did last; ``generation``/``last_plan_at`` are None before a plan."""

    generation: int | None = None
    last_plan_at: str | None = None
    actions: int = 0
    blocked: tuple[BlockedGuest, ...] = ()
    refused: tuple[RefusedAction, ...] = ()
    errors: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The wire form of ``reconcile``."""
        return {
            "generation": self.generation,
            "last_plan_at": self.last_plan_at,
            "actions": self.actions,
            "blocked": [attrs.asdict(b) for b in self.blocked],
            "refused": [attrs.asdict(r) for r in self.refused],
            "errors": list(self.errors),
        }


@attrs.frozen
class OpResult:
    """The outcome of a signed op; the hub stops redelivering an op once this is not running.

    ``vmid`` is the op's guest: ``None`` for a host op (``host.*``), and for an op refused
    before its payload could be read.
    """

    op_id: str
    state: str = attrs.field(validator=_op_state)
    reason: str | None = None
    upid: str | None = None
    finished_at: str | None = None
    vmid: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """The wire form of one ``ops`` entry."""
        return attrs.asdict(self)


@attrs.frozen
class RestoreEntry:
    """One signed restore, as the report's ``restore`` carries it.

    Attributes:
        op_id: the signed op's id.
        vmid: the target guest.
        archive: the backup restored from (``None`` only for a record that lost its params).
        state: as in ``ops`` (``running`` until the restore has an outcome).
        safety_backup: the volid of the safety backup taken first, or ``None`` (a free
            target needs none; or it failed, or is still running).
        upid: the restore's own task.
        finished_at: when its outcome was recorded.
        reason: the outcome's reason (a refusal's or failure's text).
    """

    op_id: str
    vmid: int
    archive: str | None
    state: str = attrs.field(validator=_op_state)
    safety_backup: str | None = None
    upid: str | None = None
    finished_at: str | None = None
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The wire form of one ``restore`` entry."""
        return attrs.asdict(self)
