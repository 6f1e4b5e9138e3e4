"""Embedded simulators used by the tests, the benchmarks and ``--demo``.

``felhom_agent.sim.pve`` is a simulated Proxmox VE node; ``python -m felhom_agent.sim``
runs one as a program (subcommand ``pve``; a ``hub`` subcommand is planned).
"""

from __future__ import annotations

__all__: list[str] = []
