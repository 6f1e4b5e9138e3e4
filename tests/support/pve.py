"""Pinned Proxmox clients for the tests: one builder, used for the simulator and for the
loopback server of the transport tests alike.

Every client here pins the server's certificate fingerprint (no CA file) and has short
timeouts; keyword arguments override any constructor argument of
:class:`~felhom_agent.proxmox.ProxmoxClient` (e.g. ``sleep=no_sleep`` so retries do not wait).
"""

from __future__ import annotations

from typing import Any

from felhom_agent.proxmox import ProxmoxClient
from felhom_agent.secret import Secret
from felhom_agent.sim.pve import PveSimulator
from tests.proxmox.loopback_tls import LoopbackPve

__all__ = ["LOOPBACK_SECRET", "LOOPBACK_TOKEN", "client_for", "loopback_client", "no_sleep",
           "sim_client"]

#: The token id and secret the loopback-server tests use (the server does not check them).
LOOPBACK_TOKEN = "agent@pve!host"
LOOPBACK_SECRET = "s3cr3t-value"


def no_sleep(_seconds: float) -> None:
    """A ``sleep`` that returns at once (retries and backoff without waiting)."""


def _defaults(url: str, fingerprint: str, node: str, token_id: str,
              secret: str) -> dict[str, Any]:
    return {
        "api_url": url, "node": node, "token_id": token_id, "token_secret": Secret(secret),
        "tls_fingerprint": fingerprint, "ca_file": None, "timeout_s": 5.0,
        "task_timeout_s": 10.0, "max_connections": 8,
    }


def client_for(url: str, fingerprint: str, node: str, token_id: str, secret: str,
               **kw: Any) -> ProxmoxClient:
    """A client pinned to ``fingerprint``: 5 s request timeout, 10 s task timeout, up to 8
    connections (as many as the engine tests' queue workers); ``kw`` overrides any of it."""
    return ProxmoxClient(**{**_defaults(url, fingerprint, node, token_id, secret), **kw})


def sim_client(sim: PveSimulator, **kw: Any) -> ProxmoxClient:
    """A pinned client for the PVE simulator ``sim`` with its full-privilege token."""
    base = _defaults(sim.url, sim.fingerprint, sim.node, sim.token_id, sim.token_secret)
    return ProxmoxClient(**{**base, **kw})


def loopback_client(server: LoopbackPve, *, secret: str = LOOPBACK_SECRET,
                    **kw: Any) -> ProxmoxClient:
    """A pinned client for a :class:`LoopbackPve` server (node ``pve``)."""
    base = _defaults(server.url, server.fingerprint, "pve", LOOPBACK_TOKEN, secret)
    return ProxmoxClient(**{**base, **kw})
