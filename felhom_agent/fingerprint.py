"""SHA-256 fingerprints of TLS certificates and SSH keys: parsed once, shown the usual ways.

A TLS pin (``proxmox.tls_fingerprint``, ``hub.tls_fingerprint``) is the SHA-256 of the
server's DER leaf certificate. It is written either as 32 colon-separated hex pairs, the way
``pvenode cert info`` prints it (``AB:CD:…``), or as 64 hex digits, in either case.
Anything else -- a shorter digest (MD5, SHA-1), stray separators, a wrong length -- is refused
rather than guessed at. :class:`Sha256Fingerprint` holds the 32 bytes and renders them as
PVE shows them (:attr:`~Sha256Fingerprint.colon`) or as urllib3's pin check wants them
(:attr:`~Sha256Fingerprint.hex`). An SSH key's fingerprint is the ``SHA256:`` + unpadded
base64 form ``ssh-keygen -l`` prints (:func:`ssh_fingerprint`).
"""

from __future__ import annotations

import base64
import hashlib
import re
from typing import Final

import attrs

from felhom_agent.errors import AgentError, ConfigError

__all__ = ["FingerprintError", "Sha256Fingerprint", "pin_from_config", "ssh_fingerprint"]

_COLON_PAIRS: Final = re.compile(r"[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){31}")
_HEX64: Final = re.compile(r"[0-9A-Fa-f]{64}")


class FingerprintError(AgentError, ValueError):
    """The text is not a SHA-256 fingerprint in one of the accepted forms."""


def _digest32(_inst: object, _attr: object, value: bytes) -> None:
    if len(value) != 32:
        raise ValueError(f"a SHA-256 digest is 32 bytes, got {len(value)}")


@attrs.frozen
class Sha256Fingerprint:
    """A SHA-256 fingerprint (32 bytes)."""

    digest: bytes = attrs.field(validator=_digest32)

    @classmethod
    def parse(cls, text: str) -> Sha256Fingerprint:
        """Read ``AB:CD:…`` (32 pairs) or 64 hex digits, any case, outer blanks ignored.

        Raises:
            FingerprintError: any other text.
        """
        stripped = text.strip()
        if _COLON_PAIRS.fullmatch(stripped) or _HEX64.fullmatch(stripped):
            return cls(bytes.fromhex(stripped.replace(":", "")))
        raise FingerprintError(
            f"{text!r} is not a SHA-256 fingerprint; must be 32 colon-separated hex pairs "
            "(AB:CD:…, as `pvenode cert info` prints) or 64 hex digits"
        )

    @classmethod
    def of_der(cls, der: bytes) -> Sha256Fingerprint:
        """The fingerprint of a DER-encoded certificate."""
        return cls(hashlib.sha256(der).digest())

    @property
    def colon(self) -> str:
        """Upper-case colon-separated pairs, as PVE shows them: ``AB:CD:…:EF``."""
        return ":".join(f"{b:02X}" for b in self.digest)

    @property
    def hex(self) -> str:
        """64 lower-case hex digits (urllib3's ``assert_fingerprint`` form)."""
        return self.digest.hex()

    def __str__(self) -> str:
        return self.colon


def pin_from_config(text: str, *, key: str) -> Sha256Fingerprint:
    """Parse a configured TLS pin; the error names the config key.

    Raises:
        ConfigError: ``"<key>: <why>"``, with ``key`` set.
    """
    try:
        return Sha256Fingerprint.parse(text)
    except FingerprintError as err:
        raise ConfigError(f"{key}: {err}", key=key) from None


def ssh_fingerprint(blob: bytes) -> str:
    """The ``SHA256:…`` fingerprint ``ssh-keygen -l`` prints for a public key blob."""
    digest = hashlib.sha256(blob).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")
