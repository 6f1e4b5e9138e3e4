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
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import attrs

from felhom_agent.privileged.errors import (
    CommandFailed,
    DeviceNotFound,
    MountConflict,
    OutputParseError,
    PrivilegedDisabled,
    RefusedArgument,
)
from felhom_agent.privileged.fstab import (
    check_fstab_line,
    ensure_fstab_line,
    remove_fstab_lines,
)
from felhom_agent.privileged.ops import (
    MOUNT_ROOT,
    PROGRAMS,
    USB_OPTIONS,
    BlockDevices,
    MountQuery,
    PctCreate,
    SensorsRead,
    SmartRead,
    UsbMount,
    UsbUnmount,
)
from felhom_agent.privileged.parse import (
    SMART_FATAL_BITS,
    BlockDevice,
    Mounted,
    SensorChip,
    SmartReport,
    parse_findmnt,
    parse_lsblk,
    parse_sensors,
    parse_smartctl,
)
from felhom_agent.privileged.runner import (
    Runner,
    RunResult,
)

__all__ = ["MountOutcome", "OpTimeouts", "Privileged", "UnmountOutcome"]

#: The option strings of the agent's own fstab lines (read-write and read-only).
_OUR_OPTIONS: Final = frozenset({USB_OPTIONS, USB_OPTIONS + ",ro"})


@attrs.frozen
class OpTimeouts:
    """Per-operation deadlines in seconds (``pct create`` unpacks a template: minutes)."""

    pct_create_s: float = 900.0
    mkdir_s: float = 10.0
    mount_s: float = 120.0
    umount_s: float = 120.0
    findmnt_s: float = 15.0
    lsblk_s: float = 15.0
    smartctl_s: float = 60.0
    sensors_s: float = 15.0


@attrs.frozen
class MountOutcome:
    """What :meth:`Privileged.mount_usb` did: both False means it was already in place."""

    fstab_appended: bool
    mounted_now: bool


@attrs.frozen
class UnmountOutcome:
    """What :meth:`Privileged.unmount_usb` did: both False means it was already gone."""

    unmounted_now: bool
    fstab_removed: int


class Privileged:
    """Runs the allowed root operations and nothing else.

    Args:
        runner: where commands run (:class:`LocalRunner`, :class:`SshRunner`, a test fake).
        fstab_path: the fstab edited by :meth:`mount_usb` (``proxmox.privileged.fstab_path``).
        mount_root: the only directory USB disks are mounted below
            (``proxmox.privileged.mount_root``).
        timeouts: per-operation deadlines.
    """

    def __init__(self, runner: Runner, *, fstab_path: Path = Path("/etc/fstab"),
                 mount_root: str = MOUNT_ROOT, timeouts: OpTimeouts = OpTimeouts()) -> None:
        self._runner = runner
        self._fstab_path = fstab_path
        self._mount_root = mount_root
        self._timeouts = timeouts
        self._fstab_lock = threading.Lock()

    @property
    def mount_root(self) -> str:
        """The directory USB disks are mounted below."""
        return self._mount_root

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

    # -- USB disks ------------------------------------------------------------------------

    def mounted_at(self, mountpoint: str) -> Mounted | None:
        """What is mounted exactly at ``mountpoint`` (``findmnt``), or ``None``.

        Raises:
            RefusedArgument: not a plain absolute path.
            CommandFailed: ``findmnt`` failed otherwise than "nothing found" (exit 1).
            OutputParseError: its JSON is not util-linux's shape.
        """
        query = MountQuery(mountpoint)
        result = self._run(query.argv(), self._timeouts.findmnt_s, "", check=False)
        if result.returncode == 1 and not result.stdout.strip():
            return None
        if result.returncode != 0:
            raise CommandFailed(f"findmnt {mountpoint} failed", program="findmnt",
                                returncode=result.returncode, stderr=result.stderr_text())
        rows = [m for m in parse_findmnt(result.stdout) if m.target == mountpoint]
        return rows[0] if rows else None

    def block_devices(self) -> tuple[BlockDevice, ...]:
        """Every block device and partition with its file system type and UUID (``lsblk``).

        Raises:
            CommandFailed: ``lsblk`` exited non-zero.
            OutputParseError: its JSON is not util-linux's shape.
        """
        result = self._run(BlockDevices().argv(), self._timeouts.lsblk_s, "lsblk failed")
        return parse_lsblk(result.stdout)

    def _checked(self, args: object, cls: type[UsbMount] | type[UsbUnmount]
                 ) -> UsbMount | UsbUnmount:
        if not isinstance(args, cls):
            raise RefusedArgument("args", type(args).__name__, f"must be a {cls.__name__}")
        args = attrs.evolve(args)  # re-validate: the instance may have been forged
        if args.root != self._mount_root:
            raise RefusedArgument("root", args.root, f"must be the mount root {self._mount_root}")
        if not self._runner.local:
            raise PrivilegedDisabled("USB disks need proxmox.privileged.mode local: the fstab "
                                     "is edited on the machine the agent runs on")
        return args

    def fstab_has(self, args: UsbMount) -> bool:
        """True if the fstab already holds exactly this mount's line.

        Raises:
            FstabConflict: another line uses its mount point or its source.
        """
        checked = self._checked(args, UsbMount)
        assert isinstance(checked, UsbMount)  # noqa: S101 - _checked returns the class asked
        return check_fstab_line(self._fstab_path, checked.fstab_fields())

    def fstab_lines(self, args: UsbUnmount) -> int:
        """How many of the agent's own fstab lines name this mount point (0 or 1).

        Raises:
            FstabConflict: a line for the mount point that the agent did not write.
        """
        checked = self._checked(args, UsbUnmount)
        return remove_fstab_lines(self._fstab_path, checked.mountpoint, _OUR_OPTIONS,
                                  dry_run=True)

    def _require_device(self, args: UsbMount) -> None:
        if args.uuid is None:
            return  # a by-id link: mount itself says whether it exists
        found = [d for d in self.block_devices()
                 if d.uuid is not None and d.uuid.lower() == args.uuid]
        if not found:
            raise DeviceNotFound(f"no block device holds a file system with {args.source} "
                                 "(lsblk); is the disk plugged in?", program="lsblk")
        if found[0].fstype != args.fstype:
            raise MountConflict(f"{found[0].name} ({args.source}) holds "
                                f"{found[0].fstype or 'no file system'}, not {args.fstype}")

    @staticmethod
    def _is_ours(mounted: Mounted, args: UsbMount) -> bool:
        if args.uuid is not None:
            return mounted.uuid is not None and mounted.uuid.lower() == args.uuid
        return mounted.source in (args.source, os.path.realpath(args.source))

    def mount_usb(self, args: UsbMount) -> MountOutcome:
        """Operation 2: ensure the mount and then its fstab line (idempotent, crash-safe).

        Every step checks before it acts, so running it again after an interruption
        completes it: the fstab is checked for a conflicting line first (nothing is changed
        on a conflict); what is mounted at the mount point is read (``findmnt``): the same
        file system means mounted already, another one refuses; otherwise the device must be
        present with the asked type (``lsblk``), the mount point is created and mounted; only
        then is the line appended, atomically. A failed mount leaves no line behind.

        Raises:
            RefusedArgument: ``args`` is not a :class:`UsbMount` below the mount root.
            PrivilegedDisabled: the runner is not local (fstab lives on this machine).
            FstabConflict: fstab has another line for this mount point or source.
            MountConflict: another file system is mounted there, or the disk's type differs.
            DeviceNotFound: no block device holds the UUID.
            DurabilityError: the fstab could not be written durably (do not retry).
            CommandFailed / CommandTimeout: a program failed or hung (killed).
        """
        checked = self._checked(args, UsbMount)
        assert isinstance(checked, UsbMount)  # noqa: S101 - _checked returns the class asked
        with self._fstab_lock:
            check_fstab_line(self._fstab_path, checked.fstab_fields())
            mounted = self.mounted_at(checked.mountpoint)
            if mounted is not None and not self._is_ours(mounted, checked):
                raise MountConflict(f"{checked.mountpoint} already has {mounted.source} "
                                    f"({mounted.fstype}) mounted; refusing to mount "
                                    f"{checked.source} over it")
            if mounted is None:
                self._require_device(checked)
                self._run(checked.mkdir_argv(), self._timeouts.mkdir_s,
                          f"mkdir {checked.mountpoint} failed")
                self._run(checked.mount_argv(), self._timeouts.mount_s,
                          f"mount {checked.source} on {checked.mountpoint} failed")
            appended = ensure_fstab_line(self._fstab_path, checked.fstab_fields())
        return MountOutcome(fstab_appended=appended, mounted_now=mounted is None)

    def unmount_usb(self, args: UsbUnmount) -> UnmountOutcome:
        """Operation 2, undone: unmount (if mounted), then remove the agent's fstab line.

        The disk's data is never touched. A busy file system fails ``umount`` (no lazy or
        forced unmount) and the fstab line stays, consistent with the mount. A line for the
        mount point that the agent did not write refuses the whole operation first.

        Raises:
            RefusedArgument: ``args`` is not a :class:`UsbUnmount` below the mount root.
            PrivilegedDisabled: the runner is not local.
            FstabConflict: an fstab line for the mount point with foreign options.
            DurabilityError: the fstab could not be written durably (do not retry).
            CommandFailed / CommandTimeout: ``findmnt`` or ``umount`` failed or hung.
        """
        checked = self._checked(args, UsbUnmount)
        assert isinstance(checked, UsbUnmount)  # noqa: S101 - _checked returns the class asked
        with self._fstab_lock:
            remove_fstab_lines(self._fstab_path, checked.mountpoint, _OUR_OPTIONS,
                               dry_run=True)
            mounted = self.mounted_at(checked.mountpoint)
            if mounted is not None:
                self._run(checked.umount_argv(), self._timeouts.umount_s,
                          f"umount {checked.mountpoint} failed")
            removed = remove_fstab_lines(self._fstab_path, checked.mountpoint, _OUR_OPTIONS)
        return UnmountOutcome(unmounted_now=mounted is not None, fstab_removed=removed)

    # -- readings -------------------------------------------------------------------------

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
