"""The op id in a backup's notes, and finding the volume an op made ("done means found")."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from felhom_agent.backup.notes import (
    OP_ID_RE,
    find_op_backup,
    notes_template,
    op_id_in_notes,
)
from felhom_agent.core.backup_policy import BackupPolicyError
from felhom_agent.errors import AgentError
from felhom_agent.proxmox.backup_models import BackupVolume
from tests.backup.helpers import backup
from tests.support.hypo import examples

PLAN_OP = "plan-7-101-backup-0123456789ab"


def vol(ctime: int, notes: str | None = None, *, vmid: int = 101, subtype: str = "lxc",
        storage: str = "pbs1") -> BackupVolume:
    """A listed backup with notes."""
    return backup(f"{storage}:backup/ct/{vmid}/{ctime}", vmid=vmid, subtype=subtype,
                  ctime=ctime, notes=notes)


def test_template_and_parser_agree_on_agent_op_ids() -> None:
    """Plan op ids and UUIDs go into the template and come back out of the notes."""
    for op_id in (PLAN_OP, str(uuid.UUID(int=7)), "a"):
        template = notes_template(op_id)
        assert template == f"felhom op={op_id}"
        assert op_id_in_notes(template) == op_id


@pytest.mark.parametrize("op_id", ["", "has space", "{{vmid}}", "a\\nb", "line\nbreak",
                                   "-leading", "x" * 129, "caf\u00e9"])
def test_template_refuses_ids_pve_would_rewrite(op_id: str) -> None:
    """Braces, backslashes, whitespace and the like are refused, not mangled."""
    with pytest.raises(BackupPolicyError) as info:
        notes_template(op_id)
    assert isinstance(info.value, AgentError)


@pytest.mark.parametrize(
    ("notes", "expected"),
    [
        (None, None), ("", None), ("  ", None), ("felhom op=abc", "abc"),
        ("nightly felhom op=abc  (kept for audit)", "abc"),
        ("felhom op=abc felhom op=def", "abc"),
        ("xfelhom op=abc", None), ("felhom op=", None), ("felhom op=abc{", None),
        ("first line\nfelhom op=abc", None), ("felhom op=abc\nsecond", "abc"),
        ("felhom  op=abc", None),
    ],
)
def test_op_id_in_notes(notes: str | None, expected: str | None) -> None:
    """The first 'felhom op=ID' word on the first line, with text around it allowed."""
    assert op_id_in_notes(notes) == expected


@settings(max_examples=examples(200))
@given(st.from_regex(OP_ID_RE, fullmatch=True), st.text(max_size=20), st.text(max_size=20))
def test_any_valid_id_round_trips_with_text_around(op_id: str, before: str, after: str
                                                   ) -> None:
    """Whatever an operator adds around the template on the same line, the id is found."""
    before = before.replace("\n", " ").replace("\r", " ")
    after = after.replace("\n", " ").replace("\r", " ")
    notes = f"{before} {notes_template(op_id)} {after}"
    if "felhom op=" in before:
        return  # an earlier marker wins; not this property
    assert op_id_in_notes(notes) == op_id


def test_find_by_notes_ignores_other_guests_and_storages() -> None:
    """The op's volume is the one whose notes carry the id, for this guest and storage."""
    mine = vol(200, notes_template(PLAN_OP))
    volumes = [vol(100), mine, vol(300, notes_template(PLAN_OP), vmid=102),
               vol(300, notes_template(PLAN_OP), subtype="qemu"),
               vol(300, notes_template(PLAN_OP), storage="local")]
    found = find_op_backup(volumes, op_id=PLAN_OP, vmid=101, guest_type="lxc", storage="pbs1")
    assert found is not None
    assert (found.volume, found.by) == (mine, "notes")


def test_find_by_ctime_when_the_notes_are_missing() -> None:
    """No notes (PVE only warns when it cannot write them): a backup made at or after the
    dispatch second, whose notes name no other op, is the op's; the oldest such one."""
    volumes = [vol(99), vol(100), vol(130, notes_template("other-op")), vol(150)]
    found = find_op_backup(volumes, op_id=PLAN_OP, vmid=101, guest_type="lxc", storage="pbs1",
                           dispatched_at=100.8)
    assert found is not None
    assert (found.volume.ctime, found.by) == (100, "ctime")
    none = find_op_backup([vol(99)], op_id=PLAN_OP, vmid=101, guest_type="lxc",
                          storage="pbs1", dispatched_at=100.0)
    assert none is None
    no_time = find_op_backup(volumes, op_id=PLAN_OP, vmid=101, guest_type="lxc",
                             storage="pbs1")
    assert no_time is None


def test_undated_backups_match_by_notes_only() -> None:
    """A backup without ctime is found by its notes, never by the time fallback."""
    undated = backup("pbs1:backup/ct/101/odd", ctime=None)
    assert find_op_backup([undated], op_id=PLAN_OP, vmid=101, guest_type="lxc",
                          storage="pbs1", dispatched_at=0.0) is None
    tagged = backup("pbs1:backup/ct/101/odd2", ctime=None, notes=notes_template(PLAN_OP))
    found = find_op_backup([tagged, undated], op_id=PLAN_OP, vmid=101, guest_type="lxc",
                           storage="pbs1", dispatched_at=0.0)
    assert found is not None and (found.volume, found.by) == (tagged, "notes")
