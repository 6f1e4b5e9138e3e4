"""Disk and sensor entries of the HostReport, from the PVE disk list and the fenced readings.

``docs/architecture.md`` ("Host storage"). Pure functions over plain values:

* :func:`disk_entry` merges one ``GET /nodes/{node}/disks/list`` row with the disk's
  ``smartctl --json`` reading when there is one: ``health`` is ``FAILED`` when smartctl says the
  disk fails its overall check (or its exit status has bit 3, "disk failing"), ``PASSED`` when it
  passes, else PVE's own health (``PASSED``/``OK`` read as ``PASSED``), else ``UNKNOWN``;
  ``temperature_c`` comes from SMART only; ``wearout`` (percent of life left) from PVE, else
  100 minus an NVMe disk's ``percentage_used``. ``smart`` says where the health came from:
  ``ok`` (smartctl read), ``off`` (``proxmox.privileged.mode`` is off: PVE's data only),
  ``error`` (smartctl failed; the report's ``errors`` say why), ``pending`` (not read yet).
* :func:`sensor_entries` keeps every temperature sensor of ``sensors -j`` that has a current
  value: ``{"chip", "label", "celsius"}``.
* :func:`tool_problem` turns a failed or missing tool into the ``errors`` text, naming the
  package to install.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

import attrs

from felhom_agent.privileged.errors import CommandFailed, PrivilegedError, ProgramNotFound
from felhom_agent.privileged.parse import SMART_ERROR_BITS, SensorChip, SmartReport
from felhom_agent.proxmox.models import Disk

__all__ = [
    "HEALTH_FAILED",
    "HEALTH_PASSED",
    "HEALTH_UNKNOWN",
    "PACKAGES",
    "SMART_DISK_FAILING",
    "DiskEntry",
    "SensorEntry",
    "disk_entry",
    "sensor_entries",
    "smart_device_type",
    "smart_note",
    "tool_problem",
]

HEALTH_PASSED: Final = "PASSED"
HEALTH_FAILED: Final = "FAILED"
HEALTH_UNKNOWN: Final = "UNKNOWN"
#: smartctl exit status bit 3: the overall health self-assessment says the disk is failing.
SMART_DISK_FAILING: Final = 0b1000
#: The Debian package that brings each fenced tool.
PACKAGES: Final = {"smartctl": "smartmontools", "sensors": "lm-sensors",
                   "findmnt": "util-linux", "lsblk": "util-linux", "mount": "mount",
                   "umount": "mount"}
_SMART_STATES: Final = frozenset({"ok", "off", "error", "pending"})


@attrs.frozen
class DiskEntry:
    """One physical disk as the report carries it."""

    devpath: str
    model: str | None
    serial: str | None
    size: int | None
    type: str
    health: str
    wearout: int | None
    temperature_c: int | None
    smart: str = attrs.field(validator=attrs.validators.in_(_SMART_STATES))

    def to_dict(self) -> dict[str, Any]:
        """The wire form of one ``disks`` entry."""
        return attrs.asdict(self)


@attrs.frozen
class SensorEntry:
    """One temperature reading of ``sensors -j``."""

    chip: str
    label: str
    celsius: float

    def to_dict(self) -> dict[str, Any]:
        """The wire form of one ``sensors`` entry."""
        return attrs.asdict(self)


def _api_health(value: str) -> str:
    upper = value.strip().upper()
    if upper in ("PASSED", "OK"):
        return HEALTH_PASSED
    if upper == "FAILED":
        return HEALTH_FAILED
    return HEALTH_UNKNOWN


def _wearout(value: str) -> int | None:
    try:
        number = int(value)
    except ValueError:
        return None  # "N/A": PVE could not tell (a spinning disk, a USB bridge)
    return number if 0 <= number <= 100 else None


def smart_device_type(disk: Disk) -> str | None:
    """The ``smartctl -d`` type a disk needs: ``sat`` behind a USB bridge, else autodetect."""
    return "sat" if disk.type == "usb" else None


def disk_entry(disk: Disk, smart: SmartReport | None, state: str) -> DiskEntry:
    """Merge a disk-list row with its SMART reading (``state``: see the module docstring)."""
    health = _api_health(disk.health)
    wearout = _wearout(disk.wearout)
    temperature = None
    model = disk.model or None
    serial = disk.serial or None
    if smart is not None:
        failing = bool(smart.exit_status & SMART_DISK_FAILING)
        if smart.smart_passed is False or failing:
            health = HEALTH_FAILED
        elif smart.smart_passed is True:
            health = HEALTH_PASSED
        temperature = smart.temperature_c
        if temperature is None and smart.nvme is not None:
            temperature = smart.nvme.temperature_c
        if wearout is None and smart.nvme is not None and smart.nvme.percentage_used is not None:
            wearout = max(0, 100 - smart.nvme.percentage_used)
        model = model or smart.model
        serial = serial or smart.serial
    return DiskEntry(devpath=disk.devpath, model=model, serial=serial,
                     size=disk.size or None, type=disk.type, health=health, wearout=wearout,
                     temperature_c=temperature, smart=state)


def sensor_entries(chips: Iterable[SensorChip]) -> tuple[SensorEntry, ...]:
    """Every temperature sensor with a current reading, in the tool's order."""
    return tuple(SensorEntry(chip=chip.name, label=feature.label, celsius=feature.input)
                 for chip in chips for feature in chip.features
                 if feature.kind == "temp" and feature.input is not None)


def smart_note(devpath: str, report: SmartReport) -> str | None:
    """The ``errors`` text for smartctl's own error bits 0-2, or None when there are none.

    The disk's findings (bits 3-7) are not errors of the reading: they show in ``health``.
    """
    bits = report.exit_status & SMART_ERROR_BITS
    if not bits:
        return None
    detail = "; ".join(report.messages) or "no message"
    return (f"smartctl {devpath}: exit status {report.exit_status} (error bits "
            f"{bits:03b}): {detail}; the data it gave is used")


def tool_problem(err: PrivilegedError, what: str) -> str:
    """The ``errors`` text for a fenced read that failed: the reason and what to do."""
    program = err.program or what.split(maxsplit=1)[0]
    package = PACKAGES.get(program)
    # 127: the remote shell of the SSH runner found no such command.
    missing = isinstance(err, ProgramNotFound) or (
        isinstance(err, CommandFailed) and err.returncode == 127)
    if missing:
        hint = f"install {package} (apt install {package})" if package else "install it"
        return f"{what}: {program} is not on the daemon's PATH: {hint}"
    return f"{what}: {err}"

