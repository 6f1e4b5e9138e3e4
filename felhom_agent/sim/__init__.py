"""Embedded simulators used by the tests, the benchmarks and ``--demo``.

``felhom_agent.sim.pve`` is a simulated Proxmox VE node, ``felhom_agent.sim.hub`` a simulated
hub; ``python -m felhom_agent.sim {pve,hub} ...`` runs one as a program.
"""

from __future__ import annotations

__all__: list[str] = []
