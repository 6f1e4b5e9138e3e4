"""The agent-side control core: the per-guest serializer queue, desired state, plan, engine.

Every mutation of a guest (reconciler actions, signed operations, ``--selftest=task``) runs
through :mod:`felhom_agent.reconcile.queue`, the single choke point that keeps jobs for one
vmid strictly one at a time and in submit order (reference design §3).
"""
