"""Fixtures for the Phase B tests: real ssh-keygen keys (made once), simulators, a harness."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from felhom_agent.sim.hub import HubSimulator
from felhom_agent.sim.pve import PveSimulator
from tests.authz.helpers import KeyPair
from tests.phaseb.harness import Harness, build, hub_scenario, pve_scenario
from tests.phaseb.signing import OpSigner, make_keys


@pytest.fixture(scope="session")
def keyset(tmp_path_factory: pytest.TempPathFactory) -> tuple[KeyPair, KeyPair, Path]:
    """The trusted key, an untrusted key and the allowed_signers file (made once)."""
    return make_keys(tmp_path_factory.mktemp("phaseb-keys"))


@pytest.fixture
def harness(tmp_path: Path, keyset: tuple[KeyPair, KeyPair, Path]) -> Iterator[Harness]:
    """Fresh simulators and state; the daemon (a child process) is started by the test."""
    trusted, stranger, signers = keyset
    work = tmp_path / "ops"
    work.mkdir()
    with PveSimulator(pve_scenario()) as pve, HubSimulator(hub_scenario()) as hub:
        h = build(tmp_path, pve=pve, hub=hub, signer=OpSigner(trusted, work),
                  stranger=OpSigner(stranger, work), signers_file=signers)
        try:
            yield h
        finally:
            for run in h.runs:
                if run.alive():
                    run.terminate()
        assert pve.internal_errors == []
