"""Fixtures for the hub tests: a real hub simulator on 127.0.0.1 and a client for it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from felhom_agent.hub.client import HubClient
from felhom_agent.hub.report import GuestEntry, HostReport, NodeFacts
from felhom_agent.secret import Secret
from felhom_agent.sim.hub import HubScenario, HubSimulator

TOKEN = "hub-token-Zq8xV1rT0pK4mN7sW2cY"
HOST_ID = "pve1"


def sample_report() -> HostReport:
    """A small but complete report."""
    return HostReport(
        host_id=HOST_ID,
        agent_version="0.1.0",
        collected_at="2026-11-26T10:00:00Z",
        node=NodeFacts(name="pve1", pve_version="9.2.2", uptime_s=10, cpu=0.25,
                       mem_used=1, mem_total=2),
        guests=(GuestEntry(vmid=101, type="lxc", name="web", status="running"),),
    )


@pytest.fixture
def hub() -> Iterator[HubSimulator]:
    """A plain-HTTP hub simulator with a known token and desired state."""
    scenario = HubScenario.from_dict(
        {"token": TOKEN, "host_ids": [HOST_ID], "poll_interval_s": 7,
         "desired": {"generation": 3, "guests": {}}}
    )
    with HubSimulator(scenario) as sim:
        yield sim


@pytest.fixture
def tls_hub() -> Iterator[HubSimulator]:
    """An HTTPS hub simulator with a fresh self-signed certificate."""
    scenario = HubScenario.from_dict({"token": TOKEN, "tls": True, "poll_interval_s": 7})
    with HubSimulator(scenario) as sim:
        yield sim


def make_client(hub: HubSimulator, *, token: str = TOKEN, timeout_s: float = 5.0) -> HubClient:
    """A client for ``hub`` (pinned when the hub serves TLS)."""
    return HubClient(
        url=hub.url,
        host_id=HOST_ID,
        token=Secret(token),
        tls_fingerprint=hub.fingerprint,
        timeout_s=timeout_s,
    )
