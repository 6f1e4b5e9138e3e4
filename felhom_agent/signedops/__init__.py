"""Signed operations after verification: the reversibility gate and the step runner.

The consumer (:mod:`.consumer`) takes delivered ops from the hub loop, verifies them
(:mod:`felhom_agent.authz`), asks the gate (:mod:`.gate`) what must run first, and submits the
steps to the per-guest queue (:mod:`.steps`). See ``docs/architecture.md``.
"""
