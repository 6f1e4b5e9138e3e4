"""The hub simulator's TLS identity: a fresh self-signed leaf per start, and its pin.

Generated at start so no key is ever committed and a test cannot pass against a stale pin.
The certificate names ``127.0.0.1`` and ``localhost`` (so it also verifies as a ``ca_file``
trust anchor with normal hostname checks) and uses an ECDSA P-256 key, generated in about a
millisecond. The fingerprint is the SHA-256 of the DER leaf, ``AB:CD:...`` upper-case hex.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import ssl
import tempfile
from pathlib import Path

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

__all__ = ["HubCertificate", "generate_hub_certificate"]


@attrs.frozen
class HubCertificate:
    """A PEM certificate, its key and the fingerprint a client pins."""

    cert_pem: bytes
    key_pem: bytes = attrs.field(repr=False)
    fingerprint: str

    def server_context(self) -> ssl.SSLContext:
        """A TLS 1.2+ server context serving this certificate."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        # load_cert_chain reads files only; a private temp dir holds them for that moment.
        with tempfile.TemporaryDirectory(prefix="felhom-hubsim-tls-") as tmp:
            cert_path = Path(tmp) / "hub.pem"
            key_path = Path(tmp) / "hub.key"
            cert_path.write_bytes(self.cert_pem)
            key_path.touch(mode=0o600)
            key_path.write_bytes(self.key_pem)
            ctx.load_cert_chain(str(cert_path), str(key_path))
        return ctx


def generate_hub_certificate(*, now: datetime.datetime | None = None) -> HubCertificate:
    """Generate a self-signed certificate for ``127.0.0.1``/``localhost``, valid for two days.

    Args:
        now: the notBefore reference (injectable); defaults to the current UTC time.
    """
    start = now or datetime.datetime.now(datetime.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "felhom hub simulator")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start - datetime.timedelta(minutes=5))
        .not_valid_after(start + datetime.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    der = cert.public_bytes(serialization.Encoding.DER)
    return HubCertificate(
        cert_pem=cert.public_bytes(serialization.Encoding.PEM),
        key_pem=key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        fingerprint=":".join(f"{b:02X}" for b in hashlib.sha256(der).digest()),
    )
