"""Hub simulator fault injection: faults are data, consumed by a thread-safe book.

Kinds (what the next matching report request gets):

* ``http_error`` -- status ``status`` (default 500; 401/403 simulate a revoked token),
  answered before authentication, the report is not recorded;
* ``slow`` -- the answer is held ``delay_s`` seconds (past the client's timeout, usually),
  then served normally; the wait ends early when the simulator closes;
* ``garbage`` -- 200 with ``body`` (default: not JSON at all); ``body: "[1, 2]"`` gives JSON
  that is not an object;
* ``wrong_types`` -- 200 with an envelope whose known fields have the wrong types;
* ``drop`` -- the request is read and the connection closed without any answer.

A fault with ``count`` fires that many times, then retires; without it, it fires until
:meth:`FaultBook.clear`. Faults fire in the order they were added.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping

import attrs

__all__ = ["FAULT_KINDS", "FaultBook", "HubFault"]

FAULT_KINDS = ("http_error", "slow", "garbage", "wrong_types", "drop")


def _kind(_inst: object, _attr: object, value: str) -> None:
    if value not in FAULT_KINDS:
        raise ValueError(f"fault kind {value!r} is not one of {', '.join(FAULT_KINDS)}")


def _count(_inst: object, _attr: object, value: int | None) -> None:
    if value is not None and value < 1:
        raise ValueError(f"fault count must be >= 1 or absent, got {value!r}")


def _delay(_inst: object, _attr: object, value: float) -> None:
    if not 0 <= value <= 3600:
        raise ValueError(f"fault delay_s must be within [0, 3600], got {value!r}")


def _status(_inst: object, _attr: object, value: int) -> None:
    if not 400 <= value <= 599:
        raise ValueError(f"fault status must be an HTTP error status (400-599), got {value!r}")


@attrs.frozen
class HubFault:
    """One injected fault (see the module docstring for the kinds)."""

    kind: str = attrs.field(validator=_kind)
    count: int | None = attrs.field(default=None, validator=_count)
    status: int = attrs.field(default=500, validator=_status)
    delay_s: float = attrs.field(default=0.0, validator=_delay)
    body: str = "<html>this is not JSON{"

    @classmethod
    def from_dict(cls, d: Mapping[str, object]) -> HubFault:
        """Build from a scenario mapping; raises ``ValueError``/``TypeError`` naming the key."""
        known = {f.name: f for f in attrs.fields(cls)}
        for key in d:
            if key not in known:
                raise ValueError(f"unknown fault key {key!r} (known: {', '.join(known)})")
        kind = d.get("kind")
        if not isinstance(kind, str):
            raise TypeError(f"fault 'kind' must be a string, got {kind!r}")
        count = d.get("count")
        if count is not None and (isinstance(count, bool) or not isinstance(count, int)):
            raise TypeError(f"fault 'count' must be an integer, got {count!r}")
        status = d.get("status", 500)
        if isinstance(status, bool) or not isinstance(status, int):
            raise TypeError(f"fault 'status' must be an integer, got {status!r}")
        delay = d.get("delay_s", 0.0)
        if isinstance(delay, bool) or not isinstance(delay, int | float):
            raise TypeError(f"fault 'delay_s' must be a number, got {delay!r}")
        body = d.get("body", "<html>this is not JSON{")
        if not isinstance(body, str):
            raise TypeError(f"fault 'body' must be a string, got {body!r}")
        return cls(kind=kind, count=count, status=status, delay_s=float(delay), body=body)


@attrs.define
class _Armed:
    fault: HubFault
    remaining: int | None


class FaultBook:
    """The active faults; :meth:`take` consumes one firing of the first armed fault."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._armed: list[_Armed] = []
        self._fired = 0

    def add(self, fault: HubFault) -> None:
        """Arm ``fault`` after the ones already armed."""
        with self._lock:
            self._armed.append(_Armed(fault, fault.count))

    def clear(self) -> None:
        """Disarm every fault."""
        with self._lock:
            self._armed.clear()

    def take(self) -> HubFault | None:
        """The fault for this request, if any, counting one firing."""
        with self._lock:
            if not self._armed:
                return None
            head = self._armed[0]
            self._fired += 1
            if head.remaining is not None:
                head.remaining -= 1
                if head.remaining <= 0:
                    self._armed.pop(0)
            return head.fault

    def fired(self) -> int:
        """How many requests a fault has answered so far (for soak and fault tallies)."""
        with self._lock:
            return self._fired

    def armed(self) -> tuple[HubFault, ...]:
        """The faults still armed, in firing order."""
        with self._lock:
            return tuple(a.fault for a in self._armed)
