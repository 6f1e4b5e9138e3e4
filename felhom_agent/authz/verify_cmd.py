"""``--verify-op OP_FILE --signature SIG_FILE``: check a signed op without executing it.

A dry check (``docs/architecture.md``, "Command line"): the same verifier the daemon uses, with the
nonce store (if given) opened read-only, so a replay is reported but nothing is consumed. Exit
status 0 valid, 1 rejected, 2 usage (an unreadable file, an unusable allowed_signers file). A
damaged or unreadable nonce store is a rejection (1, ``nonce-store-unavailable``): the daemon would
refuse the op for the same reason.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from felhom_agent.authz.envelope import MAX_PAYLOAD_SIZE
from felhom_agent.authz.errors import AllowedSignersError, OpRejected
from felhom_agent.authz.nonces import FileNonceStore
from felhom_agent.authz.signers import load_allowed_signers
from felhom_agent.authz.sshsig import MAX_ARMORED_SIZE
from felhom_agent.authz.verifier import OpVerifier, VerifyPolicy

__all__ = ["verify_op_command"]

EXIT_VALID = 0
EXIT_REJECTED = 1
EXIT_USAGE = 2


def verify_op_command(
    *,
    allowed_signers: Path,
    policy: VerifyPolicy,
    op_path: Path,
    sig_path: Path,
    nonce_store_path: Path | None,
    as_json: bool,
    now: Callable[[], datetime],
) -> tuple[int, str]:
    """Run the check and render the result.

    Returns:
        ``(exit status, output text without trailing newline)``. Text: the principal and a
        one-line summary, or ``rejected: <reason>``. JSON: ``{"valid": true, "principal",
        "op_id", "kind", "vmid"}`` or ``{"valid": false, "reason"}``.
    """
    try:
        payload = _read(op_path, MAX_PAYLOAD_SIZE + 1, "OP_FILE")
        signature = _read(sig_path, MAX_ARMORED_SIZE + 1, "SIG_FILE")
        signers = load_allowed_signers(allowed_signers)
    except (_Unreadable, AllowedSignersError) as err:
        return EXIT_USAGE, _render_failure(str(err), as_json)

    store = None
    if nonce_store_path is not None:
        store = FileNonceStore.open(
            nonce_store_path,
            now=now(),
            max_clock_skew_s=policy.max_clock_skew_s,
            max_op_lifetime_s=policy.max_op_lifetime_s,
            read_only=True,
        )
    try:
        verifier = OpVerifier(signers=signers, policy=policy, now=now, nonce_store=store)
        verified = verifier.verify(payload, signature)
    except OpRejected as err:
        return EXIT_REJECTED, _render_failure(str(err), as_json)
    finally:
        if store is not None:
            store.close()

    op = verified.op
    if as_json:
        doc = {
            "valid": True,
            "principal": verified.principal,
            "op_id": op.op_id,
            "kind": op.kind,
            "vmid": op.vmid,
        }
        return EXIT_VALID, json.dumps(doc)
    lines = [
        f"valid: signed by {verified.principal} "
        f"({verified.key_type} key {verified.key_fingerprint})",
        op.summary(),
    ]
    if nonce_store_path is None:
        lines.append("note: no nonce store given, replay not checked")
    lines.extend(f"warning: {w}" for w in signers.warnings)
    return EXIT_VALID, "\n".join(lines)


class _Unreadable(Exception):
    pass


def _read(path: Path, limit: int, what: str) -> bytes:
    try:
        with path.open("rb") as handle:
            return handle.read(limit)
    except OSError as err:
        raise _Unreadable(f"cannot read {what} {path}: {err.strerror}") from err


def _render_failure(reason: str, as_json: bool) -> str:
    if as_json:
        return json.dumps({"valid": False, "reason": reason})
    return f"rejected: {reason}"
