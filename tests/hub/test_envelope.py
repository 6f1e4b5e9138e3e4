"""Envelope parsing: strict on known fields, tolerant of unknown ones, exact op strings."""

from __future__ import annotations

import json
import pickle
from typing import Any

import pytest

from felhom_agent.errors import AgentError
from felhom_agent.hub.envelope import Envelope, SignedOp, parse_envelope
from felhom_agent.hub.errors import EnvelopeError


def _parse(raw: object, default: float = 30.0) -> Envelope:
    return parse_envelope(raw, default_interval_s=default)


def test_full_envelope() -> None:
    """A complete envelope yields interval, raw desired dict and the ops in order."""
    desired = {"generation": 7, "guests": {"101": {"type": "lxc", "state": "running"}}}
    env = _parse({"schema": 1, "poll_interval_s": 15, "desired": desired,
                  "signed_ops": [{"payload": "p1", "signature": "s1"},
                                 {"payload": "p2", "signature": "s2"}]})
    assert env.poll_interval_s == 15.0
    assert env.desired == desired
    assert env.signed_ops == (SignedOp("p1", "s1"), SignedOp("p2", "s2"))


def test_unknown_fields_are_ignored() -> None:
    """Unknown top-level and per-op fields do not break parsing."""
    env = _parse({"schema": 1, "future": {"x": 1},
                  "signed_ops": [{"payload": "p", "signature": "s", "hint": 3}]})
    assert env.signed_ops == (SignedOp("p", "s"),)


def test_desired_may_be_null_or_absent() -> None:
    """desired null or absent means no desired state."""
    assert _parse({"schema": 1, "desired": None}).desired is None
    assert _parse({"schema": 1}).desired is None
    assert _parse({"schema": 1}).signed_ops == ()
    assert _parse({"schema": 1, "signed_ops": None}).signed_ops == ()


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0, 1.0), (-5, 1.0), (0.2, 1.0), (1, 1.0), (45.5, 45.5), (3600, 3600.0), (99999, 3600.0)],
)
def test_poll_interval_is_clamped(value: float, expected: float) -> None:
    """poll_interval_s is honoured within [1, 3600] and clamped outside."""
    assert _parse({"schema": 1, "poll_interval_s": value}).poll_interval_s == expected


def test_absent_interval_uses_the_configured_default() -> None:
    """No poll_interval_s (or null) means hub.interval_s."""
    assert _parse({"schema": 1}, default=42).poll_interval_s == 42.0
    assert _parse({"schema": 1, "poll_interval_s": None}, default=42).poll_interval_s == 42.0


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ([1, 2], "(envelope)"),
        ("text", "(envelope)"),
        ({}, "schema"),
        ({"schema": "1"}, "schema"),
        ({"schema": True}, "schema"),
        ({"schema": 2}, "schema"),
        ({"schema": 1, "poll_interval_s": "30"}, "poll_interval_s"),
        ({"schema": 1, "poll_interval_s": True}, "poll_interval_s"),
        ({"schema": 1, "poll_interval_s": float("nan")}, "poll_interval_s"),
        ({"schema": 1, "desired": [1]}, "desired"),
        ({"schema": 1, "desired": "x"}, "desired"),
        ({"schema": 1, "signed_ops": {"payload": "p"}}, "signed_ops"),
        ({"schema": 1, "signed_ops": ["p"]}, "signed_ops[0]"),
        ({"schema": 1, "signed_ops": [{"payload": "p", "signature": "s"},
                                      {"payload": 5, "signature": "s"}]},
         "signed_ops[1].payload"),
        ({"schema": 1, "signed_ops": [{"payload": "p"}]}, "signed_ops[0].signature"),
    ],
)
def test_wrong_types_name_the_field(raw: Any, field: str) -> None:
    """A known field with the wrong type is an EnvelopeError naming that field."""
    with pytest.raises(EnvelopeError) as info:
        _parse(raw)
    assert info.value.field == field
    assert field in str(info.value)


def test_envelope_error_is_agent_and_value_error() -> None:
    """EnvelopeError derives from AgentError and ValueError and survives pickling."""
    err = EnvelopeError("bad", field="desired")
    assert isinstance(err, AgentError) and isinstance(err, ValueError)
    copy = pickle.loads(pickle.dumps(err))  # noqa: S301 - our own bytes, round trip
    assert copy.field == "desired" and str(copy) == "bad"


def test_signed_op_strings_are_kept_exactly() -> None:
    """Payload and signature are the exact strings from the JSON text, not re-serialised."""
    payload = '{"v": 1,  "op_id":"x",\n "params": {"description": "é\\u00e9"}}  '
    signature = "-----BEGIN SSH SIGNATURE-----\nAAAA\n-----END SSH SIGNATURE-----\n"
    wire = json.dumps({"schema": 1, "signed_ops": [{"payload": payload,
                                                    "signature": signature}]})
    env = _parse(json.loads(wire))
    assert env.signed_ops[0].payload == payload
    assert env.signed_ops[0].signature == signature


def test_signed_op_repr_is_short() -> None:
    """A SignedOp's repr truncates long payloads so logs stay readable."""
    op = SignedOp(payload="x" * 500, signature="y" * 500)
    assert len(repr(op)) < 150
