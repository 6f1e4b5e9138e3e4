"""Execution: the per-guest serializer queue, the executor, and the reconciler engine.

Every mutation of a guest (reconciler actions, signed operations, ``--selftest=task``) runs
through :mod:`felhom_agent.execution.queue`, the single choke point that keeps jobs for one
vmid strictly one at a time and in submit order (``docs/architecture.md``, "The queue").
"""
