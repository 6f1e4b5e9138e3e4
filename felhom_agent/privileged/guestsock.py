"""Operation 4: a listening unix socket inside a running container, handed to the agent.

``docs/architecture.md`` ("The fenced root CLI", "The per-guest local API"). The per-guest
API of a container is one listening socket at ``guestapi.container_path`` inside it. The PVE
API cannot put a socket into a container and the agent must not change the container's
config for it (a clone or restore would copy the wiring), so this operation enters the
running container's mount namespace and binds the socket there, once per start.

:class:`PlaceGuestSocket` holds the validated arguments (vmid, the init pid PVE reported and
its start time, the path, the backlog) and builds the argv of the helper program
(``felhom_agent/guestsock_helper.py``, run as ``python -I -S``: the standard library only).
:class:`GuestSocketPlacer` runs it with one inherited descriptor -- the caller's end of a
socket pair -- over which the helper sends the listening socket back (``SCM_RIGHTS``). This
module itself never opens a socket: it passes a descriptor number, and receiving the socket
is the caller's business (:mod:`felhom_agent.guestapi.placement`).

Only the local runner can do this (a descriptor cannot travel over SSH): with
``proxmox.privileged.mode`` ``ssh`` or ``off`` the placer refuses.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final, Protocol

import attrs

from felhom_agent.privileged._checks import check_int, check_str
from felhom_agent.privileged.errors import (
    CommandFailed,
    CommandTimeout,
    PrivilegedDisabled,
    RefusedArgument,
    RunnerError,
)
from felhom_agent.privileged.runner import DEFAULT_ENV, RunResult
from felhom_agent.vmids import VMID_MAX, VMID_MIN

__all__ = ["HELPER", "FdRunner", "GuestSocketPlacer", "LocalFdRunner", "PlaceGuestSocket"]

#: The helper program, beside this package (``felhom_agent/guestsock_helper.py``).
HELPER: Final = str(Path(__file__).resolve().parent.parent / "guestsock_helper.py")
#: Linux's largest pid (``PID_MAX_LIMIT`` on 64-bit).
PID_MAX: Final = 4_194_304
_PATH: Final = re.compile(r"(?:/[A-Za-z0-9][A-Za-z0-9._-]{0,63}){2,8}")
_PYTHON: Final = re.compile(r"(?:/[A-Za-z0-9._+][A-Za-z0-9._+-]{0,127}){1,16}")
#: sun_path holds 108 bytes with the terminating NUL.
_MAX_PATH: Final = 100


def _int(minimum: int, maximum: int) -> Any:
    def run(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
        check_int(attribute.name, value, minimum=minimum, maximum=maximum)
    return run


def _path(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    check_str(attribute.name, value, _PATH,
              "an absolute path of 2-8 plain components (letters, digits, '.', '_', '-')")
    if len(str(value)) > _MAX_PATH:
        raise RefusedArgument(attribute.name, value, f"must be at most {_MAX_PATH} characters "
                              "(a unix socket path)")


@attrs.frozen
class PlaceGuestSocket:
    """Operation 4's arguments.

    Attributes:
        vmid: the container; its init must be in cgroup ``/lxc/<vmid>/``.
        pid: the container's init pid (the API's ``status/current`` ``pid``).
        start: that process's start time (``/proc/<pid>/stat`` field 22), so a reused pid
            is never taken for the container.
        path: where the socket goes inside the container (``guestapi.container_path``).
        backlog: the listen backlog (each container has its own accept queue).
    """

    vmid: int = attrs.field(validator=_int(VMID_MIN, VMID_MAX))
    pid: int = attrs.field(validator=_int(2, PID_MAX))
    start: int = attrs.field(validator=_int(0, 2**62))
    path: str = attrs.field(validator=_path)
    backlog: int = attrs.field(default=8, validator=_int(1, 128))

    def argv(self, python: str, fd: int) -> list[str]:
        """The helper's argv: ``python -I -S HELPER --vmid ... --fd FD --backlog N``."""
        check_str("python", python, _PYTHON, "an absolute path to the Python interpreter")
        check_int("fd", fd, minimum=3, maximum=65535)
        return [python, "-I", "-S", HELPER,
                "--vmid", str(self.vmid), "--pid", str(self.pid), "--start", str(self.start),
                "--path", self.path, "--fd", str(fd), "--backlog", str(self.backlog)]


class FdRunner(Protocol):
    """Runs one argv to completion with some descriptors inherited."""

    def run_with_fds(self, argv: Sequence[str], *, pass_fds: tuple[int, ...],
                     timeout_s: float) -> RunResult:
        """Run ``argv`` with ``pass_fds`` open in the child; raise on timeout."""
        ...


class LocalFdRunner:
    """``subprocess`` with inherited descriptors: argv, no shell, a fixed environment, its own
    session (killed as a group on timeout), stdin from ``/dev/null``."""

    def __init__(self, *, env: Mapping[str, str] | None = None) -> None:
        self._env = dict(DEFAULT_ENV if env is None else env)

    def run_with_fds(self, argv: Sequence[str], *, pass_fds: tuple[int, ...],
                     timeout_s: float) -> RunResult:
        """Run ``argv``; the descriptors in ``pass_fds`` keep their numbers in the child.

        Raises:
            RunnerError: it cannot be started.
            CommandTimeout: it ran past ``timeout_s`` (its process group was killed).
        """
        args = tuple(argv)
        try:
            proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, env=self._env, cwd="/",
                                    close_fds=True, pass_fds=pass_fds, start_new_session=True)
        except OSError as err:
            raise RunnerError(f"cannot start {args[0]}: {err.strerror}",
                              program=args[0]) from err
        try:
            stdout, stderr = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise CommandTimeout(f"{args[0]} ran longer than {timeout_s:g} s and was killed",
                                 program=args[0]) from None
        return RunResult(args, proc.returncode, stdout, stderr)


class GuestSocketPlacer:
    """Runs operation 4 and nothing else.

    Args:
        runner: the local runner, or ``None`` when the fenced CLI is not local (every call
            is refused: a descriptor cannot cross SSH).
        python: the interpreter that runs the helper (this one by default).
        timeout_s: the helper's deadline.
    """

    def __init__(self, runner: FdRunner | None, *, python: str = sys.executable,
                 timeout_s: float = 10.0) -> None:
        self._runner = runner
        self._python = python
        self._timeout_s = timeout_s

    @property
    def enabled(self) -> bool:
        """Whether sockets can be placed at all (the local runner)."""
        return self._runner is not None

    def place(self, args: PlaceGuestSocket, channel_fd: int) -> None:
        """Place the socket; the listening descriptor arrives on the peer of ``channel_fd``.

        Raises:
            RefusedArgument: ``args`` is not a valid :class:`PlaceGuestSocket`.
            PrivilegedDisabled: no local runner.
            CommandFailed: the helper refused (its reason is the message) or failed.
            CommandTimeout / RunnerError: it hung or could not start.
        """
        if not isinstance(args, PlaceGuestSocket):
            raise RefusedArgument("args", type(args).__name__, "must be a PlaceGuestSocket")
        args = attrs.evolve(args)  # re-validate: the instance may have been forged
        if self._runner is None:
            raise PrivilegedDisabled("placing a container's guest API socket needs "
                                     "proxmox.privileged.mode local (a descriptor cannot "
                                     "travel over SSH)")
        argv = args.argv(self._python, channel_fd)
        if argv[0] != self._python or argv[3] != HELPER:
            raise RefusedArgument("argv", argv[:4], "must run the guest socket helper")
        result = self._runner.run_with_fds(argv, pass_fds=(channel_fd,),
                                           timeout_s=self._timeout_s)
        if result.returncode != 0:
            raise CommandFailed(f"placing the guest API socket of {args.vmid} failed",
                                program="guestsock_helper", returncode=result.returncode,
                                stderr=result.stderr_text())
