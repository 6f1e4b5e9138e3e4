"""The error root: one generic pickling mechanism and the reconcile layer's mid level."""

from __future__ import annotations

import importlib
import pickle
import pkgutil
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import felhom_agent
from felhom_agent.authz.errors import AllowedSignersError, OpRejected, Reason
from felhom_agent.core.desired import DesiredStateError
from felhom_agent.core.normalise import NormaliseError
from felhom_agent.durable import DurabilityError
from felhom_agent.errors import AgentError, ConfigError, ReconcileError
from felhom_agent.execution.job import JobFailed, QueueClosed, QueueError
from felhom_agent.hub.errors import EnvelopeError, HubServerError
from felhom_agent.kinds.model import GateRefused, UnknownKind
from felhom_agent.planning.plan import PlanInputError
from felhom_agent.privileged.errors import CommandFailed, RefusedArgument
from felhom_agent.proxmox.errors import (
    ParameterError,
    PermissionDenied,
    PinMismatch,
    TaskFailed,
    TaskTimeout,
)
from felhom_agent.signedops.steps import StepNotRun
from felhom_agent.state.journal_records import JournalError, JournalLocked, UnknownOp

SAMPLES: list[AgentError] = [
    ConfigError("hub.url: bad", key="hub.url"),
    OpRejected(Reason.EXPIRED, "expired at 2026-01-01T00:00:00Z"),
    AllowedSignersError("bad option", path=Path("/etc/x"), line=3),
    DurabilityError("fsync failed", path=Path("/var/lib/x")),
    EnvelopeError("bad field", field="signed_ops[1]", path="/v1/r"),
    HubServerError("502", path="/v1/r", status=502),
    CommandFailed("pct failed", program="pct", returncode=2, stderr="boom"),
    RefusedArgument("vmid", 7, "below 100"),
    ParameterError("bad", path="/x", method="POST", errors={"vmid": "bad"}),
    PermissionDenied("denied", path="/x", acl_path="/vms/100", privileges=("VM.Audit",)),
    PinMismatch("pin", expected="AB", served=None),
    TaskFailed("VM is locked (snapshot)", upid="UPID:x"),
    TaskTimeout("late", upid="UPID:y", last_status="running"),
    DesiredStateError("guests.101: bad", path="guests.101"),
    NormaliseError("memory: bad", key="memory"),
    JobFailed("job failed", vmid=3, label="x", reason="E: m"),
    QueueClosed("closed", vmid=5, label="z"),
    JournalLocked("locked", path=Path("/j")),
    UnknownOp("no op", path=Path("/j")),
    UnknownKind("guest.explode"),
    GateRefused("protected"),
    PlanInputError("bad input"),
    StepNotRun("never ran"),
]


@pytest.mark.parametrize("err", SAMPLES, ids=lambda e: type(e).__name__)
def test_every_error_pickles_with_its_context(err: AgentError) -> None:
    """Type, message, args and every context attribute survive a pickle round trip."""
    back = pickle.loads(pickle.dumps(err))  # noqa: S301 - our own bytes, round trip
    assert type(back) is type(err)
    assert str(back) == str(err) and back.args == err.args
    assert back.__dict__ == err.__dict__


@given(message=st.text(max_size=40), key=st.none() | st.text(max_size=20))
def test_config_error_round_trip_property(message: str, key: str | None) -> None:
    """Any message and key round-trip (the rebuild never re-runs ``__init__``)."""
    back = pickle.loads(pickle.dumps(ConfigError(message, key=key)))  # noqa: S301
    assert (str(back), back.key) == (message, key)


def _package_modules() -> list[str]:
    names = []
    for info in pkgutil.walk_packages(felhom_agent.__path__, "felhom_agent."):
        if not info.name.endswith("__main__"):
            names.append(info.name)
    return names


def _agent_error_classes() -> list[type[AgentError]]:
    for name in _package_modules():
        importlib.import_module(name)
    seen: list[type[AgentError]] = []
    stack: list[type[AgentError]] = [AgentError]
    while stack:
        cls = stack.pop()
        seen.append(cls)
        stack.extend(cls.__subclasses__())
    return seen


def test_only_the_root_defines_pickling() -> None:
    """No error class below AgentError carries its own ``__reduce__``: one mechanism."""
    own = [f"{c.__module__}.{c.__qualname__}" for c in _agent_error_classes()
           if c is not AgentError and ("__reduce__" in vars(c) or "__reduce_ex__" in vars(c))]
    assert own == []


#: The packages of the reconcile layer (pure core, the backup policy layer, kinds, planning,
#: execution, durable state, signed ops).
RECONCILE_PACKAGES = ("core", "backup", "kinds", "planning", "execution", "state", "signedops")


def test_reconcile_layer_errors_share_the_mid_level() -> None:
    """Every error defined in the reconcile layer derives from ReconcileError."""
    reconcile = [c for c in _agent_error_classes()
                 if c.__module__.split(".")[1:2] and c.__module__.split(".")[1]
                 in RECONCILE_PACKAGES]
    assert reconcile, "no reconcile errors found"
    assert [c.__qualname__ for c in reconcile if not issubclass(c, ReconcileError)] == []
    for cls in (QueueError, JournalError, DesiredStateError, NormaliseError, GateRefused):
        assert issubclass(cls, ReconcileError) and issubclass(cls, AgentError)
