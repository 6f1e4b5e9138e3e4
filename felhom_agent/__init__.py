"""felhom-agent: the operator-tier host agent for one Proxmox VE node."""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.5.0"
