"""The seam where signed ops leave the hub loop.

The hub envelope carries ``signed_ops`` (``docs/architecture.md``, "Hub protocol"). The daemon hands
them to a :class:`SignedOpSink`; in production that is the verifying consumer of
:mod:`felhom_agent.signedops.consumer` (verify → gate → queue → journal), built from the same parts
as the engine. The sink reports every outcome through :meth:`SignedOpSink.results`, including
refusals: the hub re-delivers an op until a report shows its outcome, so a silently dropped op would
be re-sent forever. The daemon calls :meth:`SignedOpSink.reconfigure` on SIGHUP so a new
``authz.allowed_signers`` takes effect without a restart.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from felhom_agent.authz.delivered import DeliveredOp as SignedOp
from felhom_agent.authz.verifier import VerifyPolicy
from felhom_agent.execution.status import OpResult

__all__ = ["SignedOpSink"]



class SignedOpSink(Protocol):
    """Receives the envelope's signed ops; reports their outcomes through :meth:`results`."""

    def handle(self, ops: Sequence[SignedOp]) -> None:
        """Take this envelope's ops (called on the hub loop thread; must return quickly)."""
        ...

    def results(self) -> Sequence[OpResult]:
        """Outcomes this sink decided itself, for the next report's ``ops``."""
        ...

    def reconfigure(self, *, allowed_signers: Path, policy: VerifyPolicy) -> None:
        """Apply a reloaded ``authz`` (SIGHUP): a new allowed-signers file, new limits."""
        ...

    def close(self) -> None:
        """Release what the sink holds (the nonce store's lock) at shutdown."""
        ...
