"""SSH public keys we trust for signed ops, and verification of their inner signatures.

Supported key types (``docs/sshsig.md``, "Key types and inner signatures"): ``ssh-ed25519``,
``ecdsa-sha2-nistp256/384/521``, ``ssh-rsa`` keys of at least 2048 bits signing with
``rsa-sha2-256``/``rsa-sha2-512``, and the security-key types ``sk-ssh-ed25519@openssh.com`` /
``sk-ecdsa-sha2-nistp256@openssh.com`` with the user presence flag required. Refused even though
OpenSSH 9.2 accepts them: ``ssh-dss`` (DSA with SHA-1), inner ``ssh-rsa`` (RSA with SHA-1), sk
signatures without user presence, and certificates (the ``cert-authority`` path is not implemented).

Keys are parsed from their wire blob by our own bounds-checked reader (not ``cryptography``'s SSH
loaders, which drop the sk application string and load certificates without checking them —
``docs/sshsig.md`` ("Pitfalls"), item 13). Every number and point must be in its canonical encoding,
so two keys are the same key exactly when their blobs are equal. Verification dispatches on the
*trusted* key's type, never on the name inside the signature.
"""

from __future__ import annotations

import hashlib
from typing import Final

import attrs
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from felhom_agent.authz.errors import OpRejected, Reason
from felhom_agent.authz.sshwire import WireError, WireReader
from felhom_agent.fingerprint import ssh_fingerprint

__all__ = ["MIN_RSA_BITS", "SUPPORTED_KEY_TYPES", "SshPublicKey", "parse_public_key"]

#: OpenSSH accepts 1024-bit RSA; an operator key that signs destructive ops should not.
MIN_RSA_BITS: Final = 2048

ED25519: Final = "ssh-ed25519"
RSA: Final = "ssh-rsa"
SK_ED25519: Final = "sk-ssh-ed25519@openssh.com"
SK_ECDSA: Final = "sk-ecdsa-sha2-nistp256@openssh.com"
_ECDSA: Final[dict[str, tuple[str, ec.EllipticCurve, hashes.HashAlgorithm]]] = {
    "ecdsa-sha2-nistp256": ("nistp256", ec.SECP256R1(), hashes.SHA256()),
    "ecdsa-sha2-nistp384": ("nistp384", ec.SECP384R1(), hashes.SHA384()),
    "ecdsa-sha2-nistp521": ("nistp521", ec.SECP521R1(), hashes.SHA512()),
}
_RSA_SIGNATURES: Final[dict[str, hashes.HashAlgorithm]] = {
    "rsa-sha2-256": hashes.SHA256(),
    "rsa-sha2-512": hashes.SHA512(),
}
SUPPORTED_KEY_TYPES: Final = frozenset({ED25519, RSA, SK_ED25519, SK_ECDSA, *_ECDSA})
_SK_USER_PRESENT: Final = 0x01

_PublicKey = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey | rsa.RSAPublicKey


@attrs.frozen(eq=False)
class SshPublicKey:
    """A parsed, supported SSH public key.

    Attributes:
        key_type: the wire type name (``ssh-ed25519``, ``ecdsa-sha2-nistp256``, …).
        blob: the exact wire encoding; canonical, so it is the key's identity.
        application: the sk application string (``ssh:``), ``None`` for plain keys.
    """

    key_type: str
    blob: bytes = attrs.field(repr=False)
    application: bytes | None = attrs.field(repr=False)
    _key: _PublicKey = attrs.field(repr=False, alias="key")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SshPublicKey):
            return NotImplemented
        return self.blob == other.blob

    def __hash__(self) -> int:
        return hash(self.blob)

    @property
    def fingerprint(self) -> str:
        """The ``SHA256:…`` fingerprint ``ssh-keygen -l`` prints for this key."""
        return ssh_fingerprint(self.blob)

    def verify(self, signature: bytes, data: bytes) -> None:
        """Check an SSH signature blob of this key over ``data``.

        Raises:
            OpRejected: malformed signature, a type name that does not match this key, legacy
                RSA/SHA-1, an sk signature without user presence, or a signature that does not
                verify — each with its own :class:`Reason`.
        """
        try:
            reader = WireReader(signature)
            name = reader.ascii()
            if self.key_type == RSA:
                if name == "ssh-rsa":
                    raise OpRejected(Reason.RSA_SHA1, "legacy ssh-rsa (SHA-1) signature refused")
                if name not in _RSA_SIGNATURES:
                    raise OpRejected(
                        Reason.SIGNATURE_TYPE_MISMATCH, f"{name!r} signature for an RSA key"
                    )
            elif name != self.key_type:
                raise OpRejected(
                    Reason.SIGNATURE_TYPE_MISMATCH,
                    f"{name!r} signature for a {self.key_type} key",
                )
            raw = reader.string()
            flags: int | None = None
            counter = 0
            if self.application is not None:
                flags = reader.u8()
                counter = reader.u32()
            reader.finish()
            if self.key_type in (ED25519, SK_ED25519) and len(raw) != 64:
                raise WireError("Ed25519 signature is not 64 bytes")
        except WireError as err:
            raise OpRejected(Reason.SIGNATURE_MALFORMED, f"signature blob: {err}") from err

        if self.application is not None and flags is not None:
            # Security keys sign SHA256(application) ‖ flags ‖ counter ‖ SHA256(data).
            data = (
                hashlib.sha256(self.application).digest()
                + bytes([flags])
                + counter.to_bytes(4, "big")
                + hashlib.sha256(data).digest()
            )
        try:
            self._verify_raw(name, raw, data)
        except InvalidSignature as err:
            raise OpRejected(Reason.BAD_SIGNATURE, "signature does not verify") from err
        if flags is not None and not flags & _SK_USER_PRESENT:
            raise OpRejected(
                Reason.USER_PRESENCE,
                f"security-key signature without user presence (flags 0x{flags:02x})",
            )

    def _verify_raw(self, name: str, raw: bytes, data: bytes) -> None:
        key = self._key
        if isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(raw, data)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            try:
                rs = WireReader(raw)
                r, s = rs.mpint(), rs.mpint()
                rs.finish()
            except WireError as err:
                raise OpRejected(Reason.SIGNATURE_MALFORMED, f"ECDSA r,s: {err}") from err
            if r == 0 or s == 0:
                raise InvalidSignature
            key.verify(encode_dss_signature(r, s), data, ec.ECDSA(_ecdsa_hash(key)))
        else:
            size = (key.key_size + 7) // 8
            if len(raw) > size:
                raise OpRejected(Reason.SIGNATURE_MALFORMED, "RSA signature longer than modulus")
            # OpenSSH left-pads a signature that is shorter than the modulus (ssh_rsa_verify).
            key.verify(raw.rjust(size, b"\x00"), data, padding.PKCS1v15(), _RSA_SIGNATURES[name])


def _ecdsa_hash(key: ec.EllipticCurvePublicKey) -> hashes.HashAlgorithm:
    for _name, curve, digest in _ECDSA.values():
        if curve.name == key.curve.name:
            return digest
    raise OpRejected(Reason.KEY_TYPE, f"unsupported curve {key.curve.name}")


def parse_public_key(blob: bytes) -> SshPublicKey:
    """Parse a public key blob (SSH wire form) into a supported :class:`SshPublicKey`.

    Raises:
        OpRejected: ``KEY_TYPE`` for an unsupported/refused type (DSA, certificates, unknown,
            RSA below :data:`MIN_RSA_BITS`), ``KEY_MALFORMED`` for a broken encoding.
    """
    try:
        reader = WireReader(blob)
        key_type = reader.ascii()
        _refuse_type(key_type)
        application: bytes | None = None
        key: _PublicKey
        if key_type in (ED25519, SK_ED25519):
            pk = reader.string()
            if len(pk) != 32:
                raise WireError("Ed25519 public key is not 32 bytes")
            key = ed25519.Ed25519PublicKey.from_public_bytes(pk)
        elif key_type == RSA:
            e, n = reader.mpint(), reader.mpint()
            if n.bit_length() < MIN_RSA_BITS:
                raise OpRejected(
                    Reason.KEY_TYPE,
                    f"RSA key of {n.bit_length()} bits (minimum {MIN_RSA_BITS})",
                )
            key = rsa.RSAPublicNumbers(e, n).public_key()
        else:
            ecdsa_type = "ecdsa-sha2-nistp256" if key_type == SK_ECDSA else key_type
            curve_name, curve, _digest = _ECDSA[ecdsa_type]
            if reader.ascii() != curve_name:
                raise WireError("curve name does not match the key type")
            point = reader.string()
            if not point or point[0] != 0x04:
                raise WireError("EC point is not in uncompressed form")
            key = ec.EllipticCurvePublicKey.from_encoded_point(curve, point)
        if key_type in (SK_ED25519, SK_ECDSA):
            application = reader.string()
        reader.finish()
    except OpRejected:
        raise
    except WireError as err:
        raise OpRejected(Reason.KEY_MALFORMED, f"public key: {err}") from err
    except ValueError as err:  # cryptography: point not on curve, bad RSA numbers
        raise OpRejected(Reason.KEY_MALFORMED, f"public key: {err}") from err
    return SshPublicKey(key_type=key_type, blob=bytes(blob), application=application, key=key)


def _refuse_type(key_type: str) -> None:
    if key_type in SUPPORTED_KEY_TYPES:
        return
    if key_type == "ssh-dss":
        raise OpRejected(Reason.KEY_TYPE, "ssh-dss (DSA with SHA-1) keys are refused")
    if key_type.endswith("-cert-v01@openssh.com"):
        raise OpRejected(
            Reason.KEY_TYPE, f"{key_type}: certificates are not supported (use a plain key)"
        )
    raise OpRejected(Reason.KEY_TYPE, f"unsupported key type {key_type!r}")
