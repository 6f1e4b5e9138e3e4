"""The strict JSON loader: duplicates and non-finite numbers refused at any depth."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from felhom_agent import strictjson
from felhom_agent.strictjson import (
    DuplicateMember,
    JsonSyntaxError,
    NonFiniteNumber,
    StrictJsonError,
)

_SCALARS = (st.none() | st.booleans() | st.integers()
            | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=6))
_DOCS = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner,
                                                                max_size=4),
    max_leaves=20,
)


@given(_DOCS)
def test_any_plain_document_round_trips(doc: Any) -> None:
    """Whatever ``json.dumps`` writes (finite, unique keys) reads back equal, as plain types."""
    back = strictjson.loads(json.dumps(doc))
    assert back == doc
    assert json.dumps(back) == json.dumps(doc)  # same member order, no marker subclasses


@given(_DOCS, st.text(max_size=4))
def test_a_duplicate_is_found_wherever_it_is_nested(doc: Any, key: str) -> None:
    """A member repeated inside any nesting is refused with the path of its object."""
    member = json.dumps(key)
    text = '{"outer": [' + json.dumps(doc) + ", {" + member + ": 1, " + member + ": 2}]}"
    with pytest.raises(DuplicateMember) as info:
        strictjson.loads(text)
    assert info.value.key == key and info.value.path == ("outer", 1)


def test_the_outermost_duplicate_is_reported_first() -> None:
    """Several duplicates: the one met first in document order, outer objects first."""
    text = '{"a": {"b": 1, "b": 2}, "c": 1, "c": 2}'
    with pytest.raises(DuplicateMember) as info:
        strictjson.loads(text)
    assert (info.value.key, info.value.path) == ("c", ())
    with pytest.raises(DuplicateMember) as info:
        strictjson.loads('{"g": {"101": {"t": 1, "t": 2}}}')
    assert strictjson.dotted((*info.value.path, info.value.key)) == "g.101.t"
    assert str(info.value) == "member 't' appears more than once"


@pytest.mark.parametrize("name", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_constants_are_refused(name: str) -> None:
    """Python's extensions to JSON are not JSON."""
    with pytest.raises(NonFiniteNumber) as info:
        strictjson.loads('{"v": [1, ' + name + "]}")
    assert info.value.name == name and str(info.value) == f"{name} is not valid JSON"


def test_syntax_errors_keep_the_parsers_position_and_text() -> None:
    """Line, column and message are :mod:`json`'s own, so callers can quote them."""
    with pytest.raises(JsonSyntaxError) as info:
        strictjson.loads('{\n  "a": 1,\n  "b" 2\n}')
    try:
        json.loads('{\n  "a": 1,\n  "b" 2\n}')
    except json.JSONDecodeError as err:
        expected = err
    assert (info.value.lineno, info.value.colno, info.value.msg) == (
        expected.lineno, expected.colno, expected.msg)
    assert str(info.value) == str(expected)


@pytest.mark.parametrize("bad", [b'{"a": "\xff"}', b"[" * 100_000])
def test_undecodable_or_too_deep_input_is_a_strict_json_error(bad: bytes) -> None:
    """Bad bytes and pathological nesting are typed errors, never a crash."""
    with pytest.raises(StrictJsonError):
        strictjson.loads(bad)


def test_errors_are_value_errors() -> None:
    """Generic callers that catch ValueError keep working."""
    for err in (DuplicateMember("k"), NonFiniteNumber("NaN"),
                JsonSyntaxError("x", lineno=1, colno=1, pos=0)):
        assert isinstance(err, ValueError)
