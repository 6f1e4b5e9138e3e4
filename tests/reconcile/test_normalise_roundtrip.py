"""Round-trip properties: what PVE gives back normalises to what was written.

See ``docs/pve-facts.md`` ("Config round trip").

``pve_roundtrip`` below is the test's model of Proxmox VE: it takes a value as written through
the API (form-encoded, so on the wire every value is a string) and returns what
``GET .../config`` answers afterwards, per the cited source facts:

* ``description`` is stored as ``#`` comment lines from Perl ``split(/\\n/, ...)`` (trailing
  empty fields dropped); LXC reads every line back with ``"\\n"`` appended and never trims,
  QEMU trims trailing whitespace; no lines at all means the key is absent;
* booleans and integers come back as JSON numbers (``check_type``), an explicit 0 stays;
* ``number`` keys (``cpulimit``) come back as the original string;
* QEMU ``memory`` is a property string since PVE 8.1 (string back), LXC ``memory`` an int;
* ``tags`` are split on ``;``/``,``/space, lower-cased, sorted, de-duplicated, joined with
  ``;``; empty means absent;
* ``startup`` and plain strings are stored as written; an empty string means absent.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Literal

from hypothesis import given, settings
from hypothesis import strategies as st

from felhom_agent.core.desired import DesiredState, GuestDesired
from felhom_agent.core.normalise import (
    FIELDS,
    ConfigValue,
    actual_value,
    config_diff,
    normalise_value,
    split_for_write,
)
from felhom_agent.planning.plan import GuestActual, plan
from tests.support.hypo import examples

GuestType = Literal["qemu", "lxc"]
ABSENT = object()

_BOOL_KEYS = {k for k, f in FIELDS.items() if f.normalise.__name__ == "_boolean"}
_INT_KEYS = {k for k, f in FIELDS.items() if f.normalise.__name__ == "_integer"}


def _wire(value: object) -> str:
    """How a value travels form-encoded (booleans as 0/1)."""
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def _perl_split_lines(text: str) -> list[str]:
    parts = text.split("\n")
    while parts and parts[-1] == "":
        parts.pop()
    return parts


def pve_roundtrip(key: str, value: object, guest_type: GuestType) -> object:
    """The value ``GET .../config`` returns for ``key`` after writing ``value`` (or ABSENT)."""
    wire = _wire(value)
    if key == "description":
        lines = _perl_split_lines(wire)
        if not lines:
            return ABSENT
        if guest_type == "lxc":
            return "".join(line + "\n" for line in lines)
        trimmed = "\n".join(lines).rstrip()
        return trimmed if trimmed else ABSENT
    if key == "tags":
        tags = sorted({t for t in re.split(r"[;,\s]+", wire.lower()) if t})
        return ";".join(tags) if tags else ABSENT
    if key in _BOOL_KEYS or key in _INT_KEYS:
        return int(wire)
    if key == "memory":
        return wire if guest_type == "qemu" else int(wire.removeprefix("current="))
    if wire == "":
        return ABSENT
    return wire


def read_back(written: Mapping[str, object], guest_type: GuestType) -> dict[str, ConfigValue]:
    """A whole config after a write, as GET config returns it (digest included)."""
    out: dict[str, ConfigValue] = {"digest": "0" * 40}
    for key, value in written.items():
        got = pve_roundtrip(key, value, guest_type)
        if got is not ABSENT:
            assert isinstance(got, str | int | float)
            out[key] = got
    return out


_TAG = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_\-+.]{0,8}", fullmatch=True)
_SEP = st.sampled_from([";", ",", " ", ";;", ", "])


@st.composite
def _tags(draw: st.DrawFn) -> str:
    tags = draw(st.lists(_TAG, max_size=5))
    seps = [draw(_SEP) for _ in tags]
    return "".join(t + s for t, s in zip(tags, seps, strict=True))


@st.composite
def _startup(draw: st.DrawFn) -> str:
    keys = draw(st.lists(st.sampled_from(["order", "up", "down"]), unique=True))
    parts = [f"{k}={draw(st.integers(0, 9999))}" for k in keys]
    if "order" in keys and draw(st.booleans()):
        parts = [p.removeprefix("order=") if p.startswith("order=") else p for p in parts]
        parts.sort(key=lambda p: "=" in p)  # a bare order value goes first
    return ",".join(parts)


_DESCRIPTION = st.text(
    alphabet=st.sampled_from([*"ab :%#\n\t\r é€", "\u00a0"]), max_size=40
)


def _forms(*values: ConfigValue) -> st.SearchStrategy[ConfigValue]:
    """One of several spellings of the same value."""
    return st.sampled_from(values)


_INT_VALUE = st.integers(0, 1 << 20).flatmap(lambda n: _forms(n, str(n)))


def _value_for(key: str) -> st.SearchStrategy[ConfigValue]:
    if key == "description":
        return _DESCRIPTION
    if key == "tags":
        return _tags()
    if key == "startup":
        return _startup()
    if key in _BOOL_KEYS:
        return _forms(True, False, 0, 1, "0", "1")
    if key == "memory":
        return st.integers(16, 1 << 20).flatmap(lambda n: _forms(n, str(n), f"current={n}"))
    if key in _INT_KEYS:
        return _INT_VALUE
    if key == "cpulimit":
        return st.integers(0, 12800).flatmap(lambda n: _forms(n / 100, str(n / 100), n // 100))
    return st.from_regex(r"[a-z][a-z0-9-]{0,20}", fullmatch=True)


_FIELD_AND_VALUE = st.sampled_from(sorted(FIELDS)).flatmap(
    lambda k: st.tuples(st.just(k), _value_for(k))
)
_GUEST_TYPE: st.SearchStrategy[GuestType] = st.sampled_from(["qemu", "lxc"])


@settings(max_examples=examples(20))
@given(st.data())
def test_every_managed_field_has_a_strategy_and_model(data: st.DataObject) -> None:
    """The round-trip model and the strategies cover every key of the normaliser table."""
    for key in FIELDS:
        value = data.draw(_value_for(key), label=key)
        for guest_type in ("qemu", "lxc"):
            got = pve_roundtrip(key, value, guest_type)
            assert got is ABSENT or isinstance(got, str | int)


@settings(max_examples=examples(400))
@given(_FIELD_AND_VALUE, _GUEST_TYPE)
def test_roundtrip_normalises_to_the_written_value(
    field: tuple[str, ConfigValue], guest_type: GuestType
) -> None:
    """normalise(pve_roundtrip(x)) == normalise(x) for every managed field and guest type."""
    key, value = field
    config = read_back({key: value}, guest_type)
    assert actual_value(key, config) == normalise_value(key, value)


@settings(max_examples=examples(200))
@given(st.lists(_FIELD_AND_VALUE, max_size=8), _GUEST_TYPE)
def test_written_canonical_params_verify_after_read_back(
    fields: list[tuple[str, ConfigValue]], guest_type: GuestType
) -> None:
    """Writing a diff's canonical params (split_for_write) and re-reading gives an empty diff."""
    desired = dict(fields)
    before: dict[str, ConfigValue] = {}
    params = config_diff(desired, before)
    to_set, to_delete = split_for_write(params)
    after = read_back(to_set, guest_type)
    for key in to_delete:
        after.pop(key, None)
    assert config_diff(desired, after) == {}
    assert config_diff(params, after) == {}


@st.composite
def _field_and_two_values(draw: st.DrawFn) -> tuple[str, ConfigValue, ConfigValue]:
    """A managed key and two values for it that normalise differently."""
    key = draw(st.sampled_from(sorted(FIELDS)))
    first = draw(_value_for(key), label="first")
    canonical = normalise_value(key, first)
    second = draw(_value_for(key).filter(lambda v: normalise_value(key, v) != canonical),
                  label="second")
    return key, first, second


@settings(max_examples=examples(200))
@given(_field_and_two_values(), _GUEST_TYPE)
def test_roundtrip_keeps_real_differences(
    case: tuple[str, ConfigValue, ConfigValue], guest_type: GuestType
) -> None:
    """Two values that normalise differently still differ after PVE's round trip."""
    key, va, vb = case
    assert actual_value(key, read_back({key: va}, guest_type)) != normalise_value(key, vb)


@settings(max_examples=examples(150))
@given(st.lists(_FIELD_AND_VALUE, max_size=8), _GUEST_TYPE)
def test_plan_after_a_pve_write_is_in_sync(
    fields: list[tuple[str, ConfigValue]], guest_type: GuestType
) -> None:
    """A guest whose config PVE round-tripped from the desired values plans to nothing."""
    config = dict(fields)
    want = DesiredState(1, {101: GuestDesired(101, guest_type, None, config)})
    have = GuestActual(101, guest_type, "pve1", "g", "running",
                       config=read_back(config, guest_type))
    assert plan(want, [have], busy=lambda vmid: False).in_sync
