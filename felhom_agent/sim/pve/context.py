"""What a handler gets: the node runtime, the caller, validated parameters, and check helpers.

Permissions are written in the schema's own notation (``{"check": ["perm", "/vms/{vmid}",
["VM.Audit"]]}``, ``["perm", path, privs, "any", 1]``, ``["or", ...]``, ``{"user": "all"}``)
and evaluated here, so the conformance test can compare the simulator's declaration with the
official schema literally. A failed ``perm`` check names the path and the missing privilege
(``any`` checks join the privileges with ``|``); a failed ``or`` check is the bare
``Permission check failed``, as in ``PVE::RPCEnvironment``; ``and`` fails with its first failing
member. Path templates take the request's parameters (``/vms/{newid}``, ``/pool/{pool}``), and a
``perm`` check with ``require_param`` fails when that parameter was not sent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from felhom_agent.sim.pve.apierror import ApiError, perm_error, server_error
from felhom_agent.sim.pve.params import Value
from felhom_agent.sim.pve.privileges import Principal
from felhom_agent.sim.pve.state import Guest

if TYPE_CHECKING:
    from felhom_agent.sim.pve.runtime import NodeRuntime

__all__ = ["Ctx", "Result", "check_permission"]


@attrs.frozen
class Result:
    """Handler data plus an optional ``total`` sibling key (task list, task log)."""

    data: Any
    total: int | None = None


def _format_path(template: str, args: Mapping[str, str]) -> str:
    out = template
    for key, value in args.items():
        out = out.replace("{" + key + "}", value)
    return out


def _eval(principal: Principal, check: Sequence[Any],
          args: Mapping[str, str]) -> ApiError | None:
    op = check[0]
    if op == "perm":
        path = _format_path(check[1], args)
        privs: list[str] = list(check[2])
        options = dict(zip(check[3::2], check[4::2], strict=True))
        anyof = bool(options.get("any"))
        required = options.get("require_param")
        if required is not None and required not in args:
            return perm_error()
        have = principal.privileges_on(path)
        if anyof:
            return None if have.intersection(privs) else perm_error(path, "|".join(privs))
        for priv in privs:
            if priv not in have:
                return perm_error(path, priv)
        return None
    if op == "or":
        for sub in check[1:]:
            if _eval(principal, sub, args) is None:
                return None
        return perm_error()
    if op == "and":
        for sub in check[1:]:
            err = _eval(principal, sub, args)
            if err is not None:
                return err
        return None
    raise AssertionError(f"unknown permission op {op!r}")


def check_permission(principal: Principal, perm: Mapping[str, Any],
                     args: Mapping[str, str],
                     params: Mapping[str, Value] | None = None) -> None:
    """Raise the 403 PVE would give if ``principal`` fails ``perm``.

    ``args`` are the path's parameters; ``params`` the request's other parameters (path
    templates may name them; the path's win).
    """
    check = perm.get("check")
    if check is None:
        return
    merged = {k: str(v) for k, v in (params or {}).items()}
    merged.update(args)
    err = _eval(principal, check, merged)
    if err is not None:
        raise err


@attrs.frozen
class Ctx:
    """One request as a handler sees it."""

    rt: NodeRuntime
    principal: Principal
    params: Mapping[str, Value]
    args: Mapping[str, str]

    def require(self, path: str, priv: str) -> None:
        """Raise 403 naming ``path`` and ``priv`` unless the caller has it."""
        if not self.principal.has(path, priv):
            raise perm_error(path, priv)

    def has(self, path: str, priv: str) -> bool:
        """Whether the caller has ``priv`` on ``path``."""
        return self.principal.has(path, priv)

    def int_param(self, name: str, default: int | None = None) -> int | None:
        """An integer/boolean parameter (already validated and coerced)."""
        value = self.params.get(name, default)
        return None if value is None else int(value)

    def str_param(self, name: str, default: str | None = None) -> str | None:
        """A string parameter."""
        value = self.params.get(name, default)
        return None if value is None else str(value)

    @property
    def vmid(self) -> int:
        """The ``{vmid}`` of the path."""
        return int(self.params["vmid"])

    def guest(self, gtype: str) -> Guest:
        """The guest ``{vmid}`` of type ``gtype`` or PVE's 500 ``... does not exist``.

        The caller must hold the state condition.
        """
        guest = self.rt.state.guests.get(self.vmid)
        if guest is None or guest.type != gtype:
            sub = "qemu-server" if gtype == "qemu" else "lxc"
            raise server_error(
                f"Configuration file 'nodes/{self.rt.node}/{sub}/{self.vmid}.conf' does not exist"
            )
        return guest
