"""Errors of the signed-operation verifier, and the stable rejection reasons.

Every way a signed op can fail has its own :class:`Reason` (a short, stable code that tests,
the hub report and ``--verify-op --json`` can rely on) plus a human detail. Everything this
package raises on purpose derives from :class:`AuthzError`, so the signed-op consumer can
catch exactly "this op is not acceptable" without also swallowing programming errors; only
:class:`felhom_agent.durable.DurabilityError` (a failed fsync while marking a nonce) is let
through unchanged, because the agent must stop on it rather than reject and carry on.
"""

from __future__ import annotations

import enum
from pathlib import Path

from felhom_agent.errors import AgentError

__all__ = ["AllowedSignersError", "AuthzError", "NonceStoreError", "OpRejected", "Reason"]


class Reason(enum.StrEnum):
    """Why a signed op was rejected; one code per verification step, in order.

    The order is ``docs/architecture.md`` ("Signed operations").
    """

    # armor and blob parse
    SIGNATURE_TOO_LARGE = "signature-too-large"
    ARMOR = "armor"
    BLOB = "blob"
    TRAILING_DATA = "trailing-data"
    SIG_VERSION = "signature-version"
    # namespace and hash
    NAMESPACE = "namespace"
    HASH_ALGORITHM = "hash-algorithm"
    # the embedded key and allowed_signers
    KEY_TYPE = "key-type"
    KEY_MALFORMED = "key-malformed"
    UNTRUSTED_KEY = "untrusted-key"
    NAMESPACE_NOT_PERMITTED = "namespace-not-permitted"
    KEY_NOT_YET_VALID = "key-not-yet-valid"
    KEY_EXPIRED = "key-expired"
    # the signature itself
    SIGNATURE_MALFORMED = "signature-malformed"
    SIGNATURE_TYPE_MISMATCH = "signature-type-mismatch"
    RSA_SHA1 = "rsa-sha1"
    USER_PRESENCE = "user-presence"
    BAD_SIGNATURE = "bad-signature"
    # the payload (parsed only after the signature holds)
    PAYLOAD_TOO_LARGE = "payload-too-large"
    PAYLOAD_JSON = "payload-json"
    DUPLICATE_MEMBER = "duplicate-member"
    UNKNOWN_FIELD = "unknown-field"
    MISSING_FIELD = "missing-field"
    VERSION = "version"
    KIND = "kind"
    FIELD_INVALID = "field-invalid"
    HOST_ID = "host-id"
    SIGNER = "signer"
    ISSUED_IN_FUTURE = "issued-in-future"
    EXPIRED = "expired"
    LIFETIME = "lifetime"
    # replay protection
    NONCE_STORE_UNAVAILABLE = "nonce-store-unavailable"
    CLOCK_MOVED_BACK = "clock-moved-back"
    NONCE_REPLAY = "nonce-replay"
    OP_ID_REPLAY = "op-id-replay"
    OP_ID_HAS_OUTCOME = "op-id-has-outcome"


class AuthzError(AgentError):
    """Root of the errors raised by :mod:`felhom_agent.authz`."""


class OpRejected(AuthzError, ValueError):
    """A signed op (or its signature) is not acceptable.

    ``str(err)`` is ``"<reason>: <detail>"``, fit for a log line, the hub report and
    ``--verify-op`` output. It never contains key material or payload bytes beyond short ids.

    Args:
        reason: the stable code of the failed step.
        detail: what exactly was wrong, for the operator.
    """

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


class NonceStoreError(AuthzError, OSError):
    """The nonce store cannot be used or reset; the message names the file and what to do."""


class AllowedSignersError(AuthzError, ValueError):
    """The allowed_signers file cannot be used; the message names the file, line and fix.

    The whole file is refused (not just the offending line, as ``ssh-keygen`` would skip it):
    a trust file the agent only half understands must not silently authorise less or more
    than the operator wrote.

    Args:
        message: what is wrong and how to fix it.
        path: the file concerned.
        line: the 1-based line number, when one line is at fault.
    """

    def __init__(self, message: str, *, path: Path, line: int | None = None) -> None:
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {message}")
        self.path = path
        self.line = line
