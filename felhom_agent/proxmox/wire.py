"""Wire helpers shared by the client's call groups: path segments, form encoding, checks.

Parameters are sent form-encoded with booleans as ``1``/``0`` (PVE rejects ``true`` in form
bodies with a 400); ``None`` values are left out. Answers that are not the expected JSON shape
are a :class:`~felhom_agent.proxmox.errors.ServerError`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from felhom_agent.proxmox.errors import ParameterError, ServerError
from felhom_agent.vmids import VMID_RANGE, is_vmid

__all__ = ["ConfigValue", "as_dict", "as_list", "check_vmid", "encode", "form", "seg",
           "volume_seg"]

ConfigValue = str | int | float | bool


def seg(value: str | int) -> str:
    """Quote one path segment (UPIDs keep ``:@!`` readable; ``/`` never passes)."""
    return quote(str(value), safe=":@!-._~")


def volume_seg(volid: str) -> str:
    """Quote a volume id as one path segment (``:`` and ``/`` encoded, like the PVE GUI)."""
    return quote(volid, safe="")


def encode(value: ConfigValue) -> str:
    """A parameter value as PVE expects it in a form body."""
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def form(params: Mapping[str, ConfigValue | None]) -> dict[str, str]:
    """The non-None parameters, encoded."""
    return {k: encode(v) for k, v in params.items() if v is not None}


def check_vmid(vmid: int) -> int:
    """``vmid`` if it is a valid guest id, else a client-side ParameterError."""
    if not is_vmid(vmid):
        raise ParameterError(
            f"invalid vmid {vmid!r}", status=None, errors={"vmid": f"must be {VMID_RANGE}"}
        )
    return vmid


def as_list(data: Any, path: str) -> list[Mapping[str, Any]]:
    """The object items of a list answer."""
    if not isinstance(data, list):
        raise ServerError(f"expected a list, got {type(data).__name__}", status=200, path=path)
    return [item for item in data if isinstance(item, Mapping)]


def as_dict(data: Any, path: str) -> Mapping[str, Any]:
    """An object answer."""
    if not isinstance(data, Mapping):
        raise ServerError(f"expected an object, got {type(data).__name__}", status=200, path=path)
    return data
