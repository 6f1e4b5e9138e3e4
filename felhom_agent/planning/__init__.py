"""Planning: reading actual state, the pure plan, and the desired-state providers.

:func:`~felhom_agent.planning.plan.plan` is a pure diff of desired against actual state;
:mod:`.actual` reads the actual state (one bulk listing plus targeted reads); :mod:`.providers`
is the seam desired state comes through. See ``docs/architecture.md`` ("Data path").
"""
