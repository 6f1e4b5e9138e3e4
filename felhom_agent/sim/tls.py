"""The simulators' TLS identities: a fresh self-signed leaf per start, and its pin.

A real PVE node serves ``pve-ssl.pem``, which a client sees as self-signed; the agent pins
the SHA-256 fingerprint of the DER certificate in the colon-separated upper-case form that
``pvenode cert info`` prints (``AB:CD:...``, 32 bytes). The hub simulator's HTTPS mode uses
the same kind of certificate. Generating a new key pair on every start means a test can never
pass by accident against a stale pin. An ECDSA P-256 key is used instead of PVE's RSA 2048
because it is generated in about a millisecond, which keeps simulator start-up well under a
second; the pinning logic does not care about the key type. Every certificate names
``127.0.0.1`` and ``localhost``, so it also verifies as a ``ca_file`` trust anchor.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import tempfile
from pathlib import Path

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from felhom_agent.fingerprint import Sha256Fingerprint

__all__ = ["SimCertificate", "generate_certificate"]


@attrs.frozen
class SimCertificate:
    """A PEM certificate + key pair and the fingerprint a client would pin."""

    cert_pem: bytes
    key_pem: bytes = attrs.field(repr=False)
    fingerprint: str

    def server_context(self) -> ssl.SSLContext:
        """Build a TLS server context serving this certificate (TLS 1.2+ like pveproxy)."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        # load_cert_chain only reads files; a private temp dir keeps the key off shared paths
        # and is removed as soon as the context holds the key in memory.
        with tempfile.TemporaryDirectory(prefix="felhom-sim-tls-") as tmp:
            cert_path = Path(tmp) / "cert.pem"
            key_path = Path(tmp) / "cert.key"
            cert_path.write_bytes(self.cert_pem)
            key_path.touch(mode=0o600)
            key_path.write_bytes(self.key_pem)
            ctx.load_cert_chain(str(cert_path), str(key_path))
        return ctx


def generate_certificate(
    common_name: str, *, organization: str | None = None, dns_name: str | None = None,
    now: datetime.datetime | None = None,
) -> SimCertificate:
    """Generate a self-signed leaf valid for 127.0.0.1, localhost and ``dns_name``, for 2 days.

    Args:
        common_name: the subject CN (the PVE node name for the PVE simulator).
        organization: the subject O, if any.
        dns_name: an extra DNS SAN (the node name), if any.
        now: the notBefore reference (injectable for reproducible tests); defaults to UTC now.
    """
    start = now or datetime.datetime.now(datetime.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attributes.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    name = x509.Name(attributes)
    names: list[x509.GeneralName] = [x509.DNSName(dns_name)] if dns_name else []
    names += [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    san = x509.SubjectAlternativeName(names)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start - datetime.timedelta(minutes=5))
        .not_valid_after(start + datetime.timedelta(days=2))
        .add_extension(san, critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    der = cert.public_bytes(serialization.Encoding.DER)
    return SimCertificate(
        cert_pem=cert.public_bytes(serialization.Encoding.PEM),
        key_pem=key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        fingerprint=Sha256Fingerprint.of_der(der).colon,
    )
