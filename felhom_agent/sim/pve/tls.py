"""The simulator's node certificate: a fresh self-signed leaf per start, and its pin.

A real PVE node serves ``pve-ssl.pem``, which a client sees as self-signed; the agent pins
the SHA-256 fingerprint of the DER certificate in the colon-separated upper-case form that
``pvenode cert info`` prints (``AB:CD:...``, 32 bytes). Generating a new key pair on every
start means a test can never pass by accident against a stale pin. An ECDSA P-256 key is
used instead of PVE's RSA 2048 because it is generated in about a millisecond, which keeps
simulator start-up well under a second; the pinning logic does not care about the key type.
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

__all__ = ["NodeCertificate", "fingerprint_of_der", "generate_node_certificate"]


def fingerprint_of_der(der: bytes) -> str:
    """Return the SHA-256 fingerprint of a DER certificate as ``AB:CD:...`` (PVE's format)."""
    return ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())


@attrs.frozen
class NodeCertificate:
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
            cert_path = Path(tmp) / "pve-ssl.pem"
            key_path = Path(tmp) / "pve-ssl.key"
            cert_path.write_bytes(self.cert_pem)
            key_path.touch(mode=0o600)
            key_path.write_bytes(self.key_pem)
            ctx.load_cert_chain(str(cert_path), str(key_path))
        return ctx


def generate_node_certificate(
    node: str, *, now: datetime.datetime | None = None
) -> NodeCertificate:
    """Generate a self-signed leaf for ``node`` valid for 127.0.0.1, localhost and the node name.

    Args:
        node: the PVE node name, used as the subject CN and a DNS SAN.
        now: the notBefore reference (injectable for reproducible tests); defaults to UTC now.
    """
    start = now or datetime.datetime.now(datetime.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "PVE Cluster Node (felhom simulator)"),
            x509.NameAttribute(NameOID.COMMON_NAME, node),
        ]
    )
    san = x509.SubjectAlternativeName(
        [
            x509.DNSName(node),
            x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        ]
    )
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
    return NodeCertificate(
        cert_pem=cert.public_bytes(serialization.Encoding.PEM),
        key_pem=key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        fingerprint=fingerprint_of_der(der),
    )
