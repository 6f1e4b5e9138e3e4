"""Fixtures for the daemon-level backup tests: signing keys (made once) and a harness factory."""

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

MakeHarness = Callable[..., Harness]


@pytest.fixture(scope="session")
def keyset(tmp_path_factory: pytest.TempPathFactory) -> tuple[KeyPair, KeyPair, Path]:
    """The trusted key, an untrusted key and the allowed_signers file (made once)."""
    return make_keys(tmp_path_factory.mktemp("backup-keys"))


@pytest.fixture
def make_harness(tmp_path: Path, keyset: tuple[KeyPair, KeyPair, Path]
                 ) -> Iterator[MakeHarness]:
    """``make_harness(scenario, backup={...}, token=(id, secret))``: the PVE simulator on
    ``scenario``, the hub simulator and a daemon config (``backup.*`` and the PVE token as
    given); the daemon (the real program, a child process) is started by the test."""
    trusted, stranger, signers = keyset
    made: list[tuple[Harness, PveSimulator]] = []
    stack = contextlib.ExitStack()

    def make(scenario: PveScenario, *, backup: dict[str, Any] | None = None,
             token: tuple[str, str] | None = None) -> Harness:
        work = tmp_path / "ops"
        work.mkdir(exist_ok=True)
        pve = stack.enter_context(PveSimulator(scenario))
        hub = stack.enter_context(HubSimulator(hub_scenario()))
        h = build(tmp_path, pve=pve, hub=hub, signer=OpSigner(trusted, work),
                  stranger=OpSigner(stranger, work), signers_file=signers)
        made.append((h, pve))

        def change(doc: dict[str, Any]) -> None:
            doc["backup"] = {"stale_lock_s": 1, **(backup or {})}
            if token is not None:
                doc["proxmox"]["token_id"], doc["proxmox"]["token_secret"] = token

        h.edit_config(change)
        return h

    with stack:
        yield make
        for h, pve in made:
            for run in h.runs:
                if run.alive():
                    run.terminate()
            assert pve.internal_errors == []
