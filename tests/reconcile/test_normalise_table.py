"""Table tests for the config-field normalisers (felhom_agent.core.normalise)."""

from __future__ import annotations

import pickle

import pytest

from felhom_agent.core.normalise import (
    FIELDS,
    NormaliseError,
    actual_value,
    config_diff,
    managed_keys,
    normalise_value,
    split_for_write,
)
from felhom_agent.errors import AgentError

SAME = [
    ("description", "hello", "hello\n"),
    ("description", "hello  ", "hello"),
    ("description", "a\n\nb", "a\n\nb\n"),
    ("description", "x\n\n\n", "x"),
    ("onboot", True, 1),
    ("onboot", False, "0"),
    ("onboot", "1", 1),
    ("protection", 0, False),
    ("tags", "B,a", "a;b"),
    ("tags", "web; prod  web", "prod;web"),
    ("tags", "", ";;"),
    ("startup", "1,up=30", "order=1,up=30"),
    ("startup", "up=30,order=1", "order=1,up=30"),
    ("startup", "down=5,,order=2", "order=2,down=5"),
    ("startup", "7,up=1", "up=1,order=7"),
    ("memory", "2048", 2048),
    ("memory", "current=2048", 2048),
    ("memory", 2048.0, "2048"),
    ("cores", "+4", 4),
    ("cpulimit", "1.5", 1.5),
    ("cpulimit", "2", 2.0),
    ("net0", "1", 1),
    ("net0", "0.5", 0.5),
    ("somekey", True, 1),
]

DIFFERENT = [
    ("description", "hello", "Hello"),
    ("description", " hello", "hello"),
    ("tags", "a;b", "a;c"),
    ("startup", "order=1", "order=2"),
    ("memory", 2048, 4096),
    ("name", "007", "7"),
    ("net0", "virtio,bridge=vmbr0", "virtio=AA:BB,bridge=vmbr0"),
    ("somekey", "007", "7"),
]

INVALID = [
    ("onboot", "yes"),
    ("onboot", 2),
    ("onboot", None),
    ("tags", 5),
    ("tags", "ok;-bad"),
    ("startup", "order=x"),
    ("startup", "first=1"),
    ("startup", "order=1,order=2"),
    ("startup", "1,order=2"),
    ("startup", "order= 1"),
    ("startup", " 1"),
    ("startup", "=1"),
    ("startup", 3),
    ("memory", "lots"),
    ("memory", True),
    ("cores", 1.5),
    ("cores", " 4"),
    ("cpulimit", "1.5 "),
    ("cpulimit", "fast"),
    ("cpulimit", float("nan")),
    ("description", 7),
    ("name", 7),
    ("somekey", None),
    ("somekey", float("inf")),
]


@pytest.mark.parametrize(("key", "a", "b"), SAME)
def test_equivalent_spellings_normalise_equal(key: str, a: object, b: object) -> None:
    """Spellings PVE treats as the same value have the same canonical form."""
    assert normalise_value(key, a) == normalise_value(key, b)


@pytest.mark.parametrize(("key", "a", "b"), DIFFERENT)
def test_distinct_values_stay_distinct(key: str, a: object, b: object) -> None:
    """Normalisation never merges values PVE keeps apart (no hidden drift)."""
    assert normalise_value(key, a) != normalise_value(key, b)


@pytest.mark.parametrize(("key", "value"), INVALID)
def test_invalid_values_raise_with_the_key(key: str, value: object) -> None:
    """A value PVE would reject raises NormaliseError naming the key."""
    with pytest.raises(NormaliseError) as info:
        normalise_value(key, value)
    assert info.value.key == key
    assert str(info.value).startswith(f"{key}: ")
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, AgentError)


def test_normalise_error_pickles_with_its_key() -> None:
    """NormaliseError survives pickling with its context (crosses process boundaries)."""
    err = pickle.loads(pickle.dumps(NormaliseError("onboot: bad", key="onboot")))  # noqa: S301
    assert (str(err), err.key) == ("onboot: bad", "onboot")


def test_canonical_types() -> None:
    """Canonical values are int for booleans/integers, str for text (JSON- and PVE-ready)."""
    assert normalise_value("onboot", True) == 1
    assert type(normalise_value("onboot", True)) is int
    assert normalise_value("tags", "B,a") == "a;b"
    assert normalise_value("startup", "3") == "order=3"
    assert type(normalise_value("cpulimit", "2")) is int


def test_absent_keys_read_as_their_default() -> None:
    """An absent key means the schema default (onboot 0, description empty), else None."""
    assert actual_value("onboot", {}) == 0
    assert actual_value("description", {}) == ""
    assert actual_value("tags", {}) == ""
    assert actual_value("acpi", {}) == 1
    assert actual_value("memory", {}) is None
    assert actual_value("net0", {}) is None


def test_unreadable_actual_value_counts_as_drift() -> None:
    """A value PVE returned that does not normalise differs from any desired value."""
    assert actual_value("onboot", {"onboot": "weird"}) is None
    assert config_diff({"onboot": 1}, {"onboot": "weird"}) == {"onboot": 1}


def test_digest_is_ignored() -> None:
    """digest is never compared: not from the actual side, not from the desired side."""
    assert config_diff({"onboot": 1}, {"onboot": 1, "digest": "abc"}) == {}
    assert config_diff({"digest": "x"}, {"digest": "y"}) == {}
    assert actual_value("digest", {"digest": "abc"}) is None


def test_config_diff_returns_only_differing_desired_keys() -> None:
    """config_diff lists desired keys that differ, with normalised desired values, sorted."""
    desired = {"onboot": True, "description": "web", "tags": "B,a", "cores": "2"}
    actual = {"onboot": 0, "description": "web\n", "tags": "a;b", "cores": 2, "memory": 512}
    assert config_diff(desired, actual) == {"onboot": 1}
    assert list(config_diff({"tags": "x", "onboot": 1, "cores": 3}, {})) == [
        "cores", "onboot", "tags"
    ]


def test_default_valued_desired_key_matches_absent_key() -> None:
    """Desiring the default (onboot 0, empty description) is in sync with an absent key."""
    assert config_diff({"onboot": 0, "description": "", "tags": ""}, {}) == {}


def test_invalid_desired_value_raises_in_diff() -> None:
    """config_diff refuses to guess about an invalid desired value."""
    with pytest.raises(NormaliseError):
        config_diff({"onboot": "maybe"}, {})


def test_split_for_write_deletes_empty_strings() -> None:
    """Empty canonical strings become delete= keys; everything else is set, sorted."""
    to_set, to_delete = split_for_write({"startup": "", "onboot": 0, "description": "x",
                                         "tags": ""})
    assert to_set == {"description": "x", "onboot": 0}
    assert list(to_set) == ["description", "onboot"]
    assert to_delete == ("startup", "tags")


def test_managed_keys_are_the_table() -> None:
    """managed_keys() lists exactly the table's keys, benign ones included."""
    assert set(managed_keys()) == set(FIELDS)
    assert {"description", "tags", "onboot", "startup"} <= set(managed_keys())
