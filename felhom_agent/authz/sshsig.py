"""SSHSIG: the armored signatures ``ssh-keygen -Y sign`` writes, parsed strictly.

Byte layouts (OpenSSH's PROTOCOL.sshsig; ``docs/sshsig.md``, "Blob layout", "Signed data", "Armor"):

* armor: ``-----BEGIN SSH SIGNATURE-----`` at byte 0, base64 lines (ssh-keygen wraps at 70,
  the spec suggests 76; any line of 1 to 76 characters is accepted), the END line. Only
  whitespace may follow the END line (ssh-keygen ignores anything there; we do not).
  CRLF line ends are accepted, as OpenSSH ≥ 9.5 does.
* blob: ``"SSHSIG"``, uint32 version (≤ 1), string publickey, string namespace, string
  reserved (ignored: it is not signed), string hash_algorithm, string signature; no trailing
  byte.
* signed data: ``"SSHSIG"`` ‖ string(expected namespace) ‖ string("") ‖ string(hash
  algorithm) ‖ string(H(message)) — built from the namespace we *expect*, never the blob's.

This module only parses and builds bytes; the policy (which namespace, which keys) lives in
:mod:`felhom_agent.authz.verifier`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import Final

import attrs

from felhom_agent.authz.errors import OpRejected, Reason
from felhom_agent.authz.sshwire import WireError, WireReader, encode_string

__all__ = [
    "HASH_ALGORITHMS",
    "MAX_ARMORED_SIZE",
    "SshSignature",
    "dearmor",
    "parse_armored",
    "parse_blob",
    "signed_data",
]

MAGIC: Final = b"SSHSIG"
SUPPORTED_VERSION: Final = 1
BEGIN: Final = b"-----BEGIN SSH SIGNATURE-----"
END: Final = b"-----END SSH SIGNATURE-----"
#: The largest real signature (RSA-4096 or a certificate) armors to well under 2 KiB.
MAX_ARMORED_SIZE: Final = 16 * 1024
_MAX_LINE: Final = 76
_B64_CHARS: Final = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")
HASH_ALGORITHMS: Final = {"sha256": hashlib.sha256, "sha512": hashlib.sha512}


@attrs.frozen
class SshSignature:
    """The fields of an SSHSIG blob, unvalidated beyond their framing.

    Attributes:
        version: the SSHSIG version (0 or 1; not covered by the signature).
        public_key: the embedded public key blob (untrusted until found in allowed_signers).
        namespace: the namespace the signer claimed.
        reserved: the outer reserved field (ignored; not covered by the signature).
        hash_algorithm: the message hash name as sent.
        signature: the key type's signature blob.
    """

    version: int
    public_key: bytes = attrs.field(repr=False)
    namespace: bytes
    reserved: bytes = attrs.field(repr=False)
    hash_algorithm: bytes
    signature: bytes = attrs.field(repr=False)


def dearmor(text: bytes) -> bytes:
    """Return the raw blob inside an armored SSH signature.

    Raises:
        OpRejected: ``SIGNATURE_TOO_LARGE`` or ``ARMOR`` (no header at byte 0, no footer,
            a bad base64 line, content after the footer).
    """
    if len(text) > MAX_ARMORED_SIZE:
        raise OpRejected(
            Reason.SIGNATURE_TOO_LARGE, f"{len(text)} bytes (maximum {MAX_ARMORED_SIZE})"
        )
    lines = text.split(b"\n")
    if lines[0].removesuffix(b"\r") != BEGIN or len(lines) < 2:
        raise OpRejected(Reason.ARMOR, "missing '-----BEGIN SSH SIGNATURE-----' at the start")
    body: list[bytes] = []
    for index, raw_line in enumerate(lines[1:], start=1):
        line = raw_line.removesuffix(b"\r")
        if line == END:
            rest = b"\n".join(lines[index + 1 :])
            if rest.strip():
                raise OpRejected(Reason.ARMOR, "data after '-----END SSH SIGNATURE-----'")
            break
        if not line or len(line) > _MAX_LINE or not set(line) <= _B64_CHARS:
            raise OpRejected(Reason.ARMOR, f"armor line {index + 1} is not a base64 line")
        body.append(line)
    else:
        raise OpRejected(Reason.ARMOR, "missing '-----END SSH SIGNATURE-----'")
    joined = b"".join(body)
    try:
        blob = base64.b64decode(joined, validate=True)
    except binascii.Error as err:
        raise OpRejected(Reason.ARMOR, f"bad base64: {err}") from err
    if base64.b64encode(blob) != joined:
        # Padding in the middle or non-zero pad bits: one blob, one encoding.
        raise OpRejected(Reason.ARMOR, "non-canonical base64")
    return blob


def parse_blob(blob: bytes) -> SshSignature:
    """Parse a raw SSHSIG blob strictly.

    Raises:
        OpRejected: ``BLOB`` (bad magic, truncated or oversized field), ``TRAILING_DATA``,
            ``SIG_VERSION`` (version above 1).
    """
    reader = WireReader(blob)
    try:
        if reader.raw(len(MAGIC)) != MAGIC:
            raise OpRejected(Reason.BLOB, "not an SSHSIG blob (bad magic)")
        version = reader.u32()
        public_key = reader.string()
        namespace = reader.string()
        reserved = reader.string()
        hash_algorithm = reader.string()
        signature = reader.string()
    except WireError as err:
        raise OpRejected(Reason.BLOB, f"truncated or malformed SSHSIG blob: {err}") from err
    if reader.remaining:
        raise OpRejected(
            Reason.TRAILING_DATA, f"{reader.remaining} bytes after the signature field"
        )
    if version > SUPPORTED_VERSION:
        raise OpRejected(
            Reason.SIG_VERSION, f"SSHSIG version {version} (supported: {SUPPORTED_VERSION})"
        )
    return SshSignature(
        version=version,
        public_key=public_key,
        namespace=namespace,
        reserved=reserved,
        hash_algorithm=hash_algorithm,
        signature=signature,
    )


def parse_armored(text: bytes) -> SshSignature:
    """:func:`dearmor` then :func:`parse_blob`."""
    return parse_blob(dearmor(text))


def signed_data(namespace: str, hash_algorithm: str, message: bytes) -> bytes:
    """Build the exact bytes the key signed (``docs/sshsig.md`` ("Signed data")).

    Args:
        namespace: the namespace the verifier *expects* (never the blob's copy).
        hash_algorithm: ``sha256`` or ``sha512``.
        message: the exact message bytes as received.

    Raises:
        OpRejected: ``HASH_ALGORITHM`` for anything but sha256/sha512.
    """
    hasher = HASH_ALGORITHMS.get(hash_algorithm)
    if hasher is None:
        raise OpRejected(
            Reason.HASH_ALGORITHM, f"hash {hash_algorithm!r} (allowed: sha256, sha512)"
        )
    return (
        MAGIC
        + encode_string(namespace.encode("utf-8"))
        + encode_string(b"")
        + encode_string(hash_algorithm.encode("ascii"))
        + encode_string(hasher(message).digest())
    )
