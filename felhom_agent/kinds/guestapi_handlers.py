"""The handlers of the per-guest API's kind ``guestapi.enable`` (a VM's serial socket).

Each function is referenced by the kind's entry in :mod:`felhom_agent.kinds.registry`
(``docs/architecture.md``, "Kinds" and "The per-guest local API"):

* **guestapi.enable** (signed, VMs only): writes ``serial1: socket`` to the VM's config,
  which makes PVE connect the VM's second serial port to ``<serial_dir>/<vmid>.serial1`` at
  its next start; the agent talks to that socket. It is a hardware change, so it is
  destructive and made reversible by a safety snapshot first, like any non-benign config
  write. A ``serial1`` that is already something else (a real device) is never overwritten.
  Containers need no config change: their socket is placed at every start.

A guest restarting itself (``POST /1.0/restart``) needs no kind of its own: it is a
``shutdown`` (forced after its timeout) followed by a ``start`` in the guest's lane.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from felhom_agent.kinds.model import (
    GateRefused,
    GuestFacts,
    JobSpec,
    Observed,
    Preflight,
    Prepared,
    Settings,
)
from felhom_agent.proxmox.client import ProxmoxClient
from felhom_agent.proxmox.models import GuestType
from felhom_agent.proxmox.tasks import Dispatch

__all__ = ["SERIAL_KEY", "SERIAL_VALUE", "enable_serial", "prepare_enable",
           "serial_preflight", "serial_socket_set"]

SERIAL_KEY: Final = "serial1"
SERIAL_VALUE: Final = "socket"


def prepare_enable(op_id: str, params: Mapping[str, Any], guest: GuestFacts) -> Prepared:
    """Only a VM gets a serial socket; a container's API needs no config change."""
    if guest.type is not GuestType.QEMU:
        raise GateRefused(f"guestapi.enable is for VMs; container {guest.vmid} gets its socket "
                          "placed at each start (set \"guestapi\": true in its desired state)")
    return Prepared(params)


def serial_preflight(c: ProxmoxClient, job: JobSpec, obs: Observed,
                     settings: Settings) -> Preflight:
    """``serial1`` in use for something else is refused, never overwritten."""
    current = None if obs.config is None else obs.config.values.get(SERIAL_KEY)
    if current is not None and str(current) != SERIAL_VALUE:
        return Preflight(refused=f"{SERIAL_KEY} of VM {job.vmid} is {str(current)[:60]!r}; the "
                         f"guest API needs {SERIAL_KEY}: {SERIAL_VALUE} (free it with a signed "
                         "guest.set_config first)")
    return Preflight()


def enable_serial(c: ProxmoxClient, job: JobSpec, obs: Observed) -> Dispatch:
    """Write ``serial1: socket`` with the digest just read (a ``qmconfig`` task)."""
    digest = obs.config.digest if obs.config is not None else None
    return c.set_guest_config(job.vmid, job.guest_type, {SERIAL_KEY: SERIAL_VALUE},
                              digest=digest or None)


def serial_socket_set(job: JobSpec, obs: Observed) -> bool:
    """``guestapi.enable`` is done when the config says ``serial1: socket``."""
    return obs.config is not None and str(obs.config.values.get(SERIAL_KEY)) == SERIAL_VALUE
