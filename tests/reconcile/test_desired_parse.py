"""Desired-state model and strict parser tests.

See ``docs/architecture.md`` ("Desired state and the plan").
"""

from __future__ import annotations

import copy
import json
import pickle
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from felhom_agent.core.desired import (
    DesiredState,
    DesiredStateError,
    GuestDesired,
    loads_desired,
    parse_desired,
)
from felhom_agent.errors import AgentError
from tests.support.hypo import examples

EXAMPLE = {
    "generation": 7,
    "guests": {
        "101": {"type": "lxc", "state": "running",
                "config": {"description": "web frontend", "onboot": 1}},
        "205": {"type": "qemu", "state": "stopped"},
        "300": {"type": "qemu"},
    },
}


def test_design_example_parses() -> None:
    """The documented example parses into the attrs model with vmids as ints."""
    state = loads_desired(json.dumps(EXAMPLE))
    assert state.generation == 7
    assert list(state.guests) == [101, 205, 300]
    web = state.guests[101]
    assert web == GuestDesired(vmid=101, type="lxc", state="running",
                               config={"description": "web frontend", "onboot": 1})
    assert state.guests[300].state is None
    assert dict(state.guests[300].config) == {}


def test_to_json_round_trips() -> None:
    """parse(to_json(x)) == x, and to_json reproduces the input document."""
    state = parse_desired(EXAMPLE)
    assert state.to_json() == EXAMPLE
    assert parse_desired(state.to_json()) == state


def test_model_is_immutable() -> None:
    """The parsed state cannot be changed behind the reconciler's back."""
    state = parse_desired(copy.deepcopy(EXAMPLE))
    with pytest.raises(TypeError):
        state.guests[101].config["onboot"] = 0  # type: ignore[index]
    with pytest.raises(TypeError):
        state.guests[999] = state.guests[101]  # type: ignore[index]


def test_guestapi_is_off_unless_true() -> None:
    """``"guestapi": true`` enables a guest's local API; absent or false is off, and
    to_json writes it only when true."""
    state = parse_desired({"generation": 1, "guests": {
        "101": {"type": "lxc", "guestapi": True}, "102": {"type": "lxc", "guestapi": False},
        "103": {"type": "qemu"}}})
    assert [state.guests[v].guestapi for v in (101, 102, 103)] == [True, False, False]
    assert state.guests[101].to_json() == {"type": "lxc", "guestapi": True}
    assert state.guests[102].to_json() == {"type": "lxc"}


def test_state_null_means_unmanaged_and_guests_default_empty() -> None:
    """state null is the same as absent, and a missing guests member means no guests."""
    state = parse_desired({"generation": 0, "guests": {"101": {"type": "qemu", "state": None}}})
    assert state.guests[101].state is None
    assert parse_desired({"generation": 3}) == DesiredState(generation=3)


BAD: list[tuple[str, object, str, str]] = [
    ("not an object", [], "", "expected an object, got array"),
    ("missing generation", {"guests": {}}, "generation", "required"),
    ("bool generation", {"generation": True}, "generation", "non-negative integer"),
    ("negative generation", {"generation": -1}, "generation", "non-negative integer"),
    ("float generation", {"generation": 1.5}, "generation", "non-negative integer"),
    ("unknown top field", {"generation": 1, "guest": {}}, "guest", "unknown field"),
    ("guests not object", {"generation": 1, "guests": []}, "guests", "expected an object"),
    ("vmid not numeric", {"generation": 1, "guests": {"web": {"type": "lxc"}}},
     "guests.web", "decimal"),
    ("vmid leading zero", {"generation": 1, "guests": {"0101": {"type": "lxc"}}},
     "guests.0101", "leading zeros"),
    ("vmid too small", {"generation": 1, "guests": {"99": {"type": "lxc"}}},
     "guests.99", "between 100"),
    ("vmid too big", {"generation": 1, "guests": {"1000000000": {"type": "lxc"}}},
     "guests.1000000000", "between 100"),
    ("guest not object", {"generation": 1, "guests": {"101": "lxc"}},
     "guests.101", "expected an object, got string"),
    ("missing type", {"generation": 1, "guests": {"101": {}}}, "guests.101.type", "required"),
    ("bad type", {"generation": 1, "guests": {"101": {"type": "vm"}}},
     "guests.101.type", "qemu or lxc"),
    ("bad state", {"generation": 1, "guests": {"101": {"type": "lxc", "state": "up"}}},
     "guests.101.state", "running, stopped or null"),
    ("unknown guest field", {"generation": 1, "guests": {"101": {"type": "lxc", "node": "x"}}},
     "guests.101.node", "allowed: type, state, config"),
    ("config not object", {"generation": 1, "guests": {"101": {"type": "lxc", "config": 1}}},
     "guests.101.config", "expected an object"),
    ("bad key", {"generation": 1, "guests": {"101": {"type": "lxc", "config": {"On Boot": 1}}}},
     "guests.101.config.On Boot", "lower-case"),
    ("digest key", {"generation": 1, "guests": {"101": {"type": "lxc",
                                                        "config": {"digest": "ab"}}}},
     "guests.101.config.digest", "API parameter"),
    ("delete key", {"generation": 1, "guests": {"101": {"type": "lxc",
                                                        "config": {"delete": "onboot"}}}},
     "guests.101.config.delete", "API parameter"),
    ("null value", {"generation": 1, "guests": {"101": {"type": "lxc",
                                                        "config": {"onboot": None}}}},
     "guests.101.config.onboot", "got null"),
    ("list value", {"generation": 1, "guests": {"101": {"type": "lxc",
                                                        "config": {"tags": ["a"]}}}},
     "guests.101.config.tags", "got array"),
    ("bad boolean", {"generation": 1, "guests": {"101": {"type": "lxc",
                                                         "config": {"onboot": "yes"}}}},
     "guests.101.config.onboot", "expected a boolean"),
    ("bad startup", {"generation": 1, "guests": {"101": {"type": "lxc",
                                                         "config": {"startup": "first"}}}},
     "guests.101.config.startup", "invalid startup item"),
    ("guestapi not a boolean", {"generation": 1, "guests": {"101": {"type": "lxc",
                                                                   "guestapi": "yes"}}},
     "guests.101.guestapi", "must be true or false"),
    ("guestapi null", {"generation": 1, "guests": {"101": {"type": "lxc", "guestapi": None}}},
     "guests.101.guestapi", "must be true or false"),
    ("long description", {"generation": 1, "guests": {"101": {
        "type": "lxc", "config": {"description": "x" * 8193}}}},
     "guests.101.config.description", "8192"),
]


@pytest.mark.parametrize(("doc", "path", "fragment"), [b[1:] for b in BAD],
                         ids=[b[0] for b in BAD])
def test_malformed_documents_name_the_path(doc: object, path: str, fragment: str) -> None:
    """Every malformed document raises DesiredStateError naming the offending path."""
    with pytest.raises(DesiredStateError) as info:
        parse_desired(doc)
    err = info.value
    assert err.path == path
    assert str(err).startswith(f"{path}: " if path else "desired state: ")
    assert fragment in str(err)
    assert isinstance(err, ValueError)
    assert isinstance(err, AgentError)


def test_path_prefix_for_the_hub_envelope() -> None:
    """A path prefix makes errors point into the envelope (desired.guests.101.state)."""
    with pytest.raises(DesiredStateError) as info:
        parse_desired({"generation": 1, "guests": {"101": {"type": "lxc", "state": 1}}},
                      path="desired")
    assert info.value.path == "desired.guests.101.state"


@pytest.mark.parametrize(
    ("text", "path", "fragment"),
    [
        ('{"generation": 1,', "", "invalid JSON"),
        ("", "", "line 1 column 1"),
        ('{"generation": 1, "generation": 2}', "generation", "duplicate key"),
        ('{"generation": 1, "guests": {"101": {"type": "lxc", "type": "qemu"}}}',
         "guests.101.type", "duplicate key"),
        ('{"generation": 1, "guests": {"101": {"type": "lxc"}, "101": {"type": "qemu"}}}',
         "guests.101", "duplicate key"),
        ('{"generation": NaN}', "", "NaN"),
        (b'{"generation": 1, "guests": {"\xff": 1}}', "", "invalid JSON"),
    ],
)
def test_malformed_json_text(text: str | bytes, path: str, fragment: str) -> None:
    """Broken JSON, duplicate keys and NaN are clear errors with a path or position."""
    with pytest.raises(DesiredStateError) as info:
        loads_desired(text)
    assert info.value.path == path
    assert fragment in str(info.value)


def test_error_pickles_with_its_path() -> None:
    """DesiredStateError keeps its path across pickling."""
    err = DesiredStateError("guests.101.state: bad", path="guests.101.state")
    back = pickle.loads(pickle.dumps(err))  # noqa: S301
    assert (str(back), back.path) == (str(err), err.path)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=3),
    max_leaves=8,
)
_SLOTS = [
    ("generation", ("generation",)),
    ("guests", ("guests",)),
    ("guests.101", ("guests", "101")),
    ("guests.101.type", ("guests", "101", "type")),
    ("guests.101.state", ("guests", "101", "state")),
    ("guests.101.config", ("guests", "101", "config")),
    ("guests.101.config.onboot", ("guests", "101", "config", "onboot")),
    ("guests.101.config.startup", ("guests", "101", "config", "startup")),
]


@settings(max_examples=examples(300))
@given(st.sampled_from(_SLOTS), _JSON)
def test_any_value_in_any_slot_parses_or_names_that_slot(
    slot: tuple[str, tuple[str, ...]], value: Any
) -> None:
    """Any JSON value placed anywhere parses, or fails with DesiredStateError at that path."""
    path, keys = slot
    doc: Any = copy.deepcopy(EXAMPLE)
    target = doc
    for key in keys[:-1]:
        target = target[key]
    target[keys[-1]] = value
    try:
        parse_desired(doc)
    except DesiredStateError as err:
        assert err.path == path or err.path.startswith(path + ".")


_STATES = st.builds(
    DesiredState,
    generation=st.integers(0, 2**40),
    guests=st.dictionaries(st.integers(100, 999_999_999), st.none(), max_size=4).flatmap(
        lambda d: st.fixed_dictionaries({
            vmid: st.builds(
                GuestDesired,
                vmid=st.just(vmid),
                type=st.sampled_from(["qemu", "lxc"]),
                state=st.sampled_from([None, "running", "stopped"]),
                config=st.fixed_dictionaries({}, optional={
                    "description": st.text(max_size=20),
                    "onboot": st.booleans(),
                    "tags": st.sampled_from(["a;b", "web", ""]),
                    "memory": st.integers(16, 65536),
                }),
                guestapi=st.booleans(),
            )
            for vmid in d
        })
    ),
)


@settings(max_examples=examples(150))
@given(_STATES)
def test_json_text_round_trip(state: DesiredState) -> None:
    """loads(dumps(to_json(x))) == x for any valid desired state."""
    assert loads_desired(json.dumps(state.to_json())) == state


def test_model_rejects_a_guest_filed_under_another_vmid() -> None:
    """A hand-built DesiredState whose key and guest vmid disagree is refused."""
    with pytest.raises(DesiredStateError) as info:
        DesiredState(1, {101: GuestDesired(102, "lxc")})
    assert info.value.path == "guests.101"
