"""The kind registry: every operation kind the agent can run, defined once.

See ``docs/architecture.md`` ("Kinds"): the signed-op allow-list, the classifier, the
reversibility gate, the executor and crash recovery all read this one registry.
"""
