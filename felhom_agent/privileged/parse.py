"""Parse ``smartctl --json``, ``sensors -j``, ``findmnt --json`` and ``lsblk --json`` output.

The formats are documented by their tools (smartmontools' JSON output, ``json_format_version``
1; lm-sensors 3.6's ``-j``; util-linux's ``--json`` of ``findmnt`` and ``lsblk``: an object
holding ``filesystems`` or ``blockdevices``, one object per row keyed by the lower-cased column
names, nested rows under ``children``). The parsers are strict about *types* (a temperature
that is a string or a bool is an error: it means the format is not what we think) and lenient
about *presence* (a USB bridge or an NVMe disk omits whole sections; absent means ``None``), and
ignore keys they do not know, so a newer tool version keeps working.
"""

from __future__ import annotations

import json
import math
import re
from typing import Final

import attrs

from felhom_agent.privileged.errors import OutputParseError

__all__ = [
    "SMART_ERROR_BITS",
    "SMART_FATAL_BITS",
    "BlockDevice",
    "Mounted",
    "NvmeHealth",
    "SensorChip",
    "SensorFeature",
    "SmartAttribute",
    "SmartReport",
    "parse_findmnt",
    "parse_lsblk",
    "parse_sensors",
    "parse_smartctl",
]

#: smartctl exit status bits 0 (command line) and 1 (device open/identify) mean "no data";
#: the higher bits describe the disk's health and come with valid output.
SMART_FATAL_BITS: Final = 0b11
#: Bits 0-2 are smartctl's own errors (bit 2: a SMART command to the disk failed, the output
#: may be partial); bits 3-7 are findings about the disk (failing, attributes at threshold,
#: error log entries, self-test errors) and come with valid output.
SMART_ERROR_BITS: Final = 0b111

_Json = dict[str, object]


def _load(text: bytes | str, tool: str) -> _Json:
    try:
        doc = json.loads(text)
    except (ValueError, UnicodeDecodeError) as err:
        raise OutputParseError(f"{tool} output is not JSON: {err}", program=tool) from err
    if not isinstance(doc, dict):
        raise OutputParseError(f"{tool} output is not a JSON object", program=tool)
    return doc


def _obj(doc: _Json, key: str, where: str) -> _Json | None:
    value = doc.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise OutputParseError(f"smartctl: {where}{key} is not an object", program="smartctl")
    return value


def _int(doc: _Json | None, key: str, where: str) -> int | None:
    if doc is None:
        return None
    value = doc.get(key)
    if value is None:
        return None
    if type(value) is not int:
        raise OutputParseError(f"smartctl: {where}{key} is not an integer", program="smartctl")
    return value


def _str(doc: _Json | None, key: str, where: str) -> str | None:
    if doc is None:
        return None
    value = doc.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise OutputParseError(f"smartctl: {where}{key} is not a string", program="smartctl")
    return value


def _bool(doc: _Json | None, key: str, where: str) -> bool | None:
    if doc is None:
        return None
    value = doc.get(key)
    if value is None:
        return None
    if not isinstance(value, bool):
        raise OutputParseError(f"smartctl: {where}{key} is not a boolean", program="smartctl")
    return value


@attrs.frozen
class SmartAttribute:
    """One row of the ATA SMART attribute table."""

    id: int
    name: str
    value: int
    worst: int
    thresh: int
    raw_value: int
    raw_string: str
    when_failed: str  # "" (never), "past" or "now"
    prefailure: bool

    @property
    def failing_now(self) -> bool:
        """The normalised value is at or below its threshold right now."""
        return self.when_failed == "now"


@attrs.frozen
class NvmeHealth:
    """The NVMe SMART/health information log (the fields the agent reports)."""

    critical_warning: int | None
    temperature_c: int | None
    available_spare: int | None
    available_spare_threshold: int | None
    percentage_used: int | None
    media_errors: int | None
    unsafe_shutdowns: int | None


@attrs.frozen
class SmartReport:
    """One disk's SMART reading."""

    device: str
    exit_status: int
    protocol: str | None
    model: str | None
    serial: str | None
    firmware: str | None
    capacity_bytes: int | None
    smart_passed: bool | None
    temperature_c: int | None
    power_on_hours: int | None
    power_cycles: int | None
    attributes: tuple[SmartAttribute, ...]
    nvme: NvmeHealth | None
    messages: tuple[str, ...]


def _attribute(row: object, index: int) -> SmartAttribute:
    where = f"ata_smart_attributes.table[{index}]."
    if not isinstance(row, dict):
        raise OutputParseError(f"smartctl: {where[:-1]} is not an object", program="smartctl")
    raw = _obj(row, "raw", where)
    flags = _obj(row, "flags", where)
    fields = {k: _int(row, k, where) for k in ("id", "value", "worst", "thresh")}
    raw_value = _int(raw, "value", where + "raw.")
    name = _str(row, "name", where)
    if None in fields.values() or raw_value is None or name is None:
        raise OutputParseError(f"smartctl: {where[:-1]} lacks id/name/value/worst/thresh/raw",
                               program="smartctl")
    return SmartAttribute(
        id=fields["id"] or 0, name=name, value=fields["value"] or 0,
        worst=fields["worst"] or 0, thresh=fields["thresh"] or 0, raw_value=raw_value,
        raw_string=_str(raw, "string", where + "raw.") or str(raw_value),
        when_failed=_str(row, "when_failed", where) or "",
        prefailure=bool(_bool(flags, "prefailure", where + "flags.")),
    )


def parse_smartctl(text: bytes | str) -> SmartReport:
    """Parse ``smartctl --json -a`` output.

    Raises:
        OutputParseError: not JSON, or a known field has the wrong type.
    """
    doc = _load(text, "smartctl")
    tool = _obj(doc, "smartctl", "")
    device = _obj(doc, "device", "")
    name = _str(device, "name", "device.")
    exit_status = _int(tool, "exit_status", "smartctl.")
    if name is None or exit_status is None:
        raise OutputParseError("smartctl: device.name or smartctl.exit_status missing",
                               program="smartctl")
    messages: list[str] = []
    raw_messages = tool.get("messages", []) if tool is not None else []
    if not isinstance(raw_messages, list):
        raise OutputParseError("smartctl: smartctl.messages is not a list", program="smartctl")
    for msg in raw_messages:
        text_ = _str(msg, "string", "smartctl.messages[].") if isinstance(msg, dict) else None
        if text_ is not None:
            messages.append(text_)
    table_doc = _obj(doc, "ata_smart_attributes", "")
    table = table_doc.get("table", []) if table_doc is not None else []
    if not isinstance(table, list):
        raise OutputParseError("smartctl: ata_smart_attributes.table is not a list",
                               program="smartctl")
    log = _obj(doc, "nvme_smart_health_information_log", "")
    where = "nvme_smart_health_information_log."
    nvme = None if log is None else NvmeHealth(
        critical_warning=_int(log, "critical_warning", where),
        temperature_c=_int(log, "temperature", where),
        available_spare=_int(log, "available_spare", where),
        available_spare_threshold=_int(log, "available_spare_threshold", where),
        percentage_used=_int(log, "percentage_used", where),
        media_errors=_int(log, "media_errors", where),
        unsafe_shutdowns=_int(log, "unsafe_shutdowns", where),
    )
    power_on_hours = _int(_obj(doc, "power_on_time", ""), "hours", "power_on_time.")
    if power_on_hours is None and log is not None:
        power_on_hours = _int(log, "power_on_hours", where)
    return SmartReport(
        device=name,
        exit_status=exit_status,
        protocol=_str(device, "protocol", "device."),
        model=_str(doc, "model_name", ""),
        serial=_str(doc, "serial_number", ""),
        firmware=_str(doc, "firmware_version", ""),
        capacity_bytes=_int(_obj(doc, "user_capacity", ""), "bytes", "user_capacity."),
        smart_passed=_bool(_obj(doc, "smart_status", ""), "passed", "smart_status."),
        temperature_c=_int(_obj(doc, "temperature", ""), "current", "temperature."),
        power_on_hours=power_on_hours,
        power_cycles=_int(doc, "power_cycle_count", ""),
        attributes=tuple(_attribute(row, i) for i, row in enumerate(table)),
        nvme=nvme,
        messages=tuple(messages),
    )


# lm-sensors subfeature names: <type><index>_<what>, e.g. temp1_input, fan2_min, in0_alarm.
_SUBFEATURE = re.compile(r"([a-z]+)([0-9]+)_([a-z0-9_]+)")


@attrs.frozen
class SensorFeature:
    """One sensor (``Core 0``, ``Composite``, ``fan1``) and its readings by subfeature."""

    label: str
    kind: str  # temp, fan, in, curr, power, energy, humidity, intrusion...
    readings: tuple[tuple[str, float], ...]  # ("input", 45.0), ("max", 80.0), ...

    def get(self, name: str) -> float | None:
        """The reading ``name`` (``input``, ``max``, ``crit``, ``crit_alarm``...), if present."""
        return next((v for k, v in self.readings if k == name), None)

    @property
    def input(self) -> float | None:
        """The current value (°C for temp, RPM for fan, V for in...)."""
        return self.get("input")


@attrs.frozen
class SensorChip:
    """One chip (``coretemp-isa-0000``) with its adapter and features."""

    name: str
    adapter: str | None
    features: tuple[SensorFeature, ...]


def parse_sensors(text: bytes | str) -> tuple[SensorChip, ...]:
    """Parse ``sensors -j`` output, chips and features in the tool's order.

    Raises:
        OutputParseError: not JSON, a chip or feature is not an object, or a reading is not
            a finite number.
    """
    doc = _load(text, "sensors")
    chips: list[SensorChip] = []
    for chip_name, chip in doc.items():
        if not isinstance(chip, dict):
            raise OutputParseError(f"sensors: chip {chip_name!r} is not an object",
                                   program="sensors")
        adapter = chip.get("Adapter")
        features: list[SensorFeature] = []
        for label, sub in chip.items():
            if label == "Adapter":
                continue
            if not isinstance(sub, dict):
                continue  # a scalar we do not know; newer lm-sensors may add some
            kind, readings = "", []
            for key, value in sub.items():
                match = _SUBFEATURE.fullmatch(key)
                if match is None:
                    continue
                if (isinstance(value, bool) or not isinstance(value, int | float)
                        or not math.isfinite(value)):
                    raise OutputParseError(
                        f"sensors: {chip_name}/{label}/{key} is not a finite number",
                        program="sensors")
                kind = kind or match.group(1)
                readings.append((match.group(3), float(value)))
            if readings:
                features.append(SensorFeature(label, kind, tuple(readings)))
        chips.append(SensorChip(chip_name, adapter if isinstance(adapter, str) else None,
                                tuple(features)))
    return tuple(chips)


@attrs.frozen
class Mounted:
    """One row of ``findmnt --json --output TARGET,SOURCE,FSTYPE,UUID``."""

    target: str
    source: str | None
    fstype: str | None
    uuid: str | None


@attrs.frozen
class BlockDevice:
    """One row of ``lsblk --json --paths --output NAME,UUID,FSTYPE`` (partitions flattened)."""

    name: str
    uuid: str | None
    fstype: str | None


def _rows(doc: _Json, key: str, tool: str) -> list[_Json]:
    """Every row under ``key``, children after their parent (depth first)."""
    top = doc.get(key)
    if not isinstance(top, list):
        raise OutputParseError(f"{tool}: {key} is not a list", program=tool)
    out: list[_Json] = []
    stack = list(reversed(top))
    while stack:
        row = stack.pop()
        if not isinstance(row, dict):
            raise OutputParseError(f"{tool}: a row of {key} is not an object", program=tool)
        out.append(row)
        children = row.get("children", [])
        if not isinstance(children, list):
            raise OutputParseError(f"{tool}: children is not a list", program=tool)
        stack.extend(reversed(children))
    return out


def _col(row: _Json, key: str, tool: str, *, required: bool = False) -> str | None:
    value = row.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise OutputParseError(f"{tool}: {key} is not a string", program=tool)
    return value


def parse_findmnt(text: bytes | str) -> tuple[Mounted, ...]:
    """Parse ``findmnt --json`` output; empty output (nothing found, exit 1) is no row.

    Raises:
        OutputParseError: not JSON, or a row lacks a string ``target``.
    """
    if not text.strip():
        return ()
    doc = _load(text, "findmnt")
    return tuple(
        Mounted(target=_col(row, "target", "findmnt", required=True) or "",
                source=_col(row, "source", "findmnt"), fstype=_col(row, "fstype", "findmnt"),
                uuid=_col(row, "uuid", "findmnt"))
        for row in _rows(doc, "filesystems", "findmnt"))


def parse_lsblk(text: bytes | str) -> tuple[BlockDevice, ...]:
    """Parse ``lsblk --json`` output, partitions (``children``) flattened after their disk.

    Raises:
        OutputParseError: not JSON, or a row lacks a string ``name``.
    """
    doc = _load(text, "lsblk")
    return tuple(
        BlockDevice(name=_col(row, "name", "lsblk", required=True) or "",
                    uuid=_col(row, "uuid", "lsblk"), fstype=_col(row, "fstype", "lsblk"))
        for row in _rows(doc, "blockdevices", "lsblk"))
