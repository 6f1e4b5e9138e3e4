"""Desired state: the attrs model and its strict parser.

See ``docs/architecture.md`` ("Desired state and the plan").

The desired state is what the hub (or an operator's file) says each guest should look like::

    {"generation": 7,
     "guests": {"101": {"type": "lxc", "state": "running",
                        "config": {"description": "web frontend", "onboot": 1},
                        "backup": {"storage": "pbs1", "every_h": 24}}}}

Parsing is strict because a typo must not silently do nothing (or something else): unknown
fields, duplicate JSON keys, non-canonical vmids (``"0101"``), wrong types and config values
that PVE would reject are all errors, and every error names the path of the offending value
(``guests.101.state``) so an operator can find it. ``state`` may be omitted (or ``null``): the
run state of that guest is then not managed. Config values are kept as given; comparisons go
through :mod:`felhom_agent.core.normalise`, which also validates them here.

``guestapi: true`` lets the guest use the per-guest local API (``docs/architecture.md``, "The
per-guest local API"); absent means false.

``backup`` is the guest's backup policy (:mod:`felhom_agent.core.backup_policy`). Its syntax
and types are checked here like everything else (one bad policy rejects the document, as any
other typo does); whether its storage exists on the host and holds backups depends on the host
and is decided by the planner (:mod:`felhom_agent.backup.policy`), per guest.

``provision`` says where a guest that does not exist yet comes from
(:mod:`felhom_agent.core.provision`): ``{"from": {"template": VMID} | {"archive": VOLID},
"name", "storage", "pool"?}``. Syntax and types are checked here; the local limits (vmid
range, allowed sources, the guest count) are the planner's, per guest.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final, Literal, cast

import attrs

from felhom_agent import strictjson
from felhom_agent.core.backup_policy import (
    BACKUP_MODES,
    KEEP_COUNT_KEYS,
    KEEP_KEYS,
    POLICY_FIELDS,
    BackupMode,
    BackupPolicy,
    KeepOptions,
    Window,
    WindowError,
    parse_window,
)
from felhom_agent.core.normalise import (
    IGNORED_KEYS,
    ConfigValue,
    NormaliseError,
    normalise_value,
)
from felhom_agent.core.provision import (
    ARCHIVE_SOURCE,
    NAME_RULE,
    NAME_TEXT,
    POOL_TEXT,
    PROVISION_FIELDS,
    SOURCE_KEYS,
    TEMPLATE_SOURCE,
    VOLID_TEXT,
    ProvisionSpec,
)
from felhom_agent.errors import ReconcileError
from felhom_agent.storageids import STORAGE_ID_RULE, is_storage_id
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
#: The member names of a desired guest; two of them are also kind names, so they are named.
BACKUP_FIELD: Final = "backup"
PROVISION_FIELD: Final = "provision"
_GUEST_FIELDS: Final = ("type", "state", "config", BACKUP_FIELD, "guestapi", PROVISION_FIELD)
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
        backup: the guest's backup policy, or ``None`` (the agent makes no backups of it).
        guestapi: the guest may use the per-guest local API (when ``guestapi.enabled``).
        provision: where the guest comes from when it does not exist, or ``None`` (the agent
            never creates it).
    """

    vmid: int
    type: GuestType
    state: RunState | None = None
    config: Mapping[str, ConfigValue] = attrs.field(
        factory=dict, converter=_frozen_config
    )
    backup: BackupPolicy | None = None
    guestapi: bool = False
    provision: ProvisionSpec | None = None

    def to_json(self) -> dict[str, object]:
        """The guest's JSON form (without the vmid, which is its key)."""
        out: dict[str, object] = {"type": self.type}
        if self.state is not None:
            out["state"] = self.state
        if self.config:
            out["config"] = dict(self.config)
        if self.backup is not None:
            out[BACKUP_FIELD] = self.backup.to_json()
        if self.guestapi:
            out["guestapi"] = True
        if self.provision is not None:
            out[PROVISION_FIELD] = self.provision.to_json()
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


def _parse_storage_id(value: object, path: str) -> str:
    if not is_storage_id(value):
        raise _fail(path, f"must be {STORAGE_ID_RULE}, got {value!r}")
    return cast(str, value)


def _parse_keep(value: object, path: str) -> KeepOptions:
    obj = _object(value, path)
    if not obj:
        raise _fail(path, "must name at least one keep option (allowed: "
                    f"{', '.join(KEEP_KEYS)}); leave keep out and the agent never prunes")
    for key in obj:
        if key not in KEEP_KEYS:
            hint = ""
            if key.startswith("keep-") and key.removeprefix("keep-") in KEEP_KEYS:
                hint = f"; write {key.removeprefix('keep-')!r}, without the keep- prefix"
            raise _fail(_join(path, key),
                        f"unknown keep option (allowed: {', '.join(KEEP_KEYS)}){hint}")
    counts: dict[str, int] = {}
    for key in KEEP_COUNT_KEYS:
        if key not in obj:
            continue
        item = obj[key]
        if isinstance(item, bool) or not isinstance(item, int) or item < 0:
            raise _fail(_join(path, key), f"must be an integer >= 0, got {item!r}")
        counts[key] = item
    keep_all: bool | None = None
    if "all" in obj:
        item = obj["all"]
        if not isinstance(item, bool):
            raise _fail(_join(path, "all"), f"must be true or false, got {item!r}")
        keep_all = item
    if keep_all and counts:
        raise _fail(_join(path, "all"), "true keeps every backup and cannot be combined with "
                    f"{', '.join(counts)} (PVE refuses that too)")
    return KeepOptions(all=keep_all, **counts)


def _parse_backup(value: object, path: str) -> BackupPolicy:
    obj = _object(value, path)
    _check_fields(obj, POLICY_FIELDS, path)
    if "storage" not in obj:
        raise _fail(_join(path, "storage"), "required (the PVE storage the backups go to)")
    storage = _parse_storage_id(obj["storage"], _join(path, "storage"))
    every_path = _join(path, "every_h")
    if "every_h" not in obj:
        raise _fail(every_path, "required (hours between backups, a number > 0)")
    every_h = obj["every_h"]
    if (isinstance(every_h, bool) or not isinstance(every_h, int | float)
            or not math.isfinite(every_h) or every_h <= 0):
        raise _fail(every_path, f"must be a number > 0 (hours between backups), got {every_h!r}")
    window: Window | None = None
    raw_window = obj.get("window")
    if raw_window is not None:
        window_path = _join(path, "window")
        if not isinstance(raw_window, str):
            raise _fail(window_path, f"must be a string HH:MM-HH:MM or null, got "
                        f"{_type_name(raw_window)}")
        try:
            window = parse_window(raw_window)
        except WindowError as err:
            raise _fail(window_path, str(err)) from None
    mode = obj.get("mode")
    if mode is None:
        mode = BackupMode.SNAPSHOT.value
    elif mode not in BACKUP_MODES:
        raise _fail(_join(path, "mode"),
                    f"must be {', '.join(BACKUP_MODES[:-1])} or {BACKUP_MODES[-1]} "
                    f"(default snapshot), got {mode!r}")
    raw_keep = obj.get("keep")
    keep = None if raw_keep is None else _parse_keep(raw_keep, _join(path, "keep"))
    return BackupPolicy(storage=storage, every_h=every_h, window=window,
                        mode=BackupMode(mode), keep=keep)


def _parse_source(value: object, path: str) -> tuple[int | None, str | None]:
    obj = _object(value, path)
    _check_fields(obj, SOURCE_KEYS, path)
    if len(obj) != 1:
        raise _fail(path, 'must name exactly one source: {"template": VMID} or '
                    '{"archive": VOLID}')
    if TEMPLATE_SOURCE in obj:
        vmid = obj[TEMPLATE_SOURCE]
        if isinstance(vmid, bool) or not isinstance(vmid, int) or not is_vmid(vmid):
            raise _fail(_join(path, TEMPLATE_SOURCE), f"must be a vmid {VMID_MIN}..{VMID_MAX}, "
                        f"got {vmid!r}")
        return vmid, None
    volid = obj[ARCHIVE_SOURCE]
    if not isinstance(volid, str) or not VOLID_TEXT.fullmatch(volid):
        raise _fail(_join(path, ARCHIVE_SOURCE), "must be a backup volume id "
                    f"STORAGE:backup/..., got {volid!r}")
    return None, volid


def _parse_provision(value: object, path: str) -> ProvisionSpec:
    obj = _object(value, path)
    _check_fields(obj, PROVISION_FIELDS, path)
    for field in ("from", "name", "storage"):
        if field not in obj:
            raise _fail(_join(path, field), "required")
    template, archive = _parse_source(obj["from"], _join(path, "from"))
    name = obj["name"]
    if not isinstance(name, str) or not NAME_TEXT.fullmatch(name):
        raise _fail(_join(path, "name"), f"must be {NAME_RULE}, got {name!r}")
    storage = _parse_storage_id(obj["storage"], _join(path, "storage"))
    pool = obj.get("pool")
    if pool is not None and (not isinstance(pool, str) or not POOL_TEXT.fullmatch(pool)):
        raise _fail(_join(path, "pool"), "must be a PVE pool id (letters, digits, '-', '_'; "
                    f"at most 64) or null, got {pool!r}")
    return ProvisionSpec(name=name, storage=storage, template=template, archive=archive,
                         pool=pool)


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
    raw_backup = obj.get(BACKUP_FIELD)
    backup = (None if raw_backup is None
              else _parse_backup(raw_backup, _join(path, BACKUP_FIELD)))
    raw_provision = obj.get(PROVISION_FIELD)
    provision = (None if raw_provision is None
                 else _parse_provision(raw_provision, _join(path, PROVISION_FIELD)))
    guestapi = obj.get("guestapi", False)
    if not isinstance(guestapi, bool):
        raise _fail(_join(path, "guestapi"), f"must be true or false, got {guestapi!r}")
    return GuestDesired(
        vmid=vmid,
        type=gtype,
        state=state,
        config=config,
        backup=backup,
        guestapi=guestapi,
        provision=provision,
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
