"""Fixtures the control-core tests share: a pinned client of the module's ``sim`` fixture and
a fresh journal + audit log (each test module defines its own ``sim`` scenario)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from felhom_agent.proxmox.client import ProxmoxClient
from felhom_agent.sim.pve import PveSimulator
from felhom_agent.state.audit import AuditLog
from felhom_agent.state.journal import Journal
from tests.reconcile.crash_child import open_state
from tests.support.pve import sim_client

LOG = logging.getLogger("test.reconcile")


@pytest.fixture
def client(sim: PveSimulator) -> Iterator[ProxmoxClient]:
    """A pinned client of the module's simulator."""
    with sim_client(sim) as c:
        yield c


@pytest.fixture
def state(tmp_path: Path) -> Iterator[tuple[Journal, AuditLog]]:
    """A journal and an audit log in a fresh state directory, closed after the test."""
    journal, audit = open_state(tmp_path / "state", LOG)
    yield journal, audit
    journal.close()
    audit.close()
