"""The fenced root CLI: the few operations the Proxmox API cannot do for a token.

``pct create`` of the golden image with ``--features keyctl=1``, a USB disk's mount and fstab
line (and their undoing, with the ``findmnt``/``lsblk`` reads they decide on), and SMART/sensor
readings (``docs/architecture.md``, "The fenced root CLI"). Arguments are typed and validated,
commands are argv lists run by a local (``subprocess``) or SSH (``paramiko``) runner.
This package never imports an HTTP library; the API client never imports a process library;
the test suite asserts both (``tests/test_fence.py``).
"""

from __future__ import annotations

from felhom_agent.privileged.errors import (
    CommandFailed,
    CommandTimeout,
    DeviceNotFound,
    FstabConflict,
    MountConflict,
    OutputParseError,
    PrivilegedDisabled,
    PrivilegedError,
    ProgramNotFound,
    RefusedArgument,
    RunnerError,
    SshAuthFailed,
    SshConnectError,
    SshError,
    SshHostKeyRejected,
)
from felhom_agent.privileged.facade import (
    MountOutcome,
    OpTimeouts,
    Privileged,
    UnmountOutcome,
)
from felhom_agent.privileged.ops import (
    MOUNT_ROOT,
    BlockDevices,
    MountQuery,
    NetSpec,
    PctCreate,
    SensorsRead,
    SmartRead,
    UsbMount,
    UsbUnmount,
)
from felhom_agent.privileged.parse import (
    SMART_ERROR_BITS,
    BlockDevice,
    Mounted,
    NvmeHealth,
    SensorChip,
    SensorFeature,
    SmartAttribute,
    SmartReport,
    parse_findmnt,
    parse_lsblk,
    parse_sensors,
    parse_smartctl,
)
from felhom_agent.privileged.runner import (
    DisabledRunner,
    LocalRunner,
    Runner,
    RunResult,
    SshRunner,
)

__all__ = [
    "MOUNT_ROOT",
    "SMART_ERROR_BITS",
    "BlockDevice",
    "BlockDevices",
    "CommandFailed",
    "CommandTimeout",
    "DeviceNotFound",
    "DisabledRunner",
    "FstabConflict",
    "LocalRunner",
    "MountConflict",
    "MountOutcome",
    "MountQuery",
    "Mounted",
    "NetSpec",
    "NvmeHealth",
    "OpTimeouts",
    "OutputParseError",
    "PctCreate",
    "Privileged",
    "PrivilegedDisabled",
    "PrivilegedError",
    "ProgramNotFound",
    "RefusedArgument",
    "RunResult",
    "Runner",
    "RunnerError",
    "SensorChip",
    "SensorFeature",
    "SensorsRead",
    "SmartAttribute",
    "SmartRead",
    "SmartReport",
    "SshAuthFailed",
    "SshConnectError",
    "SshError",
    "SshHostKeyRejected",
    "SshRunner",
    "UnmountOutcome",
    "UsbMount",
    "UsbUnmount",
    "parse_findmnt",
    "parse_lsblk",
    "parse_sensors",
    "parse_smartctl",
]
