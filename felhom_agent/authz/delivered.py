"""A signed operation as the hub delivered it: the exact payload text and its SSHSIG armor.

Nothing here is verified yet; :class:`~felhom_agent.authz.verifier.OpVerifier` takes the
payload bytes as-is (never re-serialised) and the armored signature. The hub envelope parser
produces these and the signed-op consumer takes them, so the type lives here, below both.
"""

from __future__ import annotations

import attrs

__all__ = ["DeliveredOp"]


def _short(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


@attrs.frozen
class DeliveredOp:
    """One signed operation as delivered: the exact payload text and its SSHSIG armor."""

    payload: str = attrs.field(repr=_short)
    signature: str = attrs.field(repr=_short)
