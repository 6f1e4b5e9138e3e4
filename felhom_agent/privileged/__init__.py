"""The fenced root CLI: the few operations the Proxmox API cannot do for a token.

``pct create`` of the golden image with ``--features keyctl=1``, a USB disk's mount and fstab line,
and SMART/sensor readings (``docs/architecture.md``, "The fenced root CLI"). Arguments are typed and
validated, commands are argv lists run by a local (``subprocess``) or SSH (``paramiko``) runner.
This package never imports an HTTP library; the API client never imports a process library; the test
suite asserts both (``tests/test_fence.py``).
"""

from __future__ import annotations

from felhom_agent.privileged.errors import (
    CommandFailed,
    CommandTimeout,
    FstabConflict,
    OutputParseError,
    PrivilegedDisabled,
    PrivilegedError,
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
)
from felhom_agent.privileged.ops import (
    MOUNT_ROOT,
    NetSpec,
    PctCreate,
    SensorsRead,
    SmartRead,
    UsbMount,
)
from felhom_agent.privileged.parse import (
    NvmeHealth,
    SensorChip,
    SensorFeature,
    SmartAttribute,
    SmartReport,
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
    "CommandFailed",
    "CommandTimeout",
    "DisabledRunner",
    "FstabConflict",
    "LocalRunner",
    "MountOutcome",
    "NetSpec",
    "NvmeHealth",
    "OpTimeouts",
    "OutputParseError",
    "PctCreate",
    "Privileged",
    "PrivilegedDisabled",
    "PrivilegedError",
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
    "UsbMount",
    "parse_sensors",
    "parse_smartctl",
]
