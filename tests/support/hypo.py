"""Example budgets relative to the active hypothesis profile (see ``tests/conftest.py``)."""

from __future__ import annotations

from hypothesis import settings

__all__ = ["CI_EXAMPLES", "RANDOM_FACTOR", "examples"]

#: Examples per property under the ``ci`` profile.
CI_EXAMPLES = 100
#: How many times more the ``random`` (long-run) profile tries.
RANDOM_FACTOR = 10


def examples(n: int) -> int:
    """``n`` examples under the ``ci`` profile, proportionally more under a longer one.

    Call it in the decorator (``@settings(max_examples=examples(200))``): the profile is
    loaded by ``tests/conftest.py`` before any test module is imported.
    """
    return max(1, n * settings().max_examples // CI_EXAMPLES)
