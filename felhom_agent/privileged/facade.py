"""``Privileged``: the one object that runs the fenced root CLI.

See ``docs/architecture.md`` ("The fenced root CLI").

It accepts exactly the operation classes of :mod:`felhom_agent.privileged.ops`, checks the
argv each one builds against :data:`~felhom_agent.privileged.ops.PROGRAMS` once more (defence
in depth: an argument object forged past its validators still cannot start another program),
runs it through an injected :class:`~felhom_agent.privileged.runner.Runner` with a per-operation
timeout, and turns the outcome into a typed result or a typed error. Nothing outside the
allow-list reaches a runner.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Sequence
from pathlib import Path

import attrs

from felhom_agent.privileged.errors import (
    CommandFailed,
    OutputParseError,
    PrivilegedDisabled,
    RefusedArgument,
)
from felhom_agent.privileged.fstab import ensure_fstab_line, is_mounted
from felhom_agent.privileged.ops import (
    PROGRAMS,
    PctCreate,
    SensorsRead,
    SmartRead,
    UsbMount,
)
from felhom_agent.privileged.parse import (
    SMART_FATAL_BITS,
    SensorChip,
    SmartReport,
    parse_sensors,
    parse_smartctl,
)
from felhom_agent.privileged.runner import (
    Runner,
    RunResult,
)

__all__ = ["MountOutcome", "OpTimeouts", "Privileged"]


@attrs.frozen
class OpTimeouts:
    """Per-operation deadlines in seconds (``pct create`` unpacks a template: minutes)."""

    pct_create_s: float = 900.0
    mkdir_s: float = 10.0
    mount_s: float = 120.0
    smartctl_s: float = 60.0
    sensors_s: float = 15.0


@attrs.frozen
class MountOutcome:
    """What :meth:`Privileged.mount_usb` did: both False means it was already in place."""

    fstab_appended: bool
    mounted_now: bool


class Privileged:
    """Runs the three allowed root operations and nothing else.

    Args:
        runner: where commands run (:class:`LocalRunner`, :class:`SshRunner`, a test fake).
        fstab_path: the fstab edited by :meth:`mount_usb` (injectable for tests).
        mounts_path: the mount table consulted so an existing mount is not repeated.
        timeouts: per-operation deadlines.
    """

    def __init__(self, runner: Runner, *, fstab_path: Path = Path("/etc/fstab"),
                 mounts_path: Path = Path("/proc/self/mounts"),
                 timeouts: OpTimeouts = OpTimeouts()) -> None:
        self._runner = runner
        self._fstab_path = fstab_path
        self._mounts_path = mounts_path
        self._timeouts = timeouts
        self._fstab_lock = threading.Lock()

    def _run(self, argv: Sequence[str], timeout_s: float, what: str,
             *, check: bool = True) -> RunResult:
        if not argv or argv[0] not in PROGRAMS:
            raise RefusedArgument("argv", list(argv), f"program must be one of {sorted(PROGRAMS)}")
        result = self._runner.run(argv, timeout_s=timeout_s)
        if check and result.returncode != 0:
            raise CommandFailed(what, program=argv[0], returncode=result.returncode,
                                stderr=result.stderr_text())
        return result

    def create_golden_ct(self, args: PctCreate) -> RunResult:
        """Operation 1: ``pct create`` the golden image with ``--features keyctl=1``.

        ``pct`` runs its worker synchronously, so a zero exit means the container exists.
        A vmid already in use fails with pct's "CT N already exists" (the caller decides
        whether that means "already done").

        Raises:
            RefusedArgument: ``args`` is not a :class:`PctCreate`.
            CommandFailed: ``pct`` exited non-zero; the message carries its stderr.
            CommandTimeout: past ``timeouts.pct_create_s``.
        """
        if not isinstance(args, PctCreate):
            raise RefusedArgument("args", type(args).__name__, "must be a PctCreate")
        args = attrs.evolve(args)  # re-validate: the instance may have been forged
        return self._run(args.argv(), self._timeouts.pct_create_s,
                         f"pct create {args.vmid} failed")

    def mount_usb(self, args: UsbMount) -> MountOutcome:
        """Operation 2: ensure the fstab line, the mount point and the mount (idempotent).

        Order: the fstab line is made durable first, so after a crash the intent is on disk
        (and the next boot mounts it, ``nofail`` keeping a missing disk harmless); then the
        mount point is created and, unless it is already a mount point, mounted.

        Raises:
            RefusedArgument: ``args`` is not a :class:`UsbMount`.
            PrivilegedDisabled: the runner is not local (fstab lives on the remote host).
            FstabConflict: fstab has another line for this mount point or source.
            DurabilityError: the fstab could not be written durably (do not retry).
            CommandFailed / CommandTimeout: ``mkdir`` or ``mount`` failed.
        """
        if not isinstance(args, UsbMount):
            raise RefusedArgument("args", type(args).__name__, "must be a UsbMount")
        args = attrs.evolve(args)  # re-validate: the instance may have been forged
        if not self._runner.local:
            raise PrivilegedDisabled("USB mounts need the local runner: /etc/fstab is edited "
                                     "on the machine the agent runs on")
        with self._fstab_lock:
            appended = ensure_fstab_line(self._fstab_path, args.fstab_fields())
        self._run(args.mkdir_argv(), self._timeouts.mkdir_s,
                  f"mkdir {args.mountpoint} failed")
        if is_mounted(self._mounts_path, args.mountpoint):
            return MountOutcome(fstab_appended=appended, mounted_now=False)
        self._run(args.mount_argv(), self._timeouts.mount_s,
                  f"mount {args.source} on {args.mountpoint} failed")
        return MountOutcome(fstab_appended=appended, mounted_now=True)

    def read_smart(self, args: SmartRead) -> SmartReport:
        """Operation 3a: one disk's SMART data.

        smartctl's exit status is a bit mask: bits 0-1 mean there is no data (bad command
        line, device cannot be opened) and raise; higher bits describe the disk's health and
        are returned in :attr:`SmartReport.exit_status` with the parsed data.

        Raises:
            RefusedArgument: ``args`` is not a :class:`SmartRead`.
            CommandFailed: exit bits 0-1 set.
            OutputParseError: the JSON is not smartctl's documented shape.
        """
        if not isinstance(args, SmartRead):
            raise RefusedArgument("args", type(args).__name__, "must be a SmartRead")
        args = attrs.evolve(args)  # re-validate: the instance may have been forged
        result = self._run(args.argv(), self._timeouts.smartctl_s, "", check=False)
        if result.returncode < 0 or result.returncode & SMART_FATAL_BITS:
            detail = result.stderr_text()
            # The exit status is the error; smartctl's JSON messages, if any, say why.
            with contextlib.suppress(OutputParseError):
                detail = "; ".join(parse_smartctl(result.stdout).messages) or detail
            raise CommandFailed(f"smartctl {args.device} gave no data", program="smartctl",
                                returncode=result.returncode, stderr=detail)
        return parse_smartctl(result.stdout)

    def read_sensors(self, args: SensorsRead | None = None) -> tuple[SensorChip, ...]:
        """Operation 3b: every sensor chip's readings (``sensors -j``).

        Raises:
            CommandFailed: ``sensors`` exited non-zero (for example "No sensors found!").
            OutputParseError: the JSON is not lm-sensors' shape.
        """
        op = SensorsRead() if args is None else args
        if not isinstance(op, SensorsRead):
            raise RefusedArgument("args", type(op).__name__, "must be a SensorsRead")
        result = self._run(op.argv(), self._timeouts.sensors_s, "sensors failed")
        return parse_sensors(result.stdout)
