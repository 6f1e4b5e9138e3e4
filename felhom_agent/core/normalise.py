"""One table of config-field normalisers, shared by the plan and by post-write verification.

Proxmox VE does not hand back what was written (``docs/pve-facts.md``, "Config round trip"): an LXC
``description`` reads back with a trailing ``"\\n"`` while QEMU trims trailing whitespace, booleans
come back as JSON ``0``/``1``, numbers may come back as strings (QEMU ``memory`` is a property
string since PVE 8.1), ``tags`` are lower-cased, sorted, de-duplicated and re-joined with ``;``,
absent keys mean the schema default, and ``digest`` changes on every write. If the reconciler
compared raw values, every one of those quirks would read as drift and it would rewrite the same
value forever. So every comparison goes through :data:`FIELDS`: each managed key maps a value (from
desired state *or* from ``GET .../config``) to one canonical form, and two values are "the same"
exactly when their canonical forms are equal.

Canonical values are ``int`` (integers and booleans as 0/1), ``float`` (non-integral numbers)
or ``str``; they are also what gets written back (they are valid PVE parameter values), so
writing a plan's params and re-reading the config gives an empty diff — the verification rule.

Deliberate approximations (documented because they hide a class of difference):

* ``tags`` are compared case-insensitively and order-insensitively. That is what PVE does with
  the default datacenter ``tag-style``; with a case-sensitive or ``ordering=config`` style a
  case-only or order-only change is not seen as drift (better than rewriting forever).
* ``description`` ignores trailing whitespace, which QEMU cannot store anyway.
* Keys not in the table fall back to :func:`_generic`: booleans and canonical decimal strings
  become numbers, other strings compare verbatim. Property strings PVE rewrites (``net0`` gains
  a MAC) therefore keep differing; such keys are destructive and are refused, never written.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Final

import attrs

from felhom_agent.errors import ReconcileError

__all__ = [
    "FIELDS",
    "IGNORED_KEYS",
    "ConfigValue",
    "Field",
    "NormValue",
    "NormaliseError",
    "actual_value",
    "config_diff",
    "managed_keys",
    "normalise_value",
    "split_for_write",
]

#: A config value as it arrives from JSON (desired state or ``GET .../config``).
ConfigValue = str | int | float | bool
#: A canonical value: what comparisons use and what a config write sends.
NormValue = int | float | str

#: Keys present in ``GET .../config`` that are never configuration: ``digest`` is the SHA-1 of
#: the whole file and changes on any write (it travels separately, for optimistic concurrency).
IGNORED_KEYS: Final = frozenset({"digest"})


class NormaliseError(ReconcileError, ValueError):
    """A value cannot be brought into canonical form for its key.

    Args:
        message: what is wrong and what is allowed.
        key: the config key concerned.
    """

    def __init__(self, message: str, *, key: str) -> None:
        super().__init__(message)
        self.key = key


class _Invalid(ValueError):
    """Internal: a normaliser rejected a value; :func:`normalise_value` adds the key."""


_INT_RE: Final = re.compile(r"[+-]?[0-9]+")
_CANON_INT_RE: Final = re.compile(r"-?(?:0|[1-9][0-9]*)")
_CANON_FLOAT_RE: Final = re.compile(r"-?(?:0|[1-9][0-9]*)\.[0-9]+")
_TAG_SPLIT_RE: Final = re.compile(r"[;,\s]+")
# PVE's tag format (pve-guest-common GuestHelpers), matched after lower-casing.
_TAG_RE: Final = re.compile(r"[a-z0-9_][a-z0-9_\-+.]*")


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _boolean(value: object) -> NormValue:
    """PVE booleans are 0/1 on the wire and in GET config; accept JSON true/false too."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int) and value in (0, 1):
        return value
    if isinstance(value, str) and value in ("0", "1"):
        return int(value)
    raise _Invalid(f"expected a boolean (true/false or 0/1), got {_show(value)}")


def _integer(value: object) -> NormValue:
    """Integers may come back as strings; ``"2048"`` and ``2048`` are the same value."""
    if isinstance(value, bool):
        raise _Invalid(f"expected an integer, got {_show(value)}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and _INT_RE.fullmatch(value):
        return int(value)
    raise _Invalid(f"expected an integer, got {_show(value)}")


def _number(value: object) -> NormValue:
    """``number`` keys (``cpulimit``) may come back as strings; integral values become int."""
    if isinstance(value, bool):
        raise _Invalid(f"expected a number, got {_show(value)}")
    number: float
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        number = value
    elif isinstance(value, str) and value == value.strip():
        try:
            number = float(value)
        except ValueError:
            raise _Invalid(f"expected a number, got {_show(value)}") from None
    else:
        raise _Invalid(f"expected a number, got {_show(value)}")
    if not math.isfinite(number):
        raise _Invalid(f"expected a finite number, got {_show(value)}")
    return int(number) if number.is_integer() else number


def _memory(value: object) -> NormValue:
    """QEMU ``memory`` is a property string ``[current=]<MiB>`` since PVE 8.1; LXC's an int."""
    if isinstance(value, str) and value.startswith("current="):
        return _integer(value.removeprefix("current="))
    return _integer(value)


def _text(value: object) -> NormValue:
    """Plain strings compare verbatim."""
    if not isinstance(value, str):
        raise _Invalid(f"expected a string, got {_show(value)}")
    return value


def _description(value: object) -> NormValue:
    """Trailing whitespace is not round-tripped: LXC adds ``"\\n"``, QEMU strips all of it."""
    if not isinstance(value, str):
        raise _Invalid(f"expected a string, got {_show(value)}")
    return value.rstrip()


def _tags(value: object) -> NormValue:
    """PVE splits on ``;``/``,``/space, lower-cases, sorts, de-duplicates and joins with ``;``."""
    if not isinstance(value, str):
        raise _Invalid(f"expected a string of tags, got {_show(value)}")
    tags = {t for t in _TAG_SPLIT_RE.split(value.lower()) if t}
    for tag in sorted(tags):
        if not _TAG_RE.fullmatch(tag):
            raise _Invalid(f"invalid tag {tag!r} (allowed: letters, digits and _ - + .)")
    return ";".join(sorted(tags))


_STARTUP_KEYS: Final = ("order", "up", "down")


_STARTUP_ITEM_RE: Final = re.compile(r"(?:(order|up|down)=)?([0-9]+)")


def _startup(value: object) -> NormValue:
    """``[[order=]N][,up=N][,down=N]``: a bare number is the order; rendered in a fixed order.

    Items are matched the way PVE's ``pve-startup-order`` verifier does (no inner spaces,
    empty items skipped); a key given twice is rejected rather than "last one wins".
    """
    if not isinstance(value, str):
        raise _Invalid(f"expected a startup string like 'order=1,up=30', got {_show(value)}")
    parts: dict[str, int] = {}
    for item in value.split(","):
        if not item.strip():
            continue
        match = _STARTUP_ITEM_RE.fullmatch(item)
        if match is None or (match.group(1) is None and "=" in item):
            raise _Invalid(f"invalid startup item {item!r} (allowed: order=N, up=N, down=N)")
        key = match.group(1) or "order"
        if key in parts:
            raise _Invalid(f"startup key {key!r} given twice")
        parts[key] = int(match.group(2))
    return ",".join(f"{k}={parts[k]}" for k in _STARTUP_KEYS if k in parts)


def _generic(value: object) -> NormValue:
    """Fallback for keys outside the table: numbers as strings are numbers, else verbatim."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _Invalid(f"expected a finite number, got {_show(value)}")
        return int(value) if value.is_integer() else value
    if isinstance(value, str):
        if _CANON_INT_RE.fullmatch(value):
            return int(value)
        if _CANON_FLOAT_RE.fullmatch(value):
            return _number(value)
        return value
    raise _Invalid(f"expected a string, number or boolean, got {_show(value)}")


@attrs.frozen
class Field:
    """How one config key is compared.

    Attributes:
        normalise: maps a raw value to its canonical form; raises on a value PVE would reject.
        default: the canonical value an *absent* key stands for (PVE does not materialise
            defaults: ``onboot`` absent means 0, an empty ``description`` is stored as nothing);
            ``None`` when absence is not equal to any value.
    """

    normalise: Callable[[object], NormValue]
    default: NormValue | None = None


_BOOL_OFF = Field(_boolean, default=0)

#: THE table. Every managed key and its normaliser; keys not listed use :func:`_generic`.
FIELDS: Final[Mapping[str, Field]] = MappingProxyType(
    {
        # benign keys (classify.BENIGN_CONFIG_KEYS)
        "description": Field(_description, default=""),
        "tags": Field(_tags, default=""),
        "onboot": _BOOL_OFF,
        "startup": Field(_startup, default=""),
        # booleans that default to off
        "protection": _BOOL_OFF,
        "template": _BOOL_OFF,
        "acpi": Field(_boolean, default=1),
        "kvm": Field(_boolean, default=1),
        "tablet": Field(_boolean, default=1),
        "numa": _BOOL_OFF,
        "localtime": _BOOL_OFF,
        "reboot": Field(_boolean, default=1),
        "freeze": _BOOL_OFF,
        "console": Field(_boolean, default=1),
        "unprivileged": _BOOL_OFF,
        "debug": _BOOL_OFF,
        # integers (may arrive as strings)
        "memory": Field(_memory),
        "swap": Field(_integer),
        "balloon": Field(_integer),
        "cores": Field(_integer),
        "sockets": Field(_integer),
        "vcpus": Field(_integer),
        "cpuunits": Field(_integer),
        "shares": Field(_integer),
        "tty": Field(_integer),
        # numbers
        "cpulimit": Field(_number),
        # strings that must stay strings even when they look numeric
        "name": Field(_text),
        "hostname": Field(_text),
    }
)

_GENERIC = Field(_generic)


def _field(key: str) -> Field:
    return FIELDS.get(key, _GENERIC)


def normalise_value(key: str, value: object) -> NormValue:
    """Return the canonical form of ``value`` for config key ``key``.

    Raises:
        NormaliseError: the value cannot be a valid value of that key (the message says why).
    """
    try:
        return _field(key).normalise(value)
    except _Invalid as err:
        raise NormaliseError(f"{key}: {err}", key=key) from None


def actual_value(key: str, config: Mapping[str, object]) -> NormValue | None:
    """The canonical value of ``key`` in a config read from PVE, defaults filled in.

    Returns ``None`` when the key is absent and has no default. A present value that does
    not normalise (PVE returned something unexpected) also returns ``None``: it is then
    reported as drift and the write replaces it, rather than crashing the plan.
    """
    if key in IGNORED_KEYS:
        return None
    if key not in config:
        return _field(key).default
    try:
        return normalise_value(key, config[key])
    except NormaliseError:
        return None


def config_diff(
    desired: Mapping[str, object], actual: Mapping[str, object]
) -> dict[str, NormValue]:
    """Keys of ``desired`` whose canonical value differs from ``actual``, with desired values.

    The same function answers "what must the plan write" (before) and "did the write stick"
    (after: an empty result means verified). Keys in ``actual`` that ``desired`` does not name
    are not managed and never appear.

    Raises:
        NormaliseError: a desired value is invalid for its key.
    """
    out: dict[str, NormValue] = {}
    for key in sorted(desired):
        if key in IGNORED_KEYS:
            continue
        want = normalise_value(key, desired[key])
        if actual_value(key, actual) != want:
            out[key] = want
    return out


def split_for_write(
    params: Mapping[str, NormValue],
) -> tuple[dict[str, NormValue], tuple[str, ...]]:
    """Split canonical params into values to set and keys to ``delete=`` on the config write.

    An empty string is the canonical "unset" of a string key (an empty ``description`` is
    stored as nothing). An empty value is not a meaningful write for every key (``startup``
    has a format to match), so those keys are deleted instead; that reads back as absent,
    which is the same canonical value.
    """
    to_set = {k: v for k, v in sorted(params.items()) if v != ""}
    to_delete = tuple(sorted(k for k, v in params.items() if v == ""))
    return to_set, to_delete


def managed_keys() -> Iterable[str]:
    """The keys with a dedicated normaliser (the "managed fields" of the round-trip tests)."""
    return tuple(FIELDS)
