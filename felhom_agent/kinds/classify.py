"""The classifier: every plan action and signed op is benign or destructive.

The class of a kind is an attribute of its registry entry
(:data:`~felhom_agent.kinds.registry.REGISTRY`); this module turns an entry plus the config
keys a write touches into a verdict. Benign work may come from the unsigned desired state;
destructive work is refused there and runs only as a verified signed op, behind the
reversibility gate, which reads the verdict's reversibility:

* ``NONE_NEEDED`` — benign, nothing to undo beyond the action itself;
* ``SNAPSHOT`` — take a safety snapshot ``felhom-pre-<op id prefix>`` first (rollback, a
  non-benign config write);
* ``IRREVERSIBLE`` — cannot be undone (destroy, snapshot delete): only with
  ``"irreversible": true`` in the signed payload.

A config write is benign only when *every* key it touches is in :data:`BENIGN_CONFIG_KEYS`;
one other key makes the whole write destructive. An unknown kind is destructive and
irreversible: the agent refuses what it does not know rather than guessing. See
``docs/architecture.md`` ("Kinds").
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Final

import attrs

from felhom_agent.kinds.model import Reversibility, Safety, UnknownKind
from felhom_agent.kinds.registry import lookup

__all__ = [
    "BENIGN_CONFIG_KEYS",
    "Classification",
    "Reversibility",
    "Safety",
    "classify",
    "classify_action",
    "classify_op",
    "destructive_keys",
]

_B, _D = Safety.BENIGN, Safety.DESTRUCTIVE
_NONE, _SNAP, _IRREV = (
    Reversibility.NONE_NEEDED,
    Reversibility.SNAPSHOT,
    Reversibility.IRREVERSIBLE,
)

#: Config keys a benign write may touch; any other key is destructive.
BENIGN_CONFIG_KEYS: Final = frozenset({"description", "tags", "onboot", "startup"})


@attrs.frozen
class Classification:
    """The verdict for one action or op.

    Attributes:
        kind: the kind classified.
        safety: benign or destructive.
        reversibility: what the gate must do (``NONE_NEEDED`` for benign work).
        reason: empty for benign; otherwise why, e.g. ``"destructive key: memory"``,
            ``"destructive kind: guest.rollback"``, ``"unknown kind: guest.frobnicate"``.
    """

    kind: str
    safety: Safety
    reversibility: Reversibility
    reason: str = ""

    @property
    def benign(self) -> bool:
        """True when unsigned desired state may cause this."""
        return self.safety is Safety.BENIGN


def destructive_keys(keys: Iterable[str]) -> tuple[str, ...]:
    """The keys outside :data:`BENIGN_CONFIG_KEYS`, sorted and de-duplicated."""
    return tuple(sorted({k for k in keys if k not in BENIGN_CONFIG_KEYS}))


def _key_reason(keys: tuple[str, ...]) -> str:
    noun = "key" if len(keys) == 1 else "keys"
    return f"destructive {noun}: {', '.join(keys)}"


def classify(kind: str, *, config_keys: Iterable[str] = ()) -> Classification:
    """Classify ``kind``; for config writes, ``config_keys`` are the keys it touches.

    Args:
        kind: a plan action kind or a signed-op kind.
        config_keys: the keys set *or deleted* by a config write (ignored for other kinds).
    """
    try:
        policy = lookup(kind)
    except UnknownKind:
        return Classification(kind, _D, _IRREV, f"unknown kind: {kind}")
    if policy.config_write:
        bad = destructive_keys(config_keys)
        if bad:
            return Classification(kind, _D, _SNAP, _key_reason(bad))
        return Classification(kind, _B, _NONE)
    if policy.safety is _D:
        return Classification(kind, _D, policy.reversibility, f"destructive kind: {kind}")
    return Classification(kind, _B, _NONE)


def classify_action(kind: str, params: Mapping[str, object] | None = None) -> Classification:
    """Classify a plan action (``start``/``stop``/``set_config`` with its params)."""
    return classify(kind, config_keys=tuple(params or ()))


def classify_op(kind: str, *, config_keys: Iterable[str] = ()) -> Classification:
    """Classify a signed-op kind (``guest.*``); same registry, named for the op consumer."""
    return classify(kind, config_keys=config_keys)
