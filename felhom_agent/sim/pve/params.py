"""Declared parameters and PVE-style validation (``PVE::JSONSchema::validate``).

Each endpoint declares the parameters it accepts (a subset of the official schema, checked
by the conformance test). Validation mirrors PVE's texts so a client's 400 handling is
exercised for real: unknown names, missing required ones, boolean/integer/number type
checks (a form-encoded boolean must be exactly ``0`` or ``1``; JSON ``true``/``false`` are
accepted), enums, bounds, lengths, patterns and ``requires`` (``unique`` only with
``restore``). Indexed names such as ``net[n]`` match ``net0`` .. ``net31``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import attrs

from felhom_agent.sim.pve.apierror import param_error

__all__ = ["Param", "Value", "validate"]

#: A decoded parameter value: form bodies give ``str``; JSON bodies may give the others.
Value = str | int | float | bool

_INT_RE = re.compile(r"^[+-]?\d+$")
_NUM_RE = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


@attrs.frozen
class Param:
    """One accepted parameter: name (``net[n]`` for indexed), JSON-schema type and limits."""

    name: str
    type: str = "string"
    optional: bool = True
    enum: tuple[str, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    max_length: int | None = None
    pattern: str | None = None
    #: message used when ``pattern`` does not match (PVE's format errors are specific);
    #: ``{value}`` is replaced by the offending value.
    pattern_error: str = "value does not match the regex pattern"
    #: the schema's ``requires``: this parameter is only valid together with that one.
    requires: str | None = None

    def matches(self, key: str) -> bool:
        """Whether ``key`` is this parameter (indexed names accept any index 0..255)."""
        if self.name.endswith("[n]"):
            stem = self.name[:-3]
            rest = key[len(stem):]
            return key.startswith(stem) and rest.isdigit() and int(rest) < 256
        return key == self.name


def _check(param: Param, value: Value) -> tuple[Value, str | None]:
    """Coerce ``value`` to the declared type; return (value, error text or None)."""
    if param.type == "boolean":
        if isinstance(value, bool):
            return int(value), None
        if isinstance(value, int) and value in (0, 1):
            return value, None
        if isinstance(value, str) and value in ("0", "1"):
            return int(value), None
        return value, f"type check ('boolean') failed - got '{value}'"
    if param.type == "integer":
        if isinstance(value, (bool, float)):
            return value, f"type check ('integer') failed - got '{value}'"
        if isinstance(value, str):
            if not _INT_RE.match(value):
                return value, f"type check ('integer') failed - got '{value}'"
            value = int(value)
        return _bounds(param, value)
    if param.type == "number":
        if isinstance(value, bool) or (isinstance(value, str) and not _NUM_RE.match(value)):
            return value, f"type check ('number') failed - got '{value}'"
        # PVE's check_type returns the original string for numbers; keep it a string.
        text = value if isinstance(value, str) else repr(value)
        checked, err = _bounds(param, float(text))
        return (text, err) if err is None else (checked, err)
    # string
    if isinstance(value, bool):
        value = int(value)
    text = value if isinstance(value, str) else str(value)
    if param.max_length is not None and len(text) > param.max_length:
        return text, f"value may only be {param.max_length} characters long"
    if param.enum is not None and text not in param.enum:
        allowed = ", ".join(param.enum)
        return text, f"value '{text}' does not have a value in the enumeration '{allowed}'"
    if param.pattern is not None and not re.fullmatch(param.pattern, text):
        return text, param.pattern_error.replace("{value}", text)
    return text, None


def _bounds(param: Param, value: float) -> tuple[Value, str | None]:
    if param.minimum is not None and value < param.minimum:
        return value, f"value must have a minimum value of {_fmt(param.minimum)}"
    if param.maximum is not None and value > param.maximum:
        return value, f"value must have a maximum value of {_fmt(param.maximum)}"
    return value, None


def _fmt(n: float) -> str:
    return str(int(n)) if float(n).is_integer() else str(n)


def validate(declared: Sequence[Param], given: Mapping[str, Value]) -> dict[str, Value]:
    """Validate ``given`` against ``declared``; return coerced values or raise a 400.

    Raises:
        ApiError: 400 ``Parameter verification failed.`` with every offending parameter.
    """
    errors: dict[str, str] = {}
    out: dict[str, Value] = {}
    for key, value in given.items():
        param = next((p for p in declared if p.matches(key)), None)
        if param is None:
            errors[key] = (
                "property is not defined in schema and the schema does not allow "
                "additional properties"
            )
            continue
        coerced, err = _check(param, value)
        if err is not None:
            errors[key] = err
        else:
            out[key] = coerced
    for param in declared:
        if not param.optional and param.name not in given:
            errors[param.name] = "property is missing and it is not optional"
        if param.requires is not None and param.name in given and param.requires not in given:
            errors[param.requires] = f"missing property - '{param.name}' requires this property"
    if errors:
        raise param_error(errors)
    return out
