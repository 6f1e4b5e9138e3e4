"""Fixtures for the PVE simulator tests: a running simulator and a pinned client."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from felhom_agent.sim.pve import PveSimulator
from tests.sim.helpers import Api, make_scenario


@pytest.fixture
def sim() -> Iterator[PveSimulator]:
    """A simulator on the test scenario; asserts no handler bug and no thread outlives it."""
    before = set(threading.enumerate())
    with PveSimulator(make_scenario()) as s:
        yield s
        assert s.internal_errors == [], s.internal_errors[0]
    leaked = [t for t in threading.enumerate() if t not in before and t.is_alive()]
    assert not leaked, f"threads leaked: {leaked}"


@pytest.fixture
def api(sim: PveSimulator) -> Api:
    """A pinned client with the full-privilege token."""
    return Api(sim)
