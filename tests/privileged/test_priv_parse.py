"""Parsing smartctl, sensors, findmnt and lsblk JSON output into typed values (hand-written
fixtures in the tools' documented formats)."""

from __future__ import annotations

import json

import pytest

from felhom_agent.privileged import (
    OutputParseError,
    SmartAttribute,
    parse_findmnt,
    parse_lsblk,
    parse_sensors,
    parse_smartctl,
)
from tests.privileged.priv_fakes import DATA


def test_smartctl_ata_disk() -> None:
    """An ATA disk behind a USB-SAT bridge yields identity, health, temperature and attributes."""
    report = parse_smartctl((DATA / "smartctl_ata.json").read_bytes())
    assert report.device == "/dev/sdb"
    assert report.protocol == "ATA"
    assert report.model == "WDC WD40NMZW-11GX6S1"
    assert report.serial == "WX11D9000001"
    assert report.firmware == "01.01A01"
    assert report.capacity_bytes == 4000787030016
    assert report.smart_passed is True
    assert report.temperature_c == 36
    assert report.power_on_hours == 12034
    assert report.power_cycles == 412
    assert report.exit_status == 0
    assert report.nvme is None
    assert [a.id for a in report.attributes] == [1, 5, 194]
    assert report.attributes[1] == SmartAttribute(
        id=5, name="Reallocated_Sector_Ct", value=200, worst=200, thresh=140, raw_value=0,
        raw_string="0", when_failed="", prefailure=True)
    assert not any(a.failing_now for a in report.attributes)


def test_smartctl_nvme_disk() -> None:
    """An NVMe disk yields its health log; smartctl's messages and status bits are kept."""
    report = parse_smartctl((DATA / "smartctl_nvme.json").read_text())
    assert report.protocol == "NVMe"
    assert report.attributes == ()
    assert report.nvme is not None
    assert report.nvme.percentage_used == 3
    assert report.nvme.available_spare == 100
    assert report.nvme.media_errors == 0
    assert report.nvme.critical_warning == 0
    assert report.nvme.unsafe_shutdowns == 12
    assert report.temperature_c == 41
    assert report.exit_status == 4
    assert report.messages == ("Read Self-test Log failed: Invalid Field in Command (0x002)",)


def test_smartctl_failing_attribute() -> None:
    """An attribute with when_failed "now" reads as failing, and a failed health check as False."""
    doc = json.loads((DATA / "smartctl_ata.json").read_text())
    doc["ata_smart_attributes"]["table"][1]["when_failed"] = "now"
    doc["smart_status"]["passed"] = False
    report = parse_smartctl(json.dumps(doc))
    assert report.attributes[1].failing_now
    assert report.smart_passed is False


def test_smartctl_nvme_power_on_hours_fallback() -> None:
    """Without power_on_time, the NVMe log's power_on_hours is used."""
    doc = json.loads((DATA / "smartctl_nvme.json").read_text())
    del doc["power_on_time"]
    assert parse_smartctl(json.dumps(doc)).power_on_hours == 8760


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.__setitem__("temperature", {"current": "36"}), "temperature.current"),
        (lambda d: d.__setitem__("temperature", {"current": True}), "temperature.current"),
        (lambda d: d["smart_status"].__setitem__("passed", 1), "smart_status.passed"),
        (lambda d: d.__setitem__("device", {}), "device.name"),
        (lambda d: d["smartctl"].pop("exit_status"), "exit_status"),
        (lambda d: d["ata_smart_attributes"].__setitem__("table", {}), "table"),
        (lambda d: d["ata_smart_attributes"]["table"][0].pop("thresh"), "table[0]"),
        (lambda d: d["ata_smart_attributes"]["table"].__setitem__(2, 7), "table[2]"),
        (lambda d: d.__setitem__("user_capacity", 4000), "user_capacity"),
    ],
)
def test_smartctl_wrong_types_are_errors(mutate: object, message: str) -> None:
    """A known smartctl field with the wrong type or a missing required field is an error."""
    doc = json.loads((DATA / "smartctl_ata.json").read_text())
    assert callable(mutate)
    mutate(doc)
    with pytest.raises(OutputParseError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_smartctl(json.dumps(doc))


@pytest.mark.parametrize("text", [b"", b"not json", b"[1, 2]", b"\xff\xfe"])
def test_non_json_output_is_an_error(text: bytes) -> None:
    """Output that is not a JSON object raises OutputParseError for both tools."""
    with pytest.raises(OutputParseError):
        parse_smartctl(text)
    with pytest.raises(OutputParseError):
        parse_sensors(text)


def test_smartctl_ignores_unknown_keys() -> None:
    """Keys a newer smartctl adds are ignored (forward compatibility)."""
    doc = json.loads((DATA / "smartctl_ata.json").read_text())
    doc["new_section_2030"] = {"anything": [1, 2, 3]}
    assert parse_smartctl(json.dumps(doc)).device == "/dev/sdb"


def test_sensors_chips_and_features() -> None:
    """sensors -j yields chips in order with adapter, feature kind and every reading."""
    chips = parse_sensors((DATA / "sensors.json").read_bytes())
    assert [c.name for c in chips] == ["coretemp-isa-0000", "nvme-pci-0100", "nct6798-isa-0290"]
    core = chips[0]
    assert core.adapter == "ISA adapter"
    assert [f.label for f in core.features] == ["Package id 0", "Core 0"]
    package = core.features[0]
    assert package.kind == "temp"
    assert package.input == 45.0
    assert package.get("crit") == 100.0
    assert package.get("crit_alarm") == 0.0
    assert package.get("nonexistent") is None
    nvme = chips[1].features[0]
    assert nvme.label == "Composite"
    assert nvme.get("min") == -273.15
    board = {f.label: f for f in chips[2].features}
    assert board["fan2"].kind == "fan"
    assert board["fan2"].input == 1123.0
    assert board["in0"].kind == "in"
    assert board["intrusion0"].input is None
    assert board["intrusion0"].get("alarm") == 1.0


@pytest.mark.parametrize(
    "bad",
    [
        '{"chip-0": 5}',
        '{"chip-0": {"Adapter": "x", "temp1": {"temp1_input": "45"}}}',
        '{"chip-0": {"Adapter": "x", "temp1": {"temp1_input": true}}}',
        '{"chip-0": {"Adapter": "x", "temp1": {"temp1_input": NaN}}}',
        '{"chip-0": {"Adapter": "x", "temp1": {"temp1_input": Infinity}}}',
    ],
)
def test_sensors_wrong_types_are_errors(bad: str) -> None:
    """A chip that is not an object or a reading that is not a finite number is an error."""
    with pytest.raises(OutputParseError):
        parse_sensors(bad)


def test_sensors_skips_unknown_shapes() -> None:
    """Unknown scalar keys and non-subfeature keys are skipped; a chip may have no features."""
    chips = parse_sensors('{"chip-0": {"Adapter": "Virtual device", "note": "x", '
                          '"temp1": {"label": 3, "temp1_input": 30.5}}, "empty-0": {}}')
    assert chips[0].features[0].readings == (("input", 30.5),)
    assert chips[1].adapter is None
    assert chips[1].features == ()


FINDMNT = b"""{
   "filesystems": [
      {
         "target": "/mnt/felhom/backup1",
         "source": "/dev/sdb1",
         "fstype": "ext4",
         "uuid": "0f3c6a2e-9d1b-4c55-8a0e-7e2b5d8c1f00",
         "children": [
            {"target": "/mnt/felhom/backup1/snap", "source": "/dev/sdc1", "fstype": "xfs",
             "uuid": null}
         ]
      }
   ]
}
"""
LSBLK = b"""{
   "blockdevices": [
      {"name": "/dev/nvme0n1", "uuid": null, "fstype": null,
         "children": [
            {"name": "/dev/nvme0n1p1", "uuid": "5A1B-2C3D", "fstype": "vfat"},
            {"name": "/dev/nvme0n1p3", "uuid": "b6f2c1a0-1111-2222-3333-444455556666",
             "fstype": "LVM2_member"}
         ]
      },
      {"name": "/dev/sdb", "uuid": null, "fstype": null,
         "children": [
            {"name": "/dev/sdb1", "uuid": "0f3c6a2e-9d1b-4c55-8a0e-7e2b5d8c1f00",
             "fstype": "ext4"}
         ]
      }
   ]
}
"""


def test_findmnt_rows_children_flattened() -> None:
    """findmnt's tree is flattened parent first; empty output (exit 1) is no row."""
    rows = parse_findmnt(FINDMNT)
    assert [(r.target, r.source, r.fstype) for r in rows] == [
        ("/mnt/felhom/backup1", "/dev/sdb1", "ext4"),
        ("/mnt/felhom/backup1/snap", "/dev/sdc1", "xfs")]
    assert rows[0].uuid == "0f3c6a2e-9d1b-4c55-8a0e-7e2b5d8c1f00"
    assert rows[1].uuid is None
    assert parse_findmnt(b"") == ()
    assert parse_findmnt(b"\n") == ()


def test_lsblk_partitions_after_their_disk() -> None:
    """lsblk's disks and partitions come out in tree order with UUID and type."""
    rows = parse_lsblk(LSBLK)
    assert [r.name for r in rows] == ["/dev/nvme0n1", "/dev/nvme0n1p1", "/dev/nvme0n1p3",
                                      "/dev/sdb", "/dev/sdb1"]
    assert rows[-1].fstype == "ext4"
    assert rows[0].uuid is None


@pytest.mark.parametrize(
    ("parse", "text"),
    [
        (parse_findmnt, b"not json"),
        (parse_findmnt, b'{"filesystems": {}}'),
        (parse_findmnt, b'{"filesystems": [{"source": "/dev/sdb1"}]}'),
        (parse_findmnt, b'{"filesystems": [{"target": 7}]}'),
        (parse_lsblk, b'{"blockdevices": [{"name": "/dev/sdb", "children": {}}]}'),
        (parse_lsblk, b'{"blockdevices": ["sdb"]}'),
        (parse_lsblk, b"[]"),
    ],
)
def test_util_linux_json_of_another_shape_is_refused(parse: object, text: bytes) -> None:
    """A findmnt/lsblk document that is not util-linux's shape raises OutputParseError."""
    assert callable(parse)
    with pytest.raises(OutputParseError):
        parse(text)
