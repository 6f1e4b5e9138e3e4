"""The backup policy in the desired state: strict parsing, error paths, the model, round trips."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from felhom_agent.core.backup_policy import (
    BackupMode,
    BackupPolicy,
    BackupPolicyError,
    KeepOptions,
    Window,
    WindowError,
    parse_window,
)
from felhom_agent.core.desired import (
    DesiredState,
    DesiredStateError,
    GuestDesired,
    GuestType,
    loads_desired,
    parse_desired,
)
from felhom_agent.errors import AgentError
from tests.support.hypo import examples

POLICY = {"storage": "pbs1", "every_h": 24, "window": "01:00-05:00", "mode": "snapshot",
          "keep": {"last": 3, "daily": 7, "weekly": 4}}


def _doc(backup: object) -> dict[str, Any]:
    return {"generation": 1, "guests": {"101": {"type": "lxc", "state": "running",
                                                "backup": backup}}}


def test_the_documented_example_parses() -> None:
    """The example policy becomes the attrs model, window and keep included."""
    guest = parse_desired(_doc(POLICY)).guests[101]
    assert guest.backup == BackupPolicy(
        storage="pbs1", every_h=24, window=Window(60, 300), mode=BackupMode.SNAPSHOT,
        keep=KeepOptions(last=3, daily=7, weekly=4),
    )
    assert guest.backup.every_s == 86400
    assert guest.backup.keep is not None
    assert not guest.backup.keep.keeps_all


def test_minimal_policy_gets_defaults_and_nulls_mean_absent() -> None:
    """Only storage and every_h are required; window, mode and keep may be null."""
    minimal = parse_desired(_doc({"storage": "local", "every_h": 0.5})).guests[101].backup
    assert minimal == BackupPolicy(storage="local", every_h=0.5)
    assert minimal.mode == "snapshot"
    nulls = {"storage": "local", "every_h": 0.5, "window": None, "mode": None, "keep": None}
    assert parse_desired(_doc(nulls)).guests[101].backup == minimal
    assert parse_desired(_doc(None)).guests[101].backup is None
    no_backup = {"generation": 1, "guests": {"101": {"type": "qemu"}}}
    assert parse_desired(no_backup).guests[101].backup is None


def test_round_trip_through_json() -> None:
    """to_json of a guest with a policy parses back to an equal model."""
    state = parse_desired(_doc(POLICY))
    text = json.dumps(state.to_json())
    assert loads_desired(text) == state
    assert state.to_json()["guests"]["101"]["backup"] == POLICY  # type: ignore[index]


@pytest.mark.parametrize(
    ("window", "start", "end"),
    [("01:00-05:00", 60, 300), ("22:00-04:00", 1320, 240), ("00:00-23:59", 0, 1439),
     ("23:59-00:00", 1439, 0), ("12:30-12:31", 750, 751)],
)
def test_windows_that_parse(window: str, start: int, end: int) -> None:
    """Two-digit 24-hour HH:MM-HH:MM, wrapping allowed."""
    parsed = parse_window(window)
    assert (parsed.start, parsed.end) == (start, end)
    assert parsed.to_json() == window
    assert parsed.wraps == (end < start)


@pytest.mark.parametrize(
    "window",
    ["25:00-01:00", "1:00-5:00", "01:00-5:00", "24:00-01:00", "01:60-02:00", "01:00 - 05:00",
     "01:00-05:00:00", "0100-0500", "01:00", "", "01:00-01:00", "aa:bb-cc:dd", "01:00-05:00\n",
     "\uff10\uff11:00-05:00"],
)
def test_malformed_windows_are_refused(window: str) -> None:
    """Anything but the exact syntax, and start == end, is an error naming the path."""
    with pytest.raises(WindowError):
        parse_window(window)
    with pytest.raises(DesiredStateError) as info:
        parse_desired(_doc({**POLICY, "window": window}))
    assert info.value.path == "guests.101.backup.window"
    assert str(info.value).startswith("guests.101.backup.window: ")


BAD: list[tuple[str, object, str, str]] = [
    ("not an object", "pbs1", "guests.101.backup", "expected an object, got string"),
    ("unknown field", {**POLICY, "every": 1}, "guests.101.backup.every",
     "allowed: storage, every_h, window, mode, keep"),
    ("storage missing", {"every_h": 1}, "guests.101.backup.storage", "required"),
    ("storage number", {"storage": 5, "every_h": 1}, "guests.101.backup.storage",
     "PVE storage id"),
    ("storage bad id", {"storage": "pbs 1", "every_h": 1}, "guests.101.backup.storage",
     "'pbs 1'"),
    ("storage one char", {"storage": "a", "every_h": 1}, "guests.101.backup.storage",
     "2 to 64 characters"),
    ("storage too long", {"storage": "a" * 65, "every_h": 1}, "guests.101.backup.storage",
     "a PVE storage id"),
    ("every_h missing", {"storage": "pbs1"}, "guests.101.backup.every_h", "required"),
    ("every_h zero", {"storage": "pbs1", "every_h": 0}, "guests.101.backup.every_h",
     "a number > 0"),
    ("every_h negative", {"storage": "pbs1", "every_h": -24}, "guests.101.backup.every_h",
     "got -24"),
    ("every_h string", {"storage": "pbs1", "every_h": "24"}, "guests.101.backup.every_h",
     "a number > 0"),
    ("every_h bool", {"storage": "pbs1", "every_h": True}, "guests.101.backup.every_h",
     "a number > 0"),
    ("every_h inf", {"storage": "pbs1", "every_h": float("inf")}, "guests.101.backup.every_h",
     "a number > 0"),
    ("window number", {**POLICY, "window": 1}, "guests.101.backup.window", "got number"),
    ("mode unknown", {**POLICY, "mode": "live"}, "guests.101.backup.mode",
     "snapshot, suspend or stop"),
    ("keep not object", {**POLICY, "keep": 3}, "guests.101.backup.keep", "expected an object"),
    ("keep empty", {**POLICY, "keep": {}}, "guests.101.backup.keep",
     "at least one keep option"),
    ("keep typo", {**POLICY, "keep": {"daly": 7}}, "guests.101.backup.keep.daly",
     "allowed: last, hourly, daily, weekly, monthly, yearly, all"),
    ("keep prefix", {**POLICY, "keep": {"keep-last": 3}}, "guests.101.backup.keep.keep-last",
     "without the keep- prefix"),
    ("keep negative", {**POLICY, "keep": {"last": -1}}, "guests.101.backup.keep.last",
     "an integer >= 0"),
    ("keep float", {**POLICY, "keep": {"daily": 1.5}}, "guests.101.backup.keep.daily",
     "an integer >= 0"),
    ("keep bool count", {**POLICY, "keep": {"weekly": True}}, "guests.101.backup.keep.weekly",
     "an integer >= 0"),
    ("keep all string", {**POLICY, "keep": {"all": "yes"}}, "guests.101.backup.keep.all",
     "true or false"),
    ("keep all with counts", {**POLICY, "keep": {"all": True, "last": 3}},
     "guests.101.backup.keep.all", "cannot be combined with last"),
]


@pytest.mark.parametrize(("policy", "path", "fragment"), [b[1:] for b in BAD],
                         ids=[b[0] for b in BAD])
def test_malformed_policies_name_the_path(policy: object, path: str, fragment: str) -> None:
    """Each syntax or type error rejects the document with the offending path."""
    with pytest.raises(DesiredStateError) as info:
        parse_desired(_doc(policy))
    err = info.value
    assert err.path == path
    assert str(err).startswith(f"{path}: ")
    assert fragment in str(err)
    assert isinstance(err, AgentError)


def test_hub_envelope_prefix_reaches_the_policy() -> None:
    """Errors inside a policy carry the envelope prefix like every other path."""
    with pytest.raises(DesiredStateError) as info:
        parse_desired(_doc({**POLICY, "keep": {"daly": 1}}), path="desired")
    assert info.value.path == "desired.guests.101.backup.keep.daly"


def test_duplicate_key_inside_a_policy_is_refused() -> None:
    """A key given twice inside the policy is caught like anywhere else."""
    text = ('{"generation": 1, "guests": {"101": {"type": "lxc", "backup": '
            '{"storage": "a1", "every_h": 1, "every_h": 2}}}}')
    with pytest.raises(DesiredStateError) as info:
        loads_desired(text)
    assert info.value.path == "guests.101.backup.every_h"


def test_host_facts_are_not_syntax() -> None:
    """An unknown or non-backup storage parses: the planner decides it per guest."""
    state = parse_desired(_doc({"storage": "no-such-storage", "every_h": 1}))
    assert state.guests[101].backup is not None


def test_model_guards() -> None:
    """The value classes refuse what the parser would never build."""
    with pytest.raises(WindowError):
        Window(60, 60)
    with pytest.raises(WindowError):
        Window(0, 1440)
    with pytest.raises(BackupPolicyError):
        KeepOptions(last=-1)
    with pytest.raises(BackupPolicyError):
        KeepOptions(all=True, daily=0)
    with pytest.raises(ValueError, match="live"):
        BackupPolicy("pbs1", 1, mode="live")
    assert KeepOptions().keeps_all
    assert KeepOptions(last=0, daily=0).keeps_all
    assert KeepOptions(all=False, last=1).to_json() == {"last": 1, "all": False}


_SLOTS = [
    ("guests.101.backup", ()),
    ("guests.101.backup.storage", ("storage",)),
    ("guests.101.backup.every_h", ("every_h",)),
    ("guests.101.backup.window", ("window",)),
    ("guests.101.backup.mode", ("mode",)),
    ("guests.101.backup.keep", ("keep",)),
    ("guests.101.backup.keep.last", ("keep", "last")),
    ("guests.101.backup.keep.all", ("keep", "all")),
]
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=3),
    max_leaves=8,
)


@settings(max_examples=examples(300))
@given(st.sampled_from(_SLOTS), _JSON)
def test_any_value_in_any_policy_slot_parses_or_names_that_slot(
    slot: tuple[str, tuple[str, ...]], value: Any
) -> None:
    """Any JSON value anywhere in a policy parses, or fails with DesiredStateError there."""
    path, keys = slot
    doc = _doc(copy.deepcopy(POLICY))
    if keys:
        target = doc["guests"]["101"]["backup"]
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value
    else:
        doc["guests"]["101"]["backup"] = value
    try:
        parse_desired(doc)
    except DesiredStateError as err:
        assert err.path == path or err.path.startswith(path + ".")


_COUNT = st.none() | st.integers(0, 400)
_KEEPS = st.one_of(
    st.none(),
    st.just(KeepOptions(all=True)),
    st.builds(KeepOptions, last=_COUNT, hourly=_COUNT, daily=_COUNT, weekly=_COUNT,
              monthly=_COUNT, yearly=_COUNT, all=st.sampled_from([None, False])).filter(
                  lambda k: bool(k.to_json())),
)
_WINDOWS = st.none() | st.tuples(st.integers(0, 1439), st.integers(0, 1439)).filter(
    lambda t: t[0] != t[1]).map(lambda t: Window(*t))
_POLICIES = st.builds(
    BackupPolicy,
    storage=st.from_regex(r"[a-z][a-z0-9_.-]{0,10}[a-z0-9]", fullmatch=True),
    every_h=st.integers(1, 10_000) | st.floats(0.001, 1e6),
    window=_WINDOWS,
    mode=st.sampled_from(list(BackupMode)),
    keep=_KEEPS,
)


@settings(max_examples=examples(200))
@given(_POLICIES, st.sampled_from(["qemu", "lxc"]))
def test_any_policy_round_trips(policy: BackupPolicy, guest_type: str) -> None:
    """loads(dumps(to_json(x))) == x for any valid policy."""
    gtype: GuestType = "lxc" if guest_type == "lxc" else "qemu"
    state = DesiredState(5, {101: GuestDesired(101, gtype, backup=policy)})
    assert loads_desired(json.dumps(state.to_json())) == state
