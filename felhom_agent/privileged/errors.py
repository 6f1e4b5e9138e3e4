"""Errors of the fenced root CLI: refused arguments, failed or timed-out commands, SSH trouble.

The hierarchy follows the project rule (``felhom_agent.errors``): :class:`PrivilegedError` is
the mid level, carrying the program name when a process is concerned; leaves also subclass the
builtin a generic caller would expect (``ValueError`` for a refused argument, ``TimeoutError``
for a command past its deadline, ``PermissionError`` for an SSH host key or login refusal).
``paramiko`` and ``subprocess`` exceptions never cross this package's boundary: they are
wrapped with ``raise ... from err``.
"""

from __future__ import annotations

from felhom_agent.errors import AgentError

__all__ = [
    "CommandFailed",
    "CommandTimeout",
    "DeviceNotFound",
    "FstabConflict",
    "MountConflict",
    "OutputParseError",
    "PrivilegedDisabled",
    "PrivilegedError",
    "ProgramNotFound",
    "RefusedArgument",
    "RunnerError",
    "SshAuthFailed",
    "SshConnectError",
    "SshError",
    "SshHostKeyRejected",
]


class PrivilegedError(AgentError):
    """Root of the fenced root CLI's errors.

    Args:
        message: operator-readable explanation.
        program: the program concerned (``pct``, ``mount``, ``smartctl``...), if any.
    """

    def __init__(self, message: str, *, program: str | None = None) -> None:
        super().__init__(message)
        self.program = program


class RefusedArgument(PrivilegedError, ValueError):
    """An argument is outside the allow-list; refused before any process starts.

    Args:
        field: the argument's name (``vmid``, ``mountpoint``...).
        reason: what is allowed. The bad value is shown with ``repr`` and truncated, so a
            hostile value cannot forge log lines.
    """

    def __init__(self, field: str, value: object, reason: str) -> None:
        shown = repr(value)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        super().__init__(f"refused {field}={shown}: {reason}")
        self.field = field


class PrivilegedDisabled(PrivilegedError):
    """``proxmox.privileged.mode`` is ``off`` (or the operation needs a local runner)."""


class RunnerError(PrivilegedError):
    """A command could not be started or its output could not be collected."""


class ProgramNotFound(RunnerError):
    """The program is not installed where the runner looks (the daemon's ``PATH``)."""


class CommandTimeout(PrivilegedError, TimeoutError):
    """A command ran past its deadline; it was killed (local) or abandoned (SSH)."""


class CommandFailed(PrivilegedError):
    """A command exited with a failure status.

    Args:
        returncode: the exit status (negative for a signal, as ``subprocess`` reports it;
            ``-1`` when an SSH session ended without a status).
        stderr: the tail of the command's standard error, decoded leniently.
    """

    def __init__(self, message: str, *, program: str, returncode: int, stderr: str) -> None:
        super().__init__(f"{message} (exit {returncode}): {stderr.strip()[-500:]}",
                         program=program)
        self.returncode = returncode
        self.stderr = stderr


class OutputParseError(PrivilegedError, ValueError):
    """A tool's JSON output does not have the documented shape."""


class FstabConflict(PrivilegedError, ValueError):
    """``/etc/fstab`` already has a different line for the mount point or the device.

    The agent never rewrites an operator's line; it refuses and says which line collides.
    """


class MountConflict(PrivilegedError, ValueError):
    """The mount point already holds another file system, or the disk is not what was asked
    (another file system type); nothing was changed."""


class DeviceNotFound(PrivilegedError, LookupError):
    """No block device with the asked file system (UUID) is present: the disk is not plugged
    in, or the UUID is wrong; nothing was changed."""


class SshError(PrivilegedError):
    """The SSH runner could not run a command on the remote host."""


class SshConnectError(SshError, ConnectionError):
    """The TCP connection or the SSH handshake failed (refused, unreachable, timed out)."""


class SshHostKeyRejected(SshError, PermissionError):
    """The server's host key is not in the configured known_hosts file, or differs from it."""


class SshAuthFailed(SshError, PermissionError):
    """The server refused our client key."""
