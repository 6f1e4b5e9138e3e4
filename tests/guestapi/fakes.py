"""Test doubles of the per-guest API: a backend that answers from memory, a recording audit."""

from __future__ import annotations

import socket
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from felhom_agent.guestapi.api import Accepted, BackupItem, Caller, GuestInfo
from felhom_agent.guestapi.identity import PeerCheck
from felhom_agent.guestapi.policy import Refusal


@attrs.define
class MemoryBackend:
    """Guests, backups and operations kept in dicts; ``gate`` can hold slow handlers."""

    infos: dict[int, GuestInfo] = attrs.field(factory=dict)
    backups: dict[int, list[BackupItem]] = attrs.field(factory=dict)
    operations: dict[str, int] = attrs.field(factory=dict)
    calls: list[tuple[str, int]] = attrs.field(factory=list)
    gate: threading.Event | None = None
    entered: threading.Semaphore = attrs.field(factory=lambda: threading.Semaphore(0))
    lock: threading.Lock = attrs.field(factory=threading.Lock)

    def add(self, vmid: int, gtype: str = "lxc", *, storage: str | None = "pbs1") -> None:
        self.infos[vmid] = GuestInfo(vmid, gtype, f"g{vmid}", "pve1", "host-a", ("t",),
                                     storage)
        self.backups[vmid] = [BackupItem(1_700_000_000 + vmid, vmid * 10, None, False)]

    def guest_info(self, vmid: int) -> GuestInfo | None:
        return self.infos.get(vmid)

    def list_backups(self, caller: Caller, info: GuestInfo) -> Sequence[BackupItem]:
        with self.lock:
            self.calls.append(("list_backups", caller.vmid))
        self.entered.release()
        if self.gate is not None:
            self.gate.wait(30)
        return self.backups.get(caller.vmid, [])

    def request_backup(self, caller: Caller, info: GuestInfo) -> Accepted | Refusal:
        with self.lock:
            self.calls.append(("request_backup", caller.vmid))
            op = f"guest-{caller.vmid}-{len(self.operations)}"
            self.operations[op] = caller.vmid
        return Accepted(op)

    def operation(self, caller: Caller, op_id: str) -> Mapping[str, Any] | None:
        owner = self.operations.get(op_id)
        return {"id": op_id, "state": "running"} if owner == caller.vmid else None

    def request_restart(self, caller: Caller, info: GuestInfo) -> Accepted | Refusal:
        return Refusal(403, "no")


@attrs.define
class RecordingAudit:
    """Collects every audit append (thread-safe)."""

    records: list[dict[str, Any]] = attrs.field(factory=list)
    lock: threading.Lock = attrs.field(factory=threading.Lock)
    cond: threading.Condition = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.cond = threading.Condition(self.lock)

    def append(self, *, op_id: str, source: str, kind: str, vmid: int, upid: str | None,
               outcome: str, reason: str = "") -> object:
        with self.cond:
            self.records.append({"op_id": op_id, "source": source, "kind": kind, "vmid": vmid,
                                 "outcome": outcome, "reason": reason})
            self.cond.notify_all()
        return None

    def wait_for(self, predicate: Any, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Wait until ``predicate(records)`` holds; return a copy of the records."""
        with self.cond:
            assert self.cond.wait_for(lambda: predicate(self.records), timeout), self.records
            return list(self.records)

    def of(self, vmid: int) -> list[dict[str, Any]]:
        with self.lock:
            return [r for r in self.records if r["vmid"] == vmid]


def trusting_peer(sock: socket.socket, vmid: int) -> PeerCheck:
    """A peer check that accepts every peer (tests of the loop over plain sockets)."""
    return PeerCheck(True, reason="")
