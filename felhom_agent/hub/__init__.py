"""The hub side of the agent: HostReport, hub client, envelope parsing and the poll loop."""

from __future__ import annotations

from felhom_agent.hub.client import HubClient
from felhom_agent.hub.envelope import Envelope, SignedOp, parse_envelope
from felhom_agent.hub.errors import (
    EnvelopeError,
    HubAuthError,
    HubError,
    HubProtocolError,
    HubRequestError,
    HubServerError,
    HubTimeoutError,
    HubTransportError,
)
from felhom_agent.hub.loop import HubLoop, HubStatus, report_round_trip
from felhom_agent.hub.policy import Backoff, Outcome, PolicyState, RetryPolicy
from felhom_agent.hub.report import (
    BlockedGuest,
    GuestEntry,
    HostReport,
    NodeFacts,
    OpResult,
    ReconcileStatus,
    RefusedAction,
    ReportError,
)

__all__ = [
    "Backoff",
    "BlockedGuest",
    "Envelope",
    "EnvelopeError",
    "GuestEntry",
    "HostReport",
    "HubAuthError",
    "HubClient",
    "HubError",
    "HubLoop",
    "HubProtocolError",
    "HubRequestError",
    "HubServerError",
    "HubStatus",
    "HubTimeoutError",
    "HubTransportError",
    "NodeFacts",
    "OpResult",
    "Outcome",
    "PolicyState",
    "ReconcileStatus",
    "RefusedAction",
    "ReportError",
    "RetryPolicy",
    "SignedOp",
    "parse_envelope",
    "report_round_trip",
]
