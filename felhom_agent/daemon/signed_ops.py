"""The seam where signed ops leave the hub loop.

The hub envelope carries ``signed_ops`` (reference design §8, §10). The daemon hands them to a
:class:`SignedOpSink`; in production that is the verifying consumer of
:mod:`felhom_agent.signedops.consumer` (verify → gate → queue → journal), built from the same
parts as the engine. The sink reports every outcome through :meth:`SignedOpSink.results`,
including refusals: the hub re-delivers an op until a report shows its outcome, so a silently
dropped op would be re-sent forever. The daemon calls :meth:`SignedOpSink.reconfigure` on
SIGHUP so a new ``authz.allowed_signers`` takes effect without a restart.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from felhom_agent.config import Config
from felhom_agent.hub.envelope import SignedOp
from felhom_agent.hub.report import OpResult

__all__ = ["SignedOpSink"]



class SignedOpSink(Protocol):
    """Receives the envelope's signed ops; reports their outcomes through :meth:`results`."""

    def handle(self, ops: Sequence[SignedOp]) -> None:
        """Take this envelope's ops (called on the hub loop thread; must return quickly)."""
        ...

    def results(self) -> Sequence[OpResult]:
        """Outcomes this sink decided itself, for the next report's ``ops``."""
        ...

    def reconfigure(self, config: Config) -> None:
        """Apply a reloaded configuration (SIGHUP): e.g. a new allowed-signers file."""
        ...

    def close(self) -> None:
        """Release what the sink holds (the nonce store's lock) at shutdown."""
        ...
