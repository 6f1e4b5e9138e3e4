"""The signed-op verifier: SSHSIG + allowed_signers + envelope + replay, in order.

The order is the one of ``docs/architecture.md`` ("Signed operations").

Order (each failure its own :class:`~felhom_agent.authz.errors.Reason`):

1. payload size cap; armor and blob parse (strict);
2. namespace is exactly ``policy.namespace``;
3. hash algorithm is sha256 or sha512;
4. the embedded key is a supported type and is in allowed_signers, with the line's
   ``namespaces=`` and validity window allowing it *now*;
5. the signature verifies over the SSHSIG signed data built from the expected namespace and
   the exact payload bytes;
6. only now is the payload parsed (:mod:`felhom_agent.authz.envelope`); a ``signer`` member
   must be a principal of a line that trusts the key;
7. host, time and lifetime rules;
8. nonce and op id never accepted before (the nonce store), op id has no outcome (the
   journal hook).

:meth:`OpVerifier.verify` is side-effect free (``--verify-op`` uses it as a dry check);
:meth:`OpVerifier.mark` durably consumes the nonce and must be called *before* the op is
executed. A crash in between leaves the op consumed but never sent; when it is delivered
again the signed-op consumer runs it once if it has not expired
(:mod:`felhom_agent.signedops.unstarted`): nothing can run it twice, since the journal's op id
guards the call.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Protocol

import attrs

from felhom_agent.authz.envelope import (
    MAX_PAYLOAD_SIZE,
    SignedOp,
    check_envelope,
    parse_payload,
)
from felhom_agent.authz.errors import OpRejected, Reason
from felhom_agent.authz.signers import AllowedSigners
from felhom_agent.authz.sshkeys import SshPublicKey, parse_public_key
from felhom_agent.authz.sshsig import HASH_ALGORITHMS, parse_armored, signed_data

__all__ = ["NonceStore", "OpVerifier", "VerifiedOp", "VerifyPolicy"]


def _kinds(value: Iterable[str]) -> frozenset[str]:
    return frozenset(value)


@attrs.frozen
class VerifyPolicy:
    """The ``authz`` settings plus our host id.

    Attributes:
        host_id: the op's ``host_id`` must equal this.
        namespace: the SSHSIG namespace (``ssh-keygen -Y sign -n``).
        max_clock_skew_s: how far ``issued_at`` may be ahead of our clock.
        max_op_lifetime_s: the longest allowed ``expires_at - issued_at``.
        kinds: the signed-op allow-list; the composition root passes the kind registry's
            signed names (``felhom_agent.kinds.registry.SIGNED_KINDS``).
        host_kinds: the kinds among them that act on the host, not a guest: their payload
            carries ``"vmid": null`` (the registry's ``HOST_KINDS``).
    """

    host_id: str
    namespace: str = "felhom-op"
    max_clock_skew_s: int = 120
    max_op_lifetime_s: int = 900
    kinds: frozenset[str] = attrs.field(kw_only=True, converter=_kinds)
    host_kinds: frozenset[str] = attrs.field(kw_only=True, factory=frozenset, converter=_kinds)


@attrs.frozen
class VerifiedOp:
    """An op whose signature and envelope passed.

    Attributes:
        op: the parsed payload.
        principal: who signed it (the payload's ``signer``, else the first principal of the
            first allowed_signers line that trusts the key); goes into the audit log.
        key_type: the signing key's type.
        key_fingerprint: ``SHA256:…`` of the signing key.
        payload_sha256: hex SHA-256 of the exact payload bytes (an id that, unlike the
            signature bytes, is not malleable).
    """

    op: SignedOp
    principal: str
    key_type: str
    key_fingerprint: str
    payload_sha256: str


class NonceStore(Protocol):
    """What the verifier needs from a nonce store (:class:`~.nonces.FileNonceStore`)."""

    def check(self, op: SignedOp, now: datetime) -> None:
        """Raise :class:`OpRejected` if ``op`` is a replay or the store is unusable."""

    def mark(self, op: SignedOp, *, signer: str, payload_sha256: str, now: datetime) -> None:
        """Durably record ``op`` as accepted (re-checking for a replay first)."""


@attrs.frozen
class OpVerifier:
    """Checks signed ops fully; see the module docstring for the order.

    Attributes:
        signers: the trusted keys (swap in a reloaded one with ``attrs.evolve`` on SIGHUP).
        policy: namespace, host id and time limits.
        now: the clock (timezone-aware UTC datetimes); injected for tests.
        nonce_store: the replay store; ``None`` skips the replay check (only for tools that
            do not execute, and :meth:`mark` then refuses).
        has_outcome: journal hook, ``op_id -> True`` if that op already has an outcome.
    """

    signers: AllowedSigners
    policy: VerifyPolicy
    now: Callable[[], datetime]
    nonce_store: NonceStore | None = None
    has_outcome: Callable[[str], bool] | None = None

    def verify(
        self, payload: bytes, signature: bytes | str, *, principal: str | None = None
    ) -> VerifiedOp:
        """Check ``payload`` (the exact bytes received) against its armored ``signature``.

        Args:
            payload: the exact signed bytes.
            signature: the armored SSHSIG text.
            principal: require this signer, like ``ssh-keygen -Y verify -I`` (optional; the
                payload's own ``signer`` member, if any, must then be the same).

        Raises:
            OpRejected: the first failed rule, with its reason.
        """
        now = self.now()
        if now.tzinfo is None:
            raise ValueError("the verifier clock must return timezone-aware datetimes")
        key, found = self.verify_signature(payload, signature, now=now, principal=principal)
        op = parse_payload(payload, kinds=self.policy.kinds, host_kinds=self.policy.host_kinds)
        if principal is not None and op.signer is not None and op.signer != principal:
            raise OpRejected(
                Reason.SIGNER, f"payload names signer {op.signer!r}, expected {principal!r}"
            )
        principal = found
        if op.signer is not None:
            principal = self.signers.authorize(
                key, namespace=self.policy.namespace, now=now, principal=op.signer
            )
        check_envelope(
            op,
            host_id=self.policy.host_id,
            now=now,
            max_clock_skew_s=self.policy.max_clock_skew_s,
            max_op_lifetime_s=self.policy.max_op_lifetime_s,
        )
        if self.nonce_store is not None:
            self.nonce_store.check(op, now)
        if self.has_outcome is not None and self.has_outcome(op.op_id):
            raise OpRejected(Reason.OP_ID_HAS_OUTCOME, f"op {op.op_id} already has an outcome")
        return VerifiedOp(
            op=op,
            principal=principal,
            key_type=key.key_type,
            key_fingerprint=key.fingerprint,
            payload_sha256=hashlib.sha256(payload).hexdigest(),
        )

    def verify_signature(
        self,
        payload: bytes,
        signature: bytes | str,
        *,
        now: datetime,
        principal: str | None = None,
    ) -> tuple[SshPublicKey, str]:
        """Steps 1-5: who signed ``payload``; the payload itself is not parsed.

        ``principal``, if given, restricts the allowed_signers lines to those naming it
        (``ssh-keygen -Y verify -I``).

        Returns:
            The trusted key and the principal of the first allowed_signers line for it.

        Raises:
            OpRejected: the first failed rule, with its reason.
        """
        if len(payload) > MAX_PAYLOAD_SIZE:
            raise OpRejected(
                Reason.PAYLOAD_TOO_LARGE, f"{len(payload)} bytes (maximum {MAX_PAYLOAD_SIZE})"
            )
        if isinstance(signature, str):
            try:
                signature = signature.encode("ascii")
            except UnicodeEncodeError as err:
                raise OpRejected(Reason.ARMOR, "signature text is not ASCII") from err
        sig = parse_armored(signature)
        expected = self.policy.namespace
        if sig.namespace != expected.encode("utf-8"):
            shown = sig.namespace.decode("utf-8", "replace")[:64]
            raise OpRejected(
                Reason.NAMESPACE, f"signature namespace {shown!r}, expected {expected!r}"
            )
        hash_name = sig.hash_algorithm.decode("ascii", "replace")
        if hash_name not in HASH_ALGORITHMS:
            raise OpRejected(
                Reason.HASH_ALGORITHM, f"hash {hash_name[:32]!r} (allowed: sha256, sha512)"
            )
        key = parse_public_key(sig.public_key)
        found = self.signers.authorize(key, namespace=expected, now=now, principal=principal)
        key.verify(sig.signature, signed_data(expected, hash_name, payload))
        return key, found

    def mark(self, verified: VerifiedOp) -> None:
        """Durably consume the op's nonce and op id; call right before executing it.

        Raises:
            OpRejected: the op expired or got an outcome meanwhile, was accepted meanwhile
                (replay), or the store is unusable.
            DurabilityError: the record could not be made durable (stop the agent).
        """
        if self.nonce_store is None:
            raise OpRejected(
                Reason.NONCE_STORE_UNAVAILABLE, "no nonce store configured: cannot accept ops"
            )
        now = self.now()
        op = verified.op
        # verify() and mark() may be apart (a queue, a slow hub loop): re-check what time or
        # another thread could have changed since.
        if now > op.expires_at:
            raise OpRejected(Reason.EXPIRED, f"op {op.op_id} expired before it was accepted")
        if self.has_outcome is not None and self.has_outcome(op.op_id):
            raise OpRejected(Reason.OP_ID_HAS_OUTCOME, f"op {op.op_id} already has an outcome")
        self.nonce_store.mark(
            op, signer=verified.principal, payload_sha256=verified.payload_sha256, now=now
        )
