"""Test helpers: real ssh-keygen keys and signatures, op payloads, and an SSHSIG forge.

The forge builds SSHSIG blobs with ``cryptography`` for what ``ssh-keygen -Y sign`` cannot
make without hardware (security-key signatures), for DSA (which OpenSSH 9.8 and later can no
longer make), and for precise byte-level mutations. It builds the signed data itself (not
with the code under test) so that it can also make the forms the agent refuses.
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

import attrs
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from felhom_agent.authz.sshwire import encode_mpint, encode_string

REPO = Path(__file__).resolve().parents[2]
#: The project's own SSHSIG vectors (made by ``scripts/gen-sshsig-vectors``).
VECTORS = Path(__file__).resolve().parent / "vectors"
SSH_KEYGEN = "/usr/bin/ssh-keygen"
SSH = "/usr/bin/ssh"
TIMEOUT_S = 30

#: The fixed clock of every test (the vector table's `now`).
NOW = datetime(2026, 11, 26, 10, 5, tzinfo=UTC)
NS = "felhom-op"


def fmt(moment: datetime) -> str:
    """Payload time format."""
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def make_payload(counter: int = 0, /, **overrides: object) -> bytes:
    """A valid op payload for host pve1 at :data:`NOW`, with members overridden/removed.

    ``counter`` makes nonce and op_id unique; an override of ``None`` removes that member.
    """
    doc: dict[str, object] = {
        "v": 1,
        "op_id": f"00000000-0000-4000-8000-{counter:012x}",
        "host_id": "pve1",
        "kind": "guest.start",
        "vmid": 101,
        "params": {},
        "irreversible": False,
        "nonce": hashlib.sha256(f"nonce-{counter}".encode()).hexdigest()[:32],
        "issued_at": fmt(NOW - timedelta(minutes=1)),
        "expires_at": fmt(NOW + timedelta(minutes=10)),
    }
    for key, value in overrides.items():
        if value is None:
            doc.pop(key, None)
        else:
            doc[key] = value
    return json.dumps(doc).encode()


def run(argv: list[str], *, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run a tool with a timeout, capturing output."""
    return subprocess.run(argv, input=stdin, capture_output=True, timeout=TIMEOUT_S, check=False)


@attrs.frozen
class KeyPair:
    """An ssh-keygen key made at test time."""

    name: str
    path: Path
    public_line: str

    @property
    def key_type(self) -> str:
        """The public key's type name."""
        return self.public_line.split()[0]

    @property
    def key_b64(self) -> str:
        """The base64 public key."""
        return self.public_line.split()[1]


def keygen(directory: Path, name: str, args: list[str]) -> KeyPair:
    """Make a key with ``ssh-keygen -t … -N ''``."""
    path = directory / name
    result = run([SSH_KEYGEN, "-q", "-N", "", "-C", name, "-f", str(path), *args])
    assert result.returncode == 0, f"ssh-keygen {' '.join(args)}: {result.stderr!r}"
    public_line = (directory / f"{name}.pub").read_text().strip()
    return KeyPair(name=name, path=path, public_line=public_line)


class KeyRing(Mapping[str, KeyPair]):
    """ssh-keygen keys by name, each made on first use and then kept.

    A key type the installed ``ssh-keygen`` cannot make fails only the tests that use it,
    not every test of the session.
    """

    def __init__(self, directory: Path, specs: Mapping[str, list[str]]) -> None:
        self._directory = directory
        self._specs = dict(specs)
        self._made: dict[str, KeyPair] = {}

    def __getitem__(self, name: str) -> KeyPair:
        if name not in self._made:
            self._made[name] = keygen(self._directory, name, self._specs[name])
        return self._made[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._specs)

    def __len__(self) -> int:
        return len(self._specs)


def ssh_supports_dsa() -> bool:
    """Whether the installed OpenSSH still knows ``ssh-dss`` keys (gone since 9.8 or 10.0)."""
    result = run([SSH, "-Q", "key"])
    assert result.returncode == 0, result.stderr
    return "ssh-dss" in result.stdout.decode().split()


def sign(key: KeyPair, message: Path, *, namespace: str = NS, hashalg: str | None = None) -> bytes:
    """Sign ``message`` with ``ssh-keygen -Y sign``; return the armored signature."""
    sig = message.with_name(message.name + ".sig")
    sig.unlink(missing_ok=True)
    extra = ["-O", f"hashalg={hashalg}"] if hashalg else []
    result = run(
        [SSH_KEYGEN, "-Y", "sign", "-n", namespace, "-f", str(key.path), *extra, str(message)]
    )
    assert result.returncode == 0, result.stderr
    return sig.read_bytes()


def keygen_verify(
    allowed_signers: Path,
    principal: str,
    signature: bytes,
    message: bytes,
    workdir: Path,
    *,
    namespace: str = NS,
    verify_time: datetime = NOW,
) -> bool:
    """``ssh-keygen -Y verify`` at ``verify_time``; True if it accepts."""
    sig = workdir / "oracle.sig"
    sig.write_bytes(signature)
    result = run(
        [
            SSH_KEYGEN,
            "-Y",
            "verify",
            "-f",
            str(allowed_signers),
            "-I",
            principal,
            "-n",
            namespace,
            "-s",
            str(sig),
            "-O",
            f"verify-time={verify_time:%Y%m%d%H%M%S}Z",
        ],
        stdin=message,
    )
    return result.returncode == 0


# -- the forge ---------------------------------------------------------------------------


def armor(blob: bytes, width: int = 70) -> bytes:
    """Armor a blob like ssh-keygen."""
    text = base64.b64encode(blob)
    lines = [text[i : i + width] for i in range(0, len(text), width)]
    return (
        b"-----BEGIN SSH SIGNATURE-----\n" + b"\n".join(lines) + b"\n-----END SSH SIGNATURE-----\n"
    )


def forge_signed_data(namespace: str, hash_algorithm: str, message: bytes) -> bytes:
    """The bytes an SSHSIG signature covers, for any hash name ``hashlib`` knows."""
    return (
        b"SSHSIG"
        + encode_string(namespace.encode())
        + encode_string(b"")
        + encode_string(hash_algorithm.encode())
        + encode_string(hashlib.new(hash_algorithm, message).digest())
    )


def sshsig_blob(
    public_key: bytes,
    signature: bytes,
    *,
    namespace: bytes = NS.encode(),
    hash_algorithm: bytes = b"sha512",
    version: int = 1,
    reserved: bytes = b"",
) -> bytes:
    """Assemble an SSHSIG blob from its fields."""
    return (
        b"SSHSIG"
        + version.to_bytes(4, "big")
        + encode_string(public_key)
        + encode_string(namespace)
        + encode_string(reserved)
        + encode_string(hash_algorithm)
        + encode_string(signature)
    )


@attrs.frozen
class SoftSkKey:
    """A software key in the security-key format (no hardware needed to verify)."""

    key_type: str
    public_blob: bytes
    private: ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey = attrs.field(repr=False)
    application: bytes = b"ssh:"

    @property
    def public_line(self) -> str:
        """``type base64`` for allowed_signers."""
        return f"{self.key_type} {base64.b64encode(self.public_blob).decode()}"

    def sign(
        self,
        message: bytes,
        *,
        flags: int = 0x01,
        counter: int = 1,
        hash_algorithm: str = "sha512",
        namespace: str = NS,
    ) -> bytes:
        """Armored SSHSIG over ``message`` as a security key would make it."""
        data = forge_signed_data(namespace, hash_algorithm, message)
        to_sign = (
            hashlib.sha256(self.application).digest()
            + bytes([flags])
            + counter.to_bytes(4, "big")
            + hashlib.sha256(data).digest()
        )
        if isinstance(self.private, ed25519.Ed25519PrivateKey):
            raw = self.private.sign(to_sign)
        else:
            r, s = decode_dss_signature(self.private.sign(to_sign, ec.ECDSA(hashes.SHA256())))
            raw = encode_mpint(r) + encode_mpint(s)
        inner = (
            encode_string(self.key_type.encode())
            + encode_string(raw)
            + bytes([flags])
            + counter.to_bytes(4, "big")
        )
        return armor(
            sshsig_blob(
                self.public_blob,
                inner,
                namespace=namespace.encode(),
                hash_algorithm=hash_algorithm.encode(),
            )
        )


def soft_sk_ed25519() -> SoftSkKey:
    """A fresh software sk-ssh-ed25519 key."""
    private = ed25519.Ed25519PrivateKey.generate()
    pk = private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    key_type = "sk-ssh-ed25519@openssh.com"
    blob = encode_string(key_type.encode()) + encode_string(pk) + encode_string(b"ssh:")
    return SoftSkKey(key_type=key_type, public_blob=blob, private=private)


def soft_sk_ecdsa() -> SoftSkKey:
    """A fresh software sk-ecdsa-sha2-nistp256 key."""
    private = ec.generate_private_key(ec.SECP256R1())
    point = private.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    key_type = "sk-ecdsa-sha2-nistp256@openssh.com"
    blob = (
        encode_string(key_type.encode())
        + encode_string(b"nistp256")
        + encode_string(point)
        + encode_string(b"ssh:")
    )
    return SoftSkKey(key_type=key_type, public_blob=blob, private=private)


@attrs.frozen
class SoftDsaKey:
    """A DSA (``ssh-dss``) key made with ``cryptography``: the agent must refuse it.

    ``ssh-keygen`` 9.8 and later cannot make DSA keys, so the tests never ask it to.
    """

    public_blob: bytes
    private: dsa.DSAPrivateKey = attrs.field(repr=False)
    key_type: str = "ssh-dss"

    @property
    def public_line(self) -> str:
        """``ssh-dss base64`` for allowed_signers."""
        return f"{self.key_type} {base64.b64encode(self.public_blob).decode()}"

    def sign(self, message: bytes, *, hash_algorithm: str = "sha512", namespace: str = NS) -> bytes:
        """Armored SSHSIG over ``message`` as OpenSSH signs with DSA (SHA-1, 160-bit r and s)."""
        data = forge_signed_data(namespace, hash_algorithm, message)
        r, s = decode_dss_signature(
            self.private.sign(data, hashes.SHA1())  # noqa: S303 - the refused legacy form
        )
        raw = r.to_bytes(20, "big") + s.to_bytes(20, "big")
        inner = encode_string(b"ssh-dss") + encode_string(raw)
        return armor(
            sshsig_blob(
                self.public_blob,
                inner,
                namespace=namespace.encode(),
                hash_algorithm=hash_algorithm.encode(),
            )
        )


def soft_dsa() -> SoftDsaKey:
    """A fresh 1024-bit DSA key (the only size OpenSSH ever made for ``ssh-dss``)."""
    private = dsa.generate_private_key(key_size=1024)  # noqa: S505 - the refused legacy key
    numbers = private.public_key().public_numbers()
    params = numbers.parameter_numbers
    blob = (
        encode_string(b"ssh-dss")
        + encode_mpint(params.p)
        + encode_mpint(params.q)
        + encode_mpint(params.g)
        + encode_mpint(numbers.y)
    )
    return SoftDsaKey(public_blob=blob, private=private)


def dearmor_b(text: bytes) -> bytes:
    """Raw blob of an armored signature (test-side, lenient)."""
    body = b"".join(text.strip().split(b"\n")[1:-1])
    return base64.b64decode(body)


def write_signers(path: Path, lines: Mapping[str, str]) -> Path:
    """Write an allowed_signers file from ``{principal_and_options: "type b64"}``."""
    path.write_text("".join(f"{head} {key}\n" for head, key in lines.items()))
    return path
