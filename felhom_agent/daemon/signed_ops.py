"""The seam where signed ops leave the hub loop, and its Phase A stand-in.

The hub envelope carries ``signed_ops`` (reference design §8, §10). Verifying, classifying and
gating them is Phase B; until then the daemon hands them to a :class:`SignedOpSink`, whose
default, :class:`DeferredSignedOps`, refuses every op *visibly*: one WARNING per op id
("signed ops arrive with Phase B") and an ``ops`` entry in every following report with state
``refused`` and that reason. Reporting the refusal matters: the hub re-delivers an op until a
report shows its outcome, so a silently dropped op would be re-sent forever.

Nothing here executes an op or trusts its payload: the payload is only scanned for its
``op_id`` string so the refusal can name it. An op without a readable ``op_id`` cannot be
reported (the hub keys outcomes by op id) and is logged once per distinct payload instead.

The Phase B engineer replaces :class:`DeferredSignedOps` with a verifying sink that implements
the same protocol; the daemon calls :meth:`SignedOpSink.reconfigure` on SIGHUP so a new
``authz.allowed_signers`` path takes effect without a restart.
"""

from __future__ import annotations

import collections
import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from felhom_agent.config import Config
from felhom_agent.hub.envelope import SignedOp
from felhom_agent.hub.report import OpResult, format_utc

__all__ = ["PHASE_B_REASON", "DeferredSignedOps", "SignedOpSink"]

PHASE_B_REASON = "signed ops arrive with Phase B"
_DEFAULT_KEEP = 200


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


def _op_id(payload: str) -> str | None:
    try:
        parsed = json.loads(payload)
    except ValueError:
        return None
    op_id = parsed.get("op_id") if isinstance(parsed, dict) else None
    return op_id if isinstance(op_id, str) and op_id else None


class DeferredSignedOps:
    """Refuses every signed op with :data:`PHASE_B_REASON` and reports the refusal.

    Args:
        clock: POSIX seconds, for ``finished_at``.
        logger: where the one warning per op goes.
        keep: the most refusals remembered (oldest dropped first); bounded so a hub that
            sends endless new ops cannot grow the agent's memory.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        logger: logging.Logger | None = None,
        keep: int = _DEFAULT_KEEP,
    ) -> None:
        self._clock = clock
        self._log = logger if logger is not None else logging.getLogger(__name__)
        self._lock = threading.Lock()
        self._refused: collections.OrderedDict[str, OpResult] = collections.OrderedDict()
        self._unreadable: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._keep = max(1, keep)

    def handle(self, ops: Sequence[SignedOp]) -> None:
        """Refuse each op not refused before (a re-delivery changes nothing)."""
        for op in ops:
            op_id = _op_id(op.payload)
            if op_id is None:
                self._note_unreadable(op)
                continue
            with self._lock:
                if op_id in self._refused:
                    continue
                self._refused[op_id] = OpResult(
                    op_id=op_id,
                    state="refused",
                    reason=PHASE_B_REASON,
                    finished_at=format_utc(self._clock()),
                )
                while len(self._refused) > self._keep:
                    self._refused.popitem(last=False)
            self._log.warning("signed op %s refused: %s", op_id, PHASE_B_REASON)

    def results(self) -> Sequence[OpResult]:
        """Every remembered refusal, oldest first."""
        with self._lock:
            return tuple(self._refused.values())

    def reconfigure(self, config: Config) -> None:
        """Nothing to reload: this sink verifies nothing."""
        self._log.debug("signed-op sink reconfigured (allowed signers %s unused until Phase B)",
                        config.authz.allowed_signers)

    def _note_unreadable(self, op: SignedOp) -> None:
        key = hashlib.sha256(op.payload.encode("utf-8", "replace")).hexdigest()
        with self._lock:
            if key in self._unreadable:
                return
            self._unreadable[key] = None
            while len(self._unreadable) > self._keep:
                self._unreadable.popitem(last=False)
        self._log.warning(
            "signed op without a readable op_id ignored (cannot report it): %s; %s",
            op.payload[:60], PHASE_B_REASON,
        )
