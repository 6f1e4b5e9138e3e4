"""The value core: the desired-state model and the config normalisers (pure, no I/O).

Everything above reads these: the kind registry compares config through
:mod:`.normalise`, the plan diffs :mod:`.desired` against what PVE reports. See
``docs/architecture.md`` ("Package map").
"""
