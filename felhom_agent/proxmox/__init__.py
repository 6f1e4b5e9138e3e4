"""Proxmox VE access over the REST API: pinned HTTPS client, typed errors, UPIDs, task waits.

This package never starts a process or opens an SSH session (the structural fence, asserted
by an import-scan test): the few root CLI operations live in :mod:`felhom_agent.privileged`.
"""

from __future__ import annotations

from felhom_agent.proxmox.client import ConfigValue, ProxmoxClient
from felhom_agent.proxmox.errors import (
    AuthError,
    Locked,
    NotFound,
    ParameterError,
    PermissionDenied,
    PinMismatch,
    PveError,
    ResponseTimeout,
    ServerError,
    TaskError,
    TaskFailed,
    TaskTimeout,
    TaskUnknown,
    TlsError,
    TransportError,
    UpidError,
)
from felhom_agent.proxmox.models import (
    Disk,
    Guest,
    GuestConfig,
    GuestStatus,
    GuestType,
    NodeStatus,
    Permissions,
    PveVersion,
    Snapshot,
    StorageInfo,
    StorageVolume,
    TaskEntry,
    TaskList,
    TaskLog,
    TaskStatus,
)
from felhom_agent.proxmox.selftest import (
    OPTIONAL_PRIVILEGES,
    REQUIRED_PRIVILEGES,
    Check,
    RequiredPrivilege,
    read_checks,
)
from felhom_agent.proxmox.tasks import (
    Dispatch,
    PollPolicy,
    TaskOutcome,
    TaskResult,
    complete,
    wait_task,
)
from felhom_agent.proxmox.upid import Upid, parse_upid

__all__ = [
    "OPTIONAL_PRIVILEGES",
    "REQUIRED_PRIVILEGES",
    "AuthError",
    "Check",
    "ConfigValue",
    "Disk",
    "Dispatch",
    "Guest",
    "GuestConfig",
    "GuestStatus",
    "GuestType",
    "Locked",
    "NodeStatus",
    "NotFound",
    "ParameterError",
    "PermissionDenied",
    "Permissions",
    "PinMismatch",
    "PollPolicy",
    "ProxmoxClient",
    "PveError",
    "PveVersion",
    "RequiredPrivilege",
    "ResponseTimeout",
    "ServerError",
    "Snapshot",
    "StorageInfo",
    "StorageVolume",
    "TaskEntry",
    "TaskError",
    "TaskFailed",
    "TaskList",
    "TaskLog",
    "TaskOutcome",
    "TaskResult",
    "TaskStatus",
    "TaskTimeout",
    "TaskUnknown",
    "TlsError",
    "TransportError",
    "Upid",
    "UpidError",
    "complete",
    "parse_upid",
    "read_checks",
    "wait_task",
]
