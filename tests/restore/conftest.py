"""Fixtures for the restore tests: signing keys (made once) and a harness factory."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from felhom_agent.sim.hub import HubSimulator
from felhom_agent.sim.pve import PveScenario, PveSimulator
from tests.authz.helpers import KeyPair
from tests.phaseb.harness import Harness, build, hub_scenario
from tests.phaseb.signing import OpSigner, make_keys
from tests.restore.rig import restore_scenario

MakeHarness = Callable[..., Harness]


@pytest.fixture(scope="session")
def keyset(tmp_path_factory: pytest.TempPathFactory) -> tuple[KeyPair, KeyPair, Path]:
    """The trusted key, an untrusted key and the allowed_signers file (made once)."""
    return make_keys(tmp_path_factory.mktemp("restore-keys"))


@pytest.fixture
def make_harness(tmp_path: Path, keyset: tuple[KeyPair, KeyPair, Path]
                 ) -> Iterator[MakeHarness]:
    """``make_harness(scenario=None, backup={...})``: the PVE simulator on ``scenario`` (the
    restore scenario by default), the hub simulator, a daemon config with ``backup.*`` as
    given; the daemon (the real program, a child process) is started by the test."""
    trusted, stranger, signers = keyset
    made: list[tuple[Harness, PveSimulator]] = []
    stack = contextlib.ExitStack()

    def make(scenario: PveScenario | None = None, *,
             backup: dict[str, Any] | None = None) -> Harness:
        work = tmp_path / "ops"
        work.mkdir(exist_ok=True)
        pve = stack.enter_context(PveSimulator(scenario or restore_scenario()))
        hub = stack.enter_context(HubSimulator(hub_scenario()))
        h = build(tmp_path, pve=pve, hub=hub, signer=OpSigner(trusted, work),
                  stranger=OpSigner(stranger, work), signers_file=signers)
        made.append((h, pve))
        if backup:
            h.edit_config(lambda doc: doc.update(backup=dict(backup)))
        return h

    with stack:
        yield make
        for h, pve in made:
            for run in h.runs:
                if run.alive():
                    run.terminate()
            assert pve.internal_errors == []
