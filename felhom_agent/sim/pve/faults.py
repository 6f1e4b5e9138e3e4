"""Fault injection: latency, HTTP 5xx, dropped connections, failing and never-ending tasks.

Faults are data (:class:`Fault`) held by a thread-safe :class:`FaultBook`. HTTP faults match
a request by method and a glob over the path below ``/api2/json`` (``*`` also crosses
``/``, e.g. ``/nodes/*/qemu/101/*``); task faults match a task by type and/or vmid. A fault
with ``count`` fires that many times and then retires; without it it fires forever. Latency
waits are interruptible: :meth:`FaultBook.clear` and shutdown wake every sleeping request, so
tests can hold requests deliberately and release them without sleeping on the wall clock.
"""

from __future__ import annotations

import fnmatch
import threading
from collections.abc import Mapping
from typing import Any

import attrs

__all__ = ["BACKUP_KINDS", "FAULT_KINDS", "Fault", "FaultBook"]

#: ``latency`` (delay a request), ``http_error`` (answer ``status`` with ``message``),
#: ``drop`` (close the connection without a response), ``drop_after`` (process the request,
#: e.g. fork the task, then close without a response: the "outcome unknown" case),
#: ``no_such_task`` (answer 400 ``{"upid": "no such task"}``, as a status read right after
#: dispatch may), ``task_fail`` (the task ends with exitstatus ``message``), ``task_hang``
#: (the task never finishes until stopped or shutdown), ``task_crash`` (the worker dies hard
#: at its end: no ``TASK`` line, exitstatus ``unexpected status``, no cleanup -- every lock it
#: set stays, like a killed ``qmclone``/``vzrestore``). Per guest inside a vzdump task:
#: ``backup_fail`` (that guest's backup fails with ``message``), ``backup_warn`` (the backup
#: succeeds but adding its notes fails with ``message``: one warning), ``backup_crash`` (the
#: vzdump process dies hard at that guest: no ``TASK`` line, ``unexpected status``, and the
#: guest keeps its ``backup`` lock -- the stale lock a killed vzdump leaves).
FAULT_KINDS = ("latency", "http_error", "drop", "drop_after", "no_such_task", "task_fail",
               "task_hang", "task_crash", "backup_fail", "backup_warn", "backup_crash")
BACKUP_KINDS = ("backup_fail", "backup_warn", "backup_crash")
HTTP_KINDS = ("latency", "http_error", "drop", "drop_after", "no_such_task")


def _check_kind(_inst: object, _attr: object, value: str) -> None:
    if value not in FAULT_KINDS:
        raise ValueError(f"fault kind {value!r} is not one of {', '.join(FAULT_KINDS)}")


@attrs.frozen
class Fault:
    """One injected fault.

    Args:
        kind: one of :data:`FAULT_KINDS`.
        path: glob over the API path (``/nodes/pve1/qemu/*/status/current``); None = any.
        method: HTTP method to match; None = any.
        status: the status an ``http_error`` answers (default 500).
        message: reason phrase of an ``http_error``; exitstatus text of a ``task_fail``
            (``WARNINGS: 2`` makes a task that succeeds with warnings).
        delay_s: seconds a ``latency`` fault holds the request.
        count: how many times the fault fires; None = forever.
        task_type: task type to match (``qmstart``); None = any.
        vmid: guest to match for task and backup faults; None = any.
    """

    kind: str = attrs.field(validator=_check_kind)
    path: str | None = None
    method: str | None = None
    status: int = 500
    message: str = "simulated failure"
    delay_s: float = 0.0
    count: int | None = None
    task_type: str | None = None
    vmid: int | None = None

    def matches_request(self, method: str, path: str) -> bool:
        """Whether this HTTP fault applies to ``method path``."""
        if self.kind not in HTTP_KINDS:
            return False
        if self.method is not None and self.method.upper() != method:
            return False
        return self.path is None or fnmatch.fnmatchcase(path, self.path)

    def matches_task(self, task_type: str, vmid: int | None) -> bool:
        """Whether this task fault applies to a task of ``task_type`` on ``vmid``."""
        if self.kind not in ("task_fail", "task_hang", "task_crash"):
            return False
        if self.task_type is not None and self.task_type != task_type:
            return False
        return self.vmid is None or self.vmid == vmid

    def matches_backup(self, kind: str, vmid: int) -> bool:
        """Whether this is a ``kind`` backup fault for guest ``vmid``."""
        return self.kind == kind and (self.vmid is None or self.vmid == vmid)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Fault:
        """Build from a scenario mapping; raises ``ValueError``/``TypeError`` on bad input."""
        known = {f.name for f in attrs.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown fault key {unknown[0]!r}")
        fault = cls(**dict(d))
        types: list[tuple[str, object, tuple[type, ...]]] = [
            ("path", fault.path, (str, type(None))),
            ("method", fault.method, (str, type(None))),
            ("status", fault.status, (int,)),
            ("message", fault.message, (str,)),
            ("delay_s", fault.delay_s, (int, float)),
            ("count", fault.count, (int, type(None))),
            ("task_type", fault.task_type, (str, type(None))),
            ("vmid", fault.vmid, (int, type(None))),
        ]
        for name, value, allowed in types:
            if isinstance(value, bool) or not isinstance(value, allowed):
                raise TypeError(f"fault {name} has the wrong type: {value!r}")
        if not 500 <= fault.status <= 599:
            raise ValueError(f"fault status must be 500..599, got {fault.status}")
        if fault.delay_s < 0 or (fault.count is not None and fault.count < 1):
            raise ValueError("fault delay_s must be >= 0 and count >= 1")
        return fault


class FaultBook:
    """The active faults of one simulator; every method is thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[list[Any]] = []  # [fault, remaining count or None]
        self._wake = threading.Event()

    def add(self, fault: Fault) -> None:
        """Activate ``fault``."""
        with self._lock:
            self._faults.append([fault, fault.count])

    def clear(self) -> None:
        """Remove every fault and wake requests currently held by a latency fault."""
        with self._lock:
            self._faults.clear()
            self._wake.set()
            self._wake = threading.Event()

    def wake_all(self) -> None:
        """Wake held requests without removing faults (used at shutdown)."""
        with self._lock:
            self._wake.set()

    def _take(self, pred: Any) -> Fault | None:
        with self._lock:
            for entry in self._faults:
                if pred(entry[0]):
                    if entry[1] is not None:
                        entry[1] -= 1
                        if entry[1] <= 0:
                            self._faults.remove(entry)
                    return entry[0]  # type: ignore[no-any-return]
        return None

    def take_request_faults(self, method: str, path: str) -> list[Fault]:
        """Consume and return the HTTP faults that fire for this request (latency first)."""
        fired: list[Fault] = []
        for kind in HTTP_KINDS:
            fault = self._take(lambda f, k=kind: f.kind == k and f.matches_request(method, path))
            if fault is not None:
                fired.append(fault)
        return fired

    def take_task_fault(self, task_type: str, vmid: int | None) -> Fault | None:
        """Consume and return the first task fault matching this task, if any."""
        return self._take(lambda f: f.matches_task(task_type, vmid))

    def take_backup_fault(self, kind: str, vmid: int) -> Fault | None:
        """Consume and return the first ``kind`` backup fault for guest ``vmid``, if any."""
        return self._take(lambda f: f.matches_backup(kind, vmid))

    def hold(self, seconds: float) -> None:
        """Block for ``seconds`` unless :meth:`clear` or :meth:`wake_all` wakes us first."""
        with self._lock:
            wake = self._wake
        wake.wait(timeout=seconds)
