"""The fingerprint parser: exactly two TLS pin forms, one SSH key form."""

from __future__ import annotations

import base64
import hashlib
import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from felhom_agent.errors import ConfigError
from felhom_agent.fingerprint import (
    FingerprintError,
    Sha256Fingerprint,
    pin_from_config,
    ssh_fingerprint,
)

_DIGESTS = st.binary(min_size=32, max_size=32)


@given(_DIGESTS, st.booleans(), st.booleans())
def test_both_written_forms_parse_to_the_same_digest(digest: bytes, colons: bool,
                                                     upper: bool) -> None:
    """``AB:CD:…`` and 64 hex digits, any case, with outer blanks, read back the digest."""
    fp = Sha256Fingerprint(digest)
    text = fp.colon if colons else fp.hex
    text = text.upper() if upper else text.lower()
    assert Sha256Fingerprint.parse(f" {text}\n") == fp
    assert fp.hex == digest.hex() and bytes.fromhex(fp.colon.replace(":", "")) == digest
    assert str(fp) == fp.colon == fp.colon.upper()


@pytest.mark.parametrize("text", [
    "", "AB:CD", "sha256", "ZZ" * 32, ":".join(["AB"] * 31), ":".join(["AB"] * 33),
    "AB" * 31, "AB" * 33, "ABCD:" + ":".join(["AB"] * 30), "AB-" * 31 + "AB",
    "a" * 40, "SHA256:" + "A" * 43,
])
def test_other_text_is_refused(text: str) -> None:
    """Short digests (MD5, SHA-1), odd separators, wrong lengths: never guessed at."""
    with pytest.raises(FingerprintError, match="is not a SHA-256 fingerprint"):
        Sha256Fingerprint.parse(text)


def test_a_config_pin_error_names_the_key() -> None:
    """The config form says which key is wrong, and keeps the accepted forms in the text."""
    with pytest.raises(ConfigError) as info:
        pin_from_config("AB:CD", key="hub.tls_fingerprint")
    assert info.value.key == "hub.tls_fingerprint"
    assert str(info.value).startswith("hub.tls_fingerprint: 'AB:CD' is not a SHA-256")
    assert "32 colon-separated hex pairs" in str(info.value)


def test_a_digest_must_be_32_bytes() -> None:
    """The value type itself refuses a digest of another length."""
    with pytest.raises(ValueError, match="32 bytes"):
        Sha256Fingerprint(b"\x00" * 20)


def test_of_der_is_the_sha256_of_the_bytes() -> None:
    """A certificate's pin is the SHA-256 of its DER encoding."""
    assert Sha256Fingerprint.of_der(b"der").digest == hashlib.sha256(b"der").digest()


def test_ssh_fingerprint_matches_ssh_keygen(tmp_path: Path) -> None:
    """The ``SHA256:`` form is what ``ssh-keygen -l`` prints for the same key."""
    key = tmp_path / "k"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    blob = base64.b64decode((tmp_path / "k.pub").read_text().split()[1])
    listed = subprocess.run(["ssh-keygen", "-l", "-E", "sha256", "-f", str(key) + ".pub"],
                            check=True, capture_output=True, text=True).stdout.split()[1]
    assert ssh_fingerprint(blob) == listed
