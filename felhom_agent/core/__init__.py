"""The pure core: desired state, config normalisation, actual-state reading and the plan.

Nothing here mutates a guest. :func:`~felhom_agent.core.plan.plan` is a pure diff of
desired against actual state; :mod:`.actual` reads the actual state (one bulk listing plus
targeted reads); :mod:`.providers` is the seam desired state comes through. See
``docs/architecture.md`` for where this sits in the data path.
"""
