"""The hub's answer to a report, parsed strictly but tolerantly.

The envelope's shape is in ``docs/architecture.md`` ("Hub protocol").

*Tolerant*: unknown fields -- top level and inside each signed op -- are ignored, so a newer
hub can add fields without breaking older agents; ``desired`` and ``signed_ops`` may be
absent or ``null``; ``poll_interval_s`` outside [1, 3600] is clamped, absent means the
configured ``hub.interval_s``.

*Strict*: a known field with the wrong type is an :class:`EnvelopeError` naming the field,
and the whole envelope is skipped -- acting on half of it (a desired state without the ops
that came with it) would be guessing. ``schema`` must be 1: a future schema may change what
the fields mean.

Signed ops keep ``payload`` and ``signature`` as the exact strings the hub sent; nothing here
re-serialises them, because the signature covers those bytes. The desired state is handed on
raw (a ``dict``): its own parser lives with the reconciler.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import attrs

from felhom_agent.authz.delivered import DeliveredOp as SignedOp
from felhom_agent.hub.errors import EnvelopeError

__all__ = [
    "MAX_POLL_INTERVAL_S",
    "MIN_POLL_INTERVAL_S",
    "Envelope",
    "SignedOp",
    "clamp_interval",
    "parse_envelope",
]

MIN_POLL_INTERVAL_S = 1.0
MAX_POLL_INTERVAL_S = 3600.0
_SCHEMA = 1


@attrs.frozen
class Envelope:
    """A parsed envelope.

    Args:
        poll_interval_s: seconds until the next report, already clamped to [1, 3600].
        desired: the raw desired-state object, or None (no change / nothing desired).
        signed_ops: the ops to verify and run, in the hub's order.
    """

    poll_interval_s: float
    desired: dict[str, Any] | None = None
    signed_ops: tuple[SignedOp, ...] = ()


def _type_name(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _wrong(field: str, expected: str, value: object) -> EnvelopeError:
    return EnvelopeError(
        f"hub envelope field {field!r} must be {expected}, got {_type_name(value)}", field=field
    )


def clamp_interval(value: float) -> float:
    """Clamp a poll interval to [1, 3600] seconds (the range the agent honours)."""
    return min(MAX_POLL_INTERVAL_S, max(MIN_POLL_INTERVAL_S, float(value)))


def _interval(raw: Mapping[str, Any], default_interval_s: float) -> float:
    value = raw.get("poll_interval_s")
    if value is None:
        return clamp_interval(default_interval_s)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _wrong("poll_interval_s", "a number of seconds", value)
    if not math.isfinite(value):
        raise EnvelopeError(
            f"hub envelope field 'poll_interval_s' must be finite, got {value!r}",
            field="poll_interval_s",
        )
    return clamp_interval(value)


def _signed_ops(raw: Mapping[str, Any]) -> tuple[SignedOp, ...]:
    value = raw.get("signed_ops")
    if value is None:
        return ()
    if not isinstance(value, list):
        raise _wrong("signed_ops", "a list", value)
    ops: list[SignedOp] = []
    for index, item in enumerate(value):
        where = f"signed_ops[{index}]"
        if not isinstance(item, dict):
            raise _wrong(where, "an object", item)
        parts: dict[str, str] = {}
        for key in ("payload", "signature"):
            text = item.get(key)
            if not isinstance(text, str):
                raise _wrong(f"{where}.{key}", "a string", text)
            parts[key] = text
        ops.append(SignedOp(payload=parts["payload"], signature=parts["signature"]))
    return tuple(ops)


def parse_envelope(raw: object, *, default_interval_s: float) -> Envelope:
    """Parse a decoded JSON envelope.

    Args:
        raw: the decoded response body.
        default_interval_s: the configured ``hub.interval_s``, used when the hub sends none.

    Raises:
        EnvelopeError: not an object, unsupported ``schema``, or a known field of wrong type.
    """
    if not isinstance(raw, dict):
        raise _wrong("(envelope)", "an object", raw)
    schema = raw.get("schema")
    if isinstance(schema, bool) or not isinstance(schema, int):
        raise _wrong("schema", "the integer 1", schema)
    if schema != _SCHEMA:
        raise EnvelopeError(
            f"hub envelope schema {schema} is not supported (this agent speaks {_SCHEMA})",
            field="schema",
        )
    desired = raw.get("desired")
    if desired is not None and not isinstance(desired, dict):
        raise _wrong("desired", "an object or null", desired)
    return Envelope(
        poll_interval_s=_interval(raw, default_interval_s),
        desired=desired,
        signed_ops=_signed_ops(raw),
    )
