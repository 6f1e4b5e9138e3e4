"""Durable state: the op journal, the audit log, and the pure crash-recovery decision.

See ``docs/architecture.md`` ("Durable state") for the write-ahead rules.
"""
