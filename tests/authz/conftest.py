"""Fixtures for the authz tests: real ssh-keygen keys of every supported type (made once)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.authz.helpers import KeyPair, keygen

#: name -> ssh-keygen arguments; every plain key type the verifier supports.
KEY_SPECS: dict[str, list[str]] = {
    "ed25519": ["-t", "ed25519"],
    "ecdsa256": ["-t", "ecdsa", "-b", "256"],
    "ecdsa384": ["-t", "ecdsa", "-b", "384"],
    "ecdsa521": ["-t", "ecdsa", "-b", "521"],
    "rsa2048": ["-t", "rsa", "-b", "2048"],
    "rsa3072": ["-t", "rsa", "-b", "3072"],
}


@pytest.fixture(scope="session")
def keydir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private directory for the session's keys."""
    return tmp_path_factory.mktemp("authz-keys")


@pytest.fixture(scope="session")
def keys(keydir: Path) -> dict[str, KeyPair]:
    """One ssh-keygen key per supported type, plus an untrusted one and a DSA one."""
    made = {name: keygen(keydir, name, args) for name, args in KEY_SPECS.items()}
    made["untrusted"] = keygen(keydir, "untrusted", ["-t", "ed25519"])
    made["dsa"] = keygen(keydir, "dsa", ["-t", "dsa"])
    made["rsa1024"] = keygen(keydir, "rsa1024", ["-t", "rsa", "-b", "1024"])
    return made
