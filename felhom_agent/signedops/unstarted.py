"""A signed op accepted before a restart but never begun: run it, or report it expired.

The signed-op consumer (:mod:`felhom_agent.reconcile.signed`) marks an op's nonce durably
*before* anything of it runs, and the executor makes the op's journal ``begin`` durable
*before* its call is sent. So an op whose nonce is marked but whose op id has no journal
record was never sent to PVE: the process died between the mark and the ``begin`` (or the op
failed before any call without a record). The hub delivers such an op again until a report
shows its outcome; the verifier then answers "replay", and :func:`decide_unstarted` -- pure,
no I/O -- says what to do with it:

* :class:`Journalled` -- the journal knows the op id: its stored outcome is reported, or
  its pending ``begin`` is recovery's business (re-attached to its task, or ``unknown`` when
  no task is found -- only such an op may have reached PVE);
* :class:`NotAccepted` -- the delivered bytes are not the op this host accepted (another
  payload reusing its nonce or op id): a replay, refused;
* :class:`CannotTell` -- the journal may have forgotten records as young as the acceptance
  (its count bound, under a flood of signed ops): "no record" then proves nothing, and the
  op is refused as a replay rather than risk running it twice;
* :class:`ExpiredUnstarted` -- past its ``expires_at``: recorded ``failed`` ("expired before
  it ran") with one journal record, nothing sent;
* :class:`RunUnstarted` -- run it now, once. The op id guards it: the executor refuses a
  second ``begin``, and the consumer takes no second delivery of an op it is running. Its
  pre-steps (safety snapshot, stop first) have their own op ids (``<op_id>.safety-snapshot``,
  ``<op_id>.stop-first``): a step already in the journal is resumed from there -- its stored
  outcome used, or its task re-attached -- never sent again.

Whether an op is "never started" is thus read from the journal alone, and the outcome of one
that expired is a single record: no crash can leave a record that claims a call may have
been sent when none was (docs/architecture.md, "Signed operations").
"""

from __future__ import annotations

from datetime import datetime

import attrs

from felhom_agent.authz.envelope import SignedOp
from felhom_agent.authz.nonce_file import NonceRecord
from felhom_agent.utc import format_utc

__all__ = [
    "EXPIRED_REASON",
    "CannotTell",
    "ExpiredUnstarted",
    "Journalled",
    "NotAccepted",
    "RunUnstarted",
    "UnstartedDecision",
    "decide_unstarted",
]

#: The start of the reason reported for an accepted op that expired before it could run.
EXPIRED_REASON = "expired before it ran"


@attrs.frozen
class Journalled:
    """The journal holds the op id: report its outcome, or leave it to recovery."""


@attrs.frozen
class NotAccepted:
    """The delivered op is not the one this host accepted: keep the replay refusal."""

    reason: str


@attrs.frozen
class CannotTell:
    """The journal may have dropped the op's records: keep the replay refusal, with ``reason``."""

    reason: str


@attrs.frozen
class ExpiredUnstarted:
    """Accepted, never sent, now expired: record ``failed`` with ``reason`` (one record)."""

    reason: str


@attrs.frozen
class RunUnstarted:
    """Accepted, never sent, still valid: run it (journalled pre-steps are resumed)."""


UnstartedDecision = Journalled | NotAccepted | CannotTell | ExpiredUnstarted | RunUnstarted


def decide_unstarted(
    op: SignedOp,
    *,
    payload_sha256: str,
    accepted: NonceRecord | None,
    journalled: bool,
    now: datetime,
    forgotten: bool = False,
) -> UnstartedDecision:
    """What to do with a re-delivered signed op whose nonce or op id is already marked.

    Args:
        op: the delivered op (its signature verified).
        payload_sha256: hex SHA-256 of the delivered payload bytes.
        accepted: the nonce store's record for ``op.op_id`` (``None``: never accepted here,
            or pruned long after it expired).
        journalled: the journal holds a record for ``op.op_id`` (pending or finished).
        now: the current time (timezone-aware).
        forgotten: the journal may have forgotten outcomes recorded since the op was
            accepted (:meth:`Journal.may_have_forgotten
            <felhom_agent.state.journal.Journal.may_have_forgotten>`).
    """
    if journalled:
        return Journalled()
    if accepted is None:
        return NotAccepted(f"op {op.op_id} was not accepted by this host")
    if accepted.nonce != op.nonce or accepted.payload_sha256 != payload_sha256:
        return NotAccepted(f"op {op.op_id} was accepted at {format_utc(accepted.accepted_at)} "
                           "with a different nonce or payload")
    if forgotten:
        return CannotTell(f"op {op.op_id} was accepted at {format_utc(accepted.accepted_at)} and "
                          "the journal may no longer hold its records; not run again")
    if now > op.expires_at:
        return ExpiredUnstarted(
            f"{EXPIRED_REASON}: accepted at {format_utc(accepted.accepted_at)}, never sent, "
            f"expired at {format_utc(op.expires_at)}; not executed (sign a new op to run it)")
    return RunUnstarted()
