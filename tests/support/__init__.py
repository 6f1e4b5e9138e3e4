"""Helpers shared across the test packages, one module per concern.

* :mod:`tests.support.clock` -- the settable fake clock (time moves only when told or slept);
* :mod:`tests.support.cli` -- running the CLI in-process with captured output;
* :mod:`tests.support.pve` -- pinned Proxmox clients for the simulator and loopback servers;
* :mod:`tests.support.hypo` -- example budgets scaled by the active hypothesis profile.
"""
