"""Shared pieces of the backup tests: tokens with backup privileges and the clock start."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from felhom_agent.sim.pve import PveScenario, PveSimulator
from tests.sim.helpers import scenario_dict

#: VM.Backup on every guest, AllocateSpace on the backup storages: sees and makes backups of
#: every guest, may not override retention.
BACKUP_USER = "PVEAPIToken=backup@pve!agent=backup-secret-1"
#: VM.Backup on guest 100 only.
BACKUP_100 = "PVEAPIToken=b100@pve!agent=b100-secret-1"
#: PVEAuditor: sees storages (Datastore.Audit) but no backup in a listing.
AUDITOR = "PVEAPIToken=auditor@pve!ro=ro-secret-1"

_SPACE = {"/storage/local": ["Datastore.AllocateSpace", "Datastore.Audit"],
          "/storage/pbs1": ["Datastore.AllocateSpace", "Datastore.Audit"]}
TOKENS = [
    {"id": "backup@pve!agent", "secret": "backup-secret-1", "privsep": False,
     "user_privileges": {"/vms": ["VM.Audit", "VM.Backup"], **_SPACE}},
    {"id": "b100@pve!agent", "secret": "b100-secret-1", "privsep": False,
     "user_privileges": {"/vms": ["VM.Audit"], "/vms/100": ["VM.Audit", "VM.Backup"],
                         **_SPACE}},
]


def backup_scenario(**overrides: Any) -> PveScenario:
    """The test scenario plus the backup tokens (node local time Europe/Budapest)."""
    d = scenario_dict(**overrides)
    d["tokens"].extend(TOKENS)
    d.setdefault("timezone", "Europe/Budapest")
    return PveScenario.from_dict(d)


#: The backup tests' clock start: 2026-01-01T00:00:00Z (a :class:`FakeClock` from here).
JAN_2026 = 1_767_225_600.0


@contextlib.contextmanager
def running(scenario: PveScenario | None = None,
            clock: Callable[[], float] | None = None) -> Iterator[PveSimulator]:
    """A simulator on ``scenario`` (default :func:`backup_scenario`); asserts afterwards that
    no handler failed internally and that no thread outlived it."""
    before = set(threading.enumerate())
    with PveSimulator(scenario or backup_scenario(), clock=clock or time.time) as sim:
        yield sim
        assert sim.internal_errors == [], sim.internal_errors[0]
    leaked = [t for t in threading.enumerate() if t not in before and t.is_alive()]
    assert not leaked, f"threads leaked: {leaked}"
