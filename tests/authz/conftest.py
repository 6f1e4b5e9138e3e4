"""Fixtures for the authz tests: real ssh-keygen keys of every supported type, made on first use.

DSA keys are not asked of ssh-keygen (OpenSSH 9.8 and later cannot make them): the tests
that need one use :func:`tests.authz.helpers.soft_dsa`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.authz.helpers import KeyRing

#: name -> ssh-keygen arguments; every plain key type the verifier supports.
KEY_SPECS: dict[str, list[str]] = {
    "ed25519": ["-t", "ed25519"],
    "ecdsa256": ["-t", "ecdsa", "-b", "256"],
    "ecdsa384": ["-t", "ecdsa", "-b", "384"],
    "ecdsa521": ["-t", "ecdsa", "-b", "521"],
    "rsa2048": ["-t", "rsa", "-b", "2048"],
    "rsa3072": ["-t", "rsa", "-b", "3072"],
}
#: Keys besides those: one nobody trusts, and one RSA key too short to be trusted.
EXTRA_SPECS: dict[str, list[str]] = {
    "untrusted": ["-t", "ed25519"],
    "rsa1024": ["-t", "rsa", "-b", "1024"],
}


@pytest.fixture(scope="session")
def keydir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private directory for the session's keys."""
    return tmp_path_factory.mktemp("authz-keys")


@pytest.fixture(scope="session")
def keys(keydir: Path) -> KeyRing:
    """One ssh-keygen key per supported type, plus an untrusted and an RSA-1024 one.

    Each key is made when a test first asks for it, so a type this ssh-keygen cannot make
    fails only the tests that use that type.
    """
    return KeyRing(keydir, {**KEY_SPECS, **EXTRA_SPECS})
