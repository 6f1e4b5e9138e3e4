"""The hub simulator's scenario: token, desired state, signed ops, poll interval, faults.

A scenario is a JSON object (documented in ``SCENARIO.md`` next to this module); parsing is
strict -- an unknown key or a wrong type is a :class:`ScenarioError` naming the key and the
value -- because a typo in a test scenario should fail loudly, not quietly test nothing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from felhom_agent.errors import AgentError
from felhom_agent.sim.hub.faults import HubFault

__all__ = ["HubScenario", "ScenarioError", "ScenarioOp"]

_KEYS = ("token", "host_ids", "poll_interval_s", "desired", "signed_ops", "tls", "faults")


class ScenarioError(AgentError, ValueError):
    """The scenario is unusable; names the key (``faults[1].kind``) and the bad value.

    Args:
        message: what is wrong.
        key: the key path concerned.
    """

    def __init__(self, message: str, *, key: str) -> None:
        super().__init__(message)
        self.key = key


def _bad(key: str, value: object, expected: str) -> ScenarioError:
    shown = json.dumps(value) if _jsonable(value) else repr(value)
    if len(shown) > 80:
        shown = shown[:80] + "..."
    return ScenarioError(f"scenario key {key!r}: {shown} is not {expected}", key=key)


def _jsonable(value: object) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


@attrs.frozen
class ScenarioOp:
    """A signed op the hub delivers: exact payload text and signature armor."""

    payload: str = attrs.field(repr=lambda s: s[:40])
    signature: str = attrs.field(repr=lambda s: s[:40])


@attrs.frozen
class HubScenario:
    """What the simulated hub serves.

    Args:
        token: the bearer token the hub accepts; None -> one is generated at start.
        host_ids: the host ids the hub knows (others get 404); None -> any.
        poll_interval_s: sent as-is in every envelope (out-of-range values test clamping);
            None -> the field is left out.
        desired: the desired state sent in every envelope (None -> ``null``).
        signed_ops: ops delivered on every poll until a report shows their outcome.
        tls: serve HTTPS with a fresh self-signed certificate (pin its fingerprint).
        faults: faults armed at start.
    """

    token: str | None = attrs.field(default=None, repr=False)
    host_ids: tuple[str, ...] | None = None
    poll_interval_s: float | None = None
    desired: Mapping[str, Any] | None = None
    signed_ops: tuple[ScenarioOp, ...] = ()
    tls: bool = False
    faults: tuple[HubFault, ...] = ()

    @classmethod
    def from_file(cls, path: Path) -> HubScenario:
        """Read and parse a scenario file.

        Raises:
            ScenarioError: unreadable, not JSON, or invalid; the message names the file.
        """
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise ScenarioError(f"{path}: cannot read scenario: {err}", key="(file)") from err
        try:
            data = json.loads(text)
        except ValueError as err:
            raise ScenarioError(f"{path}: scenario is not JSON: {err}", key="(file)") from err
        try:
            return cls.from_dict(data)
        except ScenarioError as err:
            raise ScenarioError(f"{path}: {err}", key=err.key) from err

    @classmethod
    def from_dict(cls, d: object) -> HubScenario:
        """Parse a scenario object.

        Raises:
            ScenarioError: an unknown key or a value of the wrong type.
        """
        if not isinstance(d, dict):
            raise _bad("(scenario)", d, "an object")
        for key in d:
            if key not in _KEYS:
                raise ScenarioError(
                    f"scenario key {key!r} is unknown (known: {', '.join(_KEYS)})", key=key
                )
        token = d.get("token")
        if token is not None and (not isinstance(token, str) or not token.strip()):
            raise ScenarioError("scenario key 'token' must be a non-empty string", key="token")
        host_ids = d.get("host_ids")
        if host_ids is not None:
            if not isinstance(host_ids, list) or not all(
                isinstance(h, str) and h for h in host_ids
            ):
                raise _bad("host_ids", host_ids, "a list of non-empty strings")
            host_ids = tuple(host_ids)
        interval = d.get("poll_interval_s")
        if interval is not None and (
            isinstance(interval, bool) or not isinstance(interval, int | float)
        ):
            raise _bad("poll_interval_s", interval, "a number or null")
        desired = d.get("desired")
        if desired is not None and not isinstance(desired, dict):
            raise _bad("desired", desired, "an object or null")
        tls = d.get("tls", False)
        if not isinstance(tls, bool):
            raise _bad("tls", tls, "true or false")
        return cls(
            token=token,
            host_ids=host_ids,
            poll_interval_s=None if interval is None else float(interval),
            desired=desired,
            signed_ops=_ops(d.get("signed_ops")),
            tls=tls,
            faults=_faults(d.get("faults")),
        )


def _ops(value: object) -> tuple[ScenarioOp, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise _bad("signed_ops", value, "a list")
    ops = []
    for i, item in enumerate(value):
        if not isinstance(item, dict) or set(item) != {"payload", "signature"}:
            raise _bad(f"signed_ops[{i}]", item, "an object with exactly payload and signature")
        for part in ("payload", "signature"):
            if not isinstance(item[part], str):
                raise _bad(f"signed_ops[{i}].{part}", item[part], "a string")
        ops.append(ScenarioOp(payload=item["payload"], signature=item["signature"]))
    return tuple(ops)


def _faults(value: object) -> tuple[HubFault, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise _bad("faults", value, "a list")
    faults = []
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise _bad(f"faults[{i}]", item, "an object")
        try:
            faults.append(HubFault.from_dict(item))
        except (TypeError, ValueError) as err:
            raise ScenarioError(f"scenario key 'faults[{i}]': {err}", key=f"faults[{i}]") from err
    return tuple(faults)
