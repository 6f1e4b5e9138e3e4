"""Desired state: the attrs model and its strict parser.

See ``docs/architecture.md`` ("Desired state and the plan").

The desired state is what the hub (or an operator's file) says each guest should look like::

    {"generation": 7,
     "guests": {"101": {"type": "lxc", "state": "running",
                        "config": {"description": "web frontend", "onboot": 1}}}}

Parsing is strict because a typo must not silently do nothing (or something else): unknown
fields, duplicate JSON keys, non-canonical vmids (``"0101"``), wrong types and config values
that PVE would reject are all errors, and every error names the path of the offending value
(``guests.101.state``) so an operator can find it. ``state`` may be omitted (or ``null``): the
run state of that guest is then not managed. Config values are kept as given; comparisons go
through :mod:`felhom_agent.core.normalise`, which also validates them here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final, Literal, cast

import attrs

from felhom_agent import strictjson
from felhom_agent.core.normalise import (
    IGNORED_KEYS,
    ConfigValue,
    NormaliseError,
    normalise_value,
)
from felhom_agent.errors import ReconcileError
from felhom_agent.vmids import VMID_MAX, VMID_MIN, VMID_TEXT, is_vmid

__all__ = [
    "GUEST_TYPES",
    "RUN_STATES",
    "DesiredState",
    "DesiredStateError",
    "GuestDesired",
    "GuestType",
    "RunState",
    "loads_desired",
    "parse_desired",
]

GuestType = Literal["qemu", "lxc"]
RunState = Literal["running", "stopped"]
GUEST_TYPES: Final = ("lxc", "qemu")
RUN_STATES: Final = ("running", "stopped")

# A config key: PVE's option names are lower-case letters, digits, '_' and '-'.
_KEY_RE: Final = re.compile(r"[a-z][a-z0-9_-]{0,63}")
# API parameters of the config endpoints that are not config keys.
_NOT_CONFIG_KEYS: Final = frozenset(
    {"delete", "revert", "skiplock", "force", "vmid", "node", "background_delay"} | IGNORED_KEYS
)
DESCRIPTION_MAX: Final = 8192  # PVE schema maxLength
_GUEST_FIELDS: Final = ("type", "state", "config")
_TOP_FIELDS: Final = ("generation", "guests")


class DesiredStateError(ReconcileError, ValueError):
    """Desired state is malformed; ``path`` names the offending value (``guests.101.state``).

    Args:
        message: what is wrong and what is allowed (starts with the path).
        path: the dotted path of the value, ``""`` for the document itself.
    """

    def __init__(self, message: str, *, path: str) -> None:
        super().__init__(message)
        self.path = path


def _frozen_config(value: Mapping[str, ConfigValue]) -> Mapping[str, ConfigValue]:
    return MappingProxyType(dict(sorted(value.items())))


def _frozen_guests(value: Mapping[int, GuestDesired]) -> Mapping[int, GuestDesired]:
    return MappingProxyType(dict(sorted(value.items())))


@attrs.frozen
class GuestDesired:
    """What one guest should look like.

    Attributes:
        vmid: the guest id.
        type: ``qemu`` or ``lxc``; a guest of the other type is refused, not touched.
        state: ``running``/``stopped``, or ``None`` to leave the run state alone.
        config: config keys and their desired values (as given; compared normalised).
    """

    vmid: int
    type: GuestType
    state: RunState | None = None
    config: Mapping[str, ConfigValue] = attrs.field(
        factory=dict, converter=_frozen_config
    )

    def to_json(self) -> dict[str, object]:
        """The guest's JSON form (without the vmid, which is its key)."""
        out: dict[str, object] = {"type": self.type}
        if self.state is not None:
            out["state"] = self.state
        if self.config:
            out["config"] = dict(self.config)
        return out


@attrs.frozen
class DesiredState:
    """The whole desired state of one host at one generation.

    Attributes:
        generation: monotonic version chosen by the hub; echoed in plans and reports.
        guests: vmid → desired guest, sorted by vmid.
    """

    generation: int
    guests: Mapping[int, GuestDesired] = attrs.field(
        factory=dict, converter=_frozen_guests
    )

    def __attrs_post_init__(self) -> None:
        for vmid, guest in self.guests.items():
            if guest.vmid != vmid:
                raise DesiredStateError(
                    f"guests.{vmid}: holds the entry of vmid {guest.vmid}", path=f"guests.{vmid}"
                )

    def to_json(self) -> dict[str, object]:
        """The JSON form; :func:`parse_desired` of it gives an equal object."""
        return {
            "generation": self.generation,
            "guests": {str(v): g.to_json() for v, g in self.guests.items()},
        }


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _fail(path: str, message: str) -> DesiredStateError:
    where = path or "desired state"
    return DesiredStateError(f"{where}: {message}", path=path)


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _object(value: object, path: str) -> dict[str, object]:
    if not isinstance(value, dict):
        raise _fail(path, f"expected an object, got {_type_name(value)}")
    return cast("dict[str, object]", value)


def _check_fields(obj: Mapping[str, object], allowed: tuple[str, ...], path: str) -> None:
    for key in obj:
        if key not in allowed:
            raise _fail(
                _join(path, key), f"unknown field (allowed: {', '.join(allowed)})"
            )


def _parse_vmid(key: str, path: str) -> int:
    if not VMID_TEXT.fullmatch(key):
        raise _fail(path, "guest keys must be vmids written as decimal numbers without sign "
                    "or leading zeros")
    vmid = int(key)
    if not is_vmid(vmid):
        raise _fail(path, f"vmid must be between {VMID_MIN} and {VMID_MAX}")
    return vmid


def _parse_config(value: object, path: str) -> dict[str, ConfigValue]:
    raw = _object(value, path)
    out: dict[str, ConfigValue] = {}
    for key, item in raw.items():
        where = _join(path, key)
        if not _KEY_RE.fullmatch(key):
            raise _fail(where, "config keys are lower-case letters, digits, '_' and '-', "
                        "starting with a letter (at most 64 characters)")
        if key in _NOT_CONFIG_KEYS:
            raise _fail(where, "is an API parameter, not a config key")
        if item is None or not isinstance(item, str | int | float):
            raise _fail(where, f"expected a string, number or boolean, got {_type_name(item)} "
                        "(to reset a key, give its default value)")
        try:
            normalise_value(key, item)
        except NormaliseError as err:
            raise _fail(where, str(err).removeprefix(f"{key}: ")) from None
        if key == "description" and isinstance(item, str) and len(item) > DESCRIPTION_MAX:
            raise _fail(where, f"may be at most {DESCRIPTION_MAX} characters long")
        out[key] = item
    return out


def _parse_guest(vmid: int, value: object, path: str) -> GuestDesired:
    obj = _object(value, path)
    _check_fields(obj, _GUEST_FIELDS, path)
    if "type" not in obj:
        raise _fail(_join(path, "type"), "required (qemu or lxc)")
    gtype = obj["type"]
    if gtype not in GUEST_TYPES:
        raise _fail(_join(path, "type"), f"must be qemu or lxc, got {gtype!r}")
    state = obj.get("state")
    if state is not None and state not in RUN_STATES:
        raise _fail(_join(path, "state"), f"must be running, stopped or null, got {state!r}")
    config = _parse_config(obj.get("config", {}), _join(path, "config"))
    return GuestDesired(
        vmid=vmid,
        type=gtype,
        state=state,
        config=config,
    )


def parse_desired(data: object, *, path: str = "") -> DesiredState:
    """Validate decoded JSON (a dict) and build a :class:`DesiredState`.

    Args:
        data: the decoded document, e.g. the ``desired`` member of a hub envelope.
        path: prefix for error paths (``"desired"`` gives ``desired.guests.101.state``).

    Raises:
        DesiredStateError: the first problem found, with its path.
    """
    obj = _object(data, path)
    _check_fields(obj, _TOP_FIELDS, path)
    gen_path = _join(path, "generation")
    if "generation" not in obj:
        raise _fail(gen_path, "required (a non-negative integer)")
    generation = obj["generation"]
    if isinstance(generation, bool) or not isinstance(generation, int) or generation < 0:
        raise _fail(gen_path, f"must be a non-negative integer, got {generation!r}")
    guests_path = _join(path, "guests")
    guests: dict[int, GuestDesired] = {}
    for key, value in _object(obj.get("guests", {}), guests_path).items():
        where = _join(guests_path, key)
        vmid = _parse_vmid(key, where)
        guests[vmid] = _parse_guest(vmid, value, where)
    return DesiredState(generation=generation, guests=guests)


def loads_desired(text: str | bytes, *, path: str = "") -> DesiredState:
    """Parse a desired-state JSON document (a file's content).

    Duplicate keys are an error (JSON parsers silently keep the last one, which would hide a
    conflicting entry), as are ``NaN``/``Infinity``.

    Raises:
        DesiredStateError: invalid JSON (with line and column) or an invalid document.
    """
    try:
        data = strictjson.loads(text)
    except strictjson.DuplicateMember as err:
        where = _join(path, strictjson.dotted((*err.path, err.key)))
        raise _fail(where, "duplicate key (each key may appear once)") from None
    except strictjson.JsonSyntaxError as err:
        raise _fail(path, f"invalid JSON: {err.msg} at line {err.lineno} column {err.colno}"
                    ) from None
    except strictjson.StrictJsonError as err:
        raise _fail(path, f"invalid JSON: {err}") from None
    return parse_desired(data, path=path)
