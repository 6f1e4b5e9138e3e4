"""Operator-signed operations: SSHSIG verification, allowed_signers, op envelope, nonces.

See :mod:`felhom_agent.authz.verifier` for the verification order (``docs/architecture.md`` ("Signed
operations")) and :mod:`felhom_agent.authz.nonces` for the durable replay store.
"""

from __future__ import annotations

from felhom_agent.authz.envelope import SignedOp
from felhom_agent.authz.errors import AllowedSignersError, AuthzError, OpRejected, Reason
from felhom_agent.authz.nonces import FileNonceStore, NonceStoreError, reset_store
from felhom_agent.authz.signers import AllowedSigners, load_allowed_signers
from felhom_agent.authz.verifier import NonceStore, OpVerifier, VerifiedOp, VerifyPolicy
from felhom_agent.authz.verify_cmd import verify_op_command

__all__ = [
    "AllowedSigners",
    "AllowedSignersError",
    "AuthzError",
    "FileNonceStore",
    "NonceStore",
    "NonceStoreError",
    "OpRejected",
    "OpVerifier",
    "Reason",
    "SignedOp",
    "VerifiedOp",
    "VerifyPolicy",
    "load_allowed_signers",
    "reset_store",
    "verify_op_command",
]
