"""The pure decision for a re-delivered op whose nonce is marked (accepted before a restart)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from felhom_agent.authz.envelope import SignedOp
from felhom_agent.authz.nonce_file import NonceRecord
from felhom_agent.signedops.unstarted import (
    EXPIRED_REASON,
    CannotTell,
    ExpiredUnstarted,
    Journalled,
    NotAccepted,
    RunUnstarted,
    decide_unstarted,
)

T0 = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
SHA = "ab" * 32
OP = SignedOp(op_id="0b9f3c2a-1d4e-4f00-8a6b-123456789abc", host_id="pve1",
              kind="guest.rollback", vmid=101, params={"snapname": "initial"},
              irreversible=False, nonce="0f" * 16, issued_at=T0,
              expires_at=T0 + timedelta(minutes=10))
ACCEPTED = NonceRecord(nonce=OP.nonce, op_id=OP.op_id, signer="alice@ops", payload_sha256=SHA,
                       issued_at=OP.issued_at, expires_at=OP.expires_at,
                       accepted_at=T0 + timedelta(seconds=3))


def decide(*, accepted: NonceRecord | None = ACCEPTED, journalled: bool = False,
           now: datetime = T0 + timedelta(minutes=1), sha: str = SHA,
           forgotten: bool = False) -> object:
    return decide_unstarted(OP, payload_sha256=sha, accepted=accepted, journalled=journalled,
                            now=now, forgotten=forgotten)


def test_accepted_never_begun_and_valid_runs() -> None:
    """Nonce marked, no journal record, not expired: it was never sent, so it runs."""
    assert decide() == RunUnstarted()
    assert decide(now=OP.expires_at) == RunUnstarted()  # valid up to and including expiry


def test_accepted_never_begun_and_expired_fails_with_the_reason() -> None:
    """Past ``expires_at`` it is reported failed, saying it expired before it ran."""
    decision = decide(now=OP.expires_at + timedelta(seconds=1))
    assert isinstance(decision, ExpiredUnstarted)
    assert decision.reason.startswith(EXPIRED_REASON)
    assert "2026-11-26T10:10:00Z" in decision.reason


def test_a_journal_record_leaves_it_to_the_journal() -> None:
    """Begun (pending: recovery decides) or finished: never run or re-decided here."""
    assert decide(journalled=True) == Journalled()
    assert decide(journalled=True, now=OP.expires_at + timedelta(hours=1)) == Journalled()


@pytest.mark.parametrize("accepted", [
    None,
    attrs.evolve(ACCEPTED, nonce="11" * 16),
    attrs.evolve(ACCEPTED, payload_sha256="cd" * 32),
])
def test_not_the_accepted_op_stays_a_replay(accepted: NonceRecord | None) -> None:
    """Another payload reusing the op id (or one never accepted here) is not run."""
    assert isinstance(decide(accepted=accepted), NotAccepted)


def test_a_journal_that_may_have_dropped_its_records_proves_nothing() -> None:
    """If records as young as the acceptance may be forgotten, "no record" is no proof."""
    for now in (T0 + timedelta(minutes=1), OP.expires_at + timedelta(minutes=1)):
        decision = decide(forgotten=True, now=now)
        assert isinstance(decision, CannotTell)
        assert "not run again" in decision.reason


@given(journalled=st.booleans(), same=st.booleans(), present=st.booleans(),
       forgotten=st.booleans(), offset_s=st.integers(min_value=-3600, max_value=3600))
def test_runs_only_what_was_accepted_never_begun_and_unexpired(
        journalled: bool, same: bool, present: bool, forgotten: bool, offset_s: int) -> None:
    """Exactly one combination runs the op; an op with a journal record is never run."""
    accepted = (ACCEPTED if same else attrs.evolve(ACCEPTED, payload_sha256="cd" * 32)
                ) if present else None
    now = OP.expires_at + timedelta(seconds=offset_s)
    decision = decide(accepted=accepted, journalled=journalled, now=now, forgotten=forgotten)
    provable = not journalled and present and same and not forgotten
    assert isinstance(decision, RunUnstarted) == (provable and now <= OP.expires_at)
    assert isinstance(decision, ExpiredUnstarted) == (provable and now > OP.expires_at)
    if journalled:
        assert decision == Journalled()
