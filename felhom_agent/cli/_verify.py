"""``--verify-op OP_FILE --signature SIG_FILE``: the dry check of a signed operation."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from felhom_agent.authz.verify_cmd import verify_op_command
from felhom_agent.compose.root import NONCE_STORE_NAME, verify_policy
from felhom_agent.config import Config

__all__ = ["verify_command"]


def verify_command(config: Config, op_path: Path, sig_path: Path, *, as_json: bool,
                   now: Callable[[], datetime]) -> tuple[int, str]:
    """Verify against ``authz.*`` and the daemon's nonce store (read-only, when it exists).

    When the store does not exist yet (no op was ever accepted on this host) replay cannot
    have happened, and the output says replay was not checked.
    """
    store = config.state_dir / NONCE_STORE_NAME
    policy = verify_policy(config)
    return verify_op_command(
        allowed_signers=config.authz.allowed_signers,
        policy=policy,
        op_path=op_path,
        sig_path=sig_path,
        nonce_store_path=store if store.exists() else None,
        as_json=as_json,
        now=now,
    )
