"""Makes the project's own SSHSIG vectors in ``tests/authz/vectors/``.

Run it as ``scripts/gen-sshsig-vectors``.

Keys are made with the real ``ssh-keygen`` in a temporary directory and thrown away: only
public keys, messages and signatures are written. What ``ssh-keygen -Y sign`` cannot make is
built with ``cryptography`` (security-key signatures, DSA, the legacy ``ssh-rsa`` SHA-1 form,
a SHA-1 message hash) or derived from a real signature by changing bytes (truncation, a
flipped bit, version and reserved fields, a high-S ECDSA twin, mislabelled signature types).

Every case is then checked with ``ssh-keygen -Y verify`` (at the fixed test clock) and its
result is written to ``cases.tsv`` beside what the agent must answer; the generator stops if
ssh-keygen disagrees with what a case is meant to show, so a broken forge cannot slip in.

Files written (everything in the directory is replaced):

- ``allowed_signers``: the trust file the agent loads for every case;
- ``allowed_signers.refused``: lines the agent refuses to load (DSA, RSA under 2048 bits, a
  ``cert-authority`` line), with which ssh-keygen judges the weak-key and certificate cases;
- ``msg/<id>.json`` and ``sig/<id>.sig`` per case;
- ``cases.tsv``: ``id, signers, principal, after, ssh_keygen, expect, note`` (see
  ``tests/authz/test_vectors.py`` for how each column is used).
"""

from __future__ import annotations

import base64
import json
import shutil
import sys
import tempfile
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import attrs
import cryptography
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

from felhom_agent.authz.sshwire import encode_mpint, encode_string
from tests.authz.helpers import (
    NOW,
    NS,
    SSH,
    SSH_KEYGEN,
    VECTORS,
    KeyPair,
    armor,
    dearmor_b,
    fmt,
    forge_signed_data,
    keygen,
    keygen_verify,
    make_payload,
    run,
    sign,
    soft_dsa,
    soft_sk_ecdsa,
    soft_sk_ed25519,
    sshsig_blob,
)

__all__ = ["COLUMNS", "main"]

#: The columns of ``cases.tsv``.
COLUMNS = ("id", "signers", "principal", "after", "ssh_keygen", "expect", "note")
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


@attrs.frozen
class Case:
    """One vector before it is written.

    Attributes:
        id: the case name (also the file names).
        message: the exact payload bytes given to the verifier.
        signature: the armored SSHSIG.
        principal: the signer asked for (``ssh-keygen -Y verify -I``).
        expect: ``accept`` or the agent's :class:`~felhom_agent.authz.errors.Reason` value.
        keygen_valid: what ``ssh-keygen -Y verify`` must say (True: valid).
        note: what the case shows.
        signers: ``core`` (``allowed_signers``) or ``refused`` (``allowed_signers.refused``)
            for ssh-keygen; the agent always uses ``allowed_signers``.
        after: a case that must have been accepted (and its nonce marked) first, or ``-``.
    """

    id: str
    message: bytes
    signature: bytes
    principal: str
    expect: str
    keygen_valid: bool
    note: str
    signers: str = "core"
    after: str = "-"


@attrs.frozen
class Sshsig:
    """The fields of an SSHSIG blob (test-side parse, for deriving variants)."""

    version: int
    public_key: bytes
    namespace: bytes
    reserved: bytes
    hash_algorithm: bytes
    signature: bytes

    @classmethod
    def parse(cls, armored: bytes) -> Sshsig:
        """Split a well-formed armored signature into its fields."""
        blob = dearmor_b(armored)
        assert blob[:6] == b"SSHSIG"
        version = int.from_bytes(blob[6:10], "big")
        fields: list[bytes] = []
        at = 10
        for _ in range(5):
            size = int.from_bytes(blob[at : at + 4], "big")
            fields.append(blob[at + 4 : at + 4 + size])
            at += 4 + size
        assert at == len(blob)
        return cls(version, *fields)

    def blob(self) -> bytes:
        """The blob again."""
        return sshsig_blob(
            self.public_key,
            self.signature,
            namespace=self.namespace,
            hash_algorithm=self.hash_algorithm,
            version=self.version,
            reserved=self.reserved,
        )

    def armored(self) -> bytes:
        """The armored signature again."""
        return armor(self.blob())


def _strings(data: bytes) -> list[bytes]:
    out: list[bytes] = []
    while data:
        size = int.from_bytes(data[:4], "big")
        out.append(data[4 : 4 + size])
        data = data[4 + size :]
    return out


def _inner(name: bytes, raw: bytes) -> bytes:
    return encode_string(name) + encode_string(raw)


@attrs.define
class Maker:
    """Makes keys, messages and signatures in a private temporary directory."""

    workdir: Path
    counter: int = 0
    keys: dict[str, KeyPair] = attrs.Factory(dict)

    def key(self, name: str, *args: str) -> KeyPair:
        """A new ssh-keygen key (kept by name)."""
        self.keys[name] = keygen(self.workdir, name, list(args))
        return self.keys[name]

    def payload(self, **overrides: object) -> bytes:
        """A fresh valid op payload (unique nonce and op id)."""
        self.counter += 1
        return make_payload(self.counter, **overrides)

    def sign(self, key: KeyPair, message: bytes, **kw: str) -> bytes:
        """``ssh-keygen -Y sign`` over ``message``."""
        path = self.workdir / "message"
        path.write_bytes(message)
        return sign(key, path, **kw)

    def private(self, name: str) -> serialization.SSHPrivateKeyTypes:
        """The cryptography private key of an ssh-keygen key."""
        return serialization.load_ssh_private_key(self.keys[name].path.read_bytes(), None)


def _rsa_forged(maker: Maker, message: bytes, hash_name: str, inner: str) -> bytes:
    private = maker.private("rsa3072")
    assert isinstance(private, rsa.RSAPrivateKey)
    algorithm: hashes.HashAlgorithm = {
        "ssh-rsa": hashes.SHA1(),  # noqa: S303 - the refused legacy form, on purpose
        "rsa-sha2-256": hashes.SHA256(),
        "rsa-sha2-512": hashes.SHA512(),
    }[inner]
    raw = private.sign(forge_signed_data(NS, hash_name, message), padding.PKCS1v15(), algorithm)
    public = base64.b64decode(maker.keys["rsa3072"].public_line.split()[1])
    return armor(
        sshsig_blob(public, _inner(inner.encode(), raw), hash_algorithm=hash_name.encode())
    )


def _signature_cases(maker: Maker, dsa_known: bool) -> list[Case]:
    """Key types, hash forms, byte-level damage, trust-file rules and refused key types."""
    cases: list[Case] = []

    def add(  # noqa: PLR0917 - one row of the table, in column order
        case_id: str, message: bytes, signature: bytes, principal: str, expect: str,
        keygen_valid: bool, note: str, **kw: str,
    ) -> None:
        cases.append(Case(case_id, message, signature, principal, expect, keygen_valid, note,
                          **kw))

    def plain(key: str, **kw: str) -> tuple[bytes, bytes]:
        message = maker.payload()
        return message, maker.sign(maker.keys[key], message, **kw)

    for key, note in [
        ("ed25519", "ssh-ed25519, message hash sha512 (the default)"),
        ("ecdsa256", "ecdsa-sha2-nistp256 (inner ECDSA over SHA-256)"),
        ("ecdsa384", "ecdsa-sha2-nistp384 (inner ECDSA over SHA-384)"),
        ("ecdsa521", "ecdsa-sha2-nistp521 (inner ECDSA over SHA-512)"),
        ("rsa2048", "RSA-2048 (the smallest RSA key trusted), inner rsa-sha2-512"),
        ("rsa3072", "RSA-3072, inner rsa-sha2-512"),
    ]:
        message, sig = plain(key)
        add(key, message, sig, f"op-{key}@felhom.test", "accept", True, note)
    message, sig = plain("ed25519", hashalg="sha256")
    add("ed25519-sha256", message, sig, "op-ed25519@felhom.test", "accept", True,
        "ssh-ed25519 with -O hashalg=sha256")
    message, sig = plain("rsa3072", hashalg="sha256")
    inner = _strings(Sshsig.parse(sig).signature)[0].decode()
    add("rsa3072-sha256", message, sig, "op-rsa3072@felhom.test", "accept", True,
        f"RSA with -O hashalg=sha256 as this ssh-keygen signs it (inner {inner})")
    for hash_name, inner in [("sha256", "rsa-sha2-256"), ("sha256", "rsa-sha2-512"),
                             ("sha512", "rsa-sha2-256")]:
        message = maker.payload()
        add(f"rsa-{hash_name}-{inner}", message, _rsa_forged(maker, message, hash_name, inner),
            "op-rsa3072@felhom.test", "accept", True,
            f"forged: message hash {hash_name}, inner {inner} (RSA's hash comes from the inner "
            "name, not from the message hash)")

    # security keys (software keys in the sk format; no hardware needed to verify)
    message = maker.payload()
    add("sk-ed25519", message, SK_ED.sign(message, flags=0x01, counter=42),
        "sk-ed25519@felhom.test", "accept", True,
        "forged sk-ssh-ed25519@openssh.com, flags 0x01 (user present), counter 42")
    message = maker.payload()
    add("sk-ecdsa", message, SK_EC.sign(message, flags=0x05, counter=7),
        "sk-ecdsa@felhom.test", "accept", True,
        "forged sk-ecdsa-sha2-nistp256@openssh.com, flags 0x05 (present and verified)")
    message = maker.payload()
    add("sk-no-user-presence", message, SK_ED.sign(message, flags=0x00, counter=43),
        "sk-ed25519@felhom.test", "user-presence", True,
        "sk signature without the user-presence flag: ssh-keygen -Y verify accepts it, the "
        "agent does not")

    # damage and variants of a real ed25519 signature
    message, sig = plain("ed25519")
    base = Sshsig.parse(sig)
    blob = base.blob()
    ed = "op-ed25519@felhom.test"
    tampered = message.replace(b'"vmid": 101', b'"vmid": 107')
    assert tampered != message
    add("tampered-payload", tampered, sig, ed, "bad-signature", False,
        "payload changed after signing (vmid 101 -> 107)")
    name, raw = _strings(base.signature)
    flipped = raw[:10] + bytes([raw[10] ^ 0x01]) + raw[11:]
    add("bitflip", message, attrs.evolve(base, signature=_inner(name, flipped)).armored(), ed,
        "bad-signature", False, "one bit of the Ed25519 signature flipped")
    add("truncated-blob", message, armor(blob[:-8]), ed, "blob", False,
        "last 8 bytes of the blob dropped, re-armored")
    lines = sig.splitlines(keepends=True)
    add("truncated-armor", message, b"".join(lines[: len(lines) // 2]), ed, "armor", False,
        "second half of the armored text missing (no END line)")
    add("trailing-data", message, armor(blob + b"\0\0\0\0"), ed, "trailing-data", False,
        "4 bytes after the last field of the blob")
    add("version-2", message, attrs.evolve(base, version=2).armored(), ed,
        "signature-version", False, "SSHSIG version 2 (only 1 is known)")
    add("version-0", message, attrs.evolve(base, version=0).armored(), ed, "accept", True,
        "SSHSIG version 0: not signed, and ssh-keygen only refuses versions above 1")
    add("reserved-nonempty", message, attrs.evolve(base, reserved=b"x").armored(), ed,
        "accept", True, "non-empty reserved field in the blob: not covered by the signature")
    add("sigtype-mismatch", message,
        attrs.evolve(base, signature=_inner(b"rsa-sha2-512", raw)).armored(), ed,
        "signature-type-mismatch", False, "Ed25519 key, inner signature labelled rsa-sha2-512")

    private = maker.private("ed25519")
    assert isinstance(private, ed25519.Ed25519PrivateKey)
    message = maker.payload()
    raw = private.sign(forge_signed_data(NS, "sha1", message))
    add("hashalg-sha1", message,
        attrs.evolve(base, hash_algorithm=b"sha1",
                     signature=_inner(b"ssh-ed25519", raw)).armored(), ed,
        "hash-algorithm", False, "message hash sha1 (only sha256 and sha512 are allowed), "
        "correctly signed")
    message = maker.payload()
    add("rsa-ssh-rsa-sha1", message, _rsa_forged(maker, message, "sha512", "ssh-rsa"),
        "op-rsa3072@felhom.test", "rsa-sha1", False,
        "forged: inner legacy ssh-rsa (PKCS#1 v1.5 over SHA-1), correctly signed")

    message, sig = plain("ecdsa256")
    ec_sig = Sshsig.parse(sig)
    name, raw = _strings(ec_sig.signature)
    r_bytes, s_bytes = _strings(raw)
    high_s = encode_mpint(int.from_bytes(r_bytes, "big")) + encode_mpint(
        P256_ORDER - int.from_bytes(s_bytes, "big"))
    add("ecdsa-high-s", message, attrs.evolve(ec_sig, signature=_inner(name, high_s)).armored(),
        "op-ecdsa256@felhom.test", "accept", True,
        "ECDSA (r, n-s): a second valid signature of the same message (so signature bytes are "
        "never a replay key)")
    add("curve-mismatch", message,
        attrs.evolve(ec_sig, signature=_inner(b"ecdsa-sha2-nistp384", raw)).armored(),
        "op-ecdsa256@felhom.test", "signature-type-mismatch", False,
        "P-256 key, inner signature labelled ecdsa-sha2-nistp384")

    # namespaces, principals, trust windows
    message, sig = plain("ed25519", namespace="file")
    add("wrong-namespace", message, sig, ed, "namespace", False,
        'signed for namespace "file"; the agent verifies "felhom-op"')
    message, sig = plain("ed25519")
    add("namespace-not-permitted", message, sig, "file-signer@felhom.test",
        "namespace-not-permitted", False,
        'right key, but this principal\'s line allows only namespace "file"')
    add("wrong-principal", message, sig, "op-rsa3072@felhom.test", "signer", False,
        "valid signature, but the principal asked for is not this key's")
    message, sig = plain("untrusted")
    add("untrusted-key", message, sig, ed, "untrusted-key", False,
        "valid signature by a key that is not in allowed_signers")
    message, sig = plain("timebound")
    add("key-window-open", message, sig, "op-window@felhom.test", "accept", True,
        "principal line valid-after 2026-01-01, valid-before 2027-01-01: open now")
    add("key-expired", message, sig, "op-expired@felhom.test", "key-expired", False,
        "principal line valid-before 2020-01-01")
    add("key-not-yet-valid", message, sig, "op-notyet@felhom.test", "key-not-yet-valid",
        False, "principal line valid-after 2099-01-01")

    # key types the agent refuses (judged by ssh-keygen with allowed_signers.refused)
    message = maker.payload()
    add("dsa", message, DSA.sign(message), "op-dsa@felhom.test", "key-type", dsa_known,
        "forged ssh-dss (DSA-1024, SHA-1): ssh-keygen accepts it while OpenSSH still knows "
        "DSA; the agent refuses it", signers="refused")
    message, sig = plain("rsa1024")
    add("rsa1024", message, sig, "op-rsa1024@felhom.test", "key-type", True,
        "RSA-1024: ssh-keygen accepts it; the agent refuses RSA under 2048 bits",
        signers="refused")
    message = maker.payload()
    cert = KeyPair("certuser-cert", maker.workdir / "certuser-cert.pub",
                   (maker.workdir / "certuser-cert.pub").read_text().strip())
    add("certificate", message, maker.sign(cert, message), "cert-op@ca.felhom.test",
        "key-type", True, "signed with a user certificate (valid 2020..2099) of a "
        "cert-authority line: the agent does not take certificates", signers="refused")
    return cases


def _envelope_cases(maker: Maker) -> list[Case]:
    """Valid signatures over payloads that break (or keep) one envelope rule each."""
    ed = maker.keys["ed25519"]
    principal = "op-ed25519@felhom.test"
    cases: list[Case] = []

    def add(case_id: str, message: bytes, expect: str, note: str, after: str = "-") -> None:
        cases.append(Case(case_id, message, maker.sign(ed, message), principal, expect, True,
                          note, after=after))

    ok = maker.payload()
    first = json.loads(ok)
    add("env-ok", ok, "accept", "a valid guest.start of 101; first use of its nonce and op id")
    add("env-destroy", maker.payload(kind="guest.destroy", irreversible=True), "accept",
        "guest.destroy with irreversible true")
    add("env-wrong-host", maker.payload(host_id="pve2"), "host-id", "host_id pve2, not pve1")
    add("env-expired", maker.payload(issued_at=fmt(NOW - timedelta(minutes=40)),
                                     expires_at=fmt(NOW - timedelta(minutes=35))),
        "expired", "expires_at 09:30Z, before now (10:05Z)")
    add("env-issued-in-future", maker.payload(issued_at=fmt(NOW + timedelta(minutes=5))),
        "issued-in-future", "issued_at 10:10Z, more than 120 s ahead of now")
    add("env-skew-ok", maker.payload(issued_at=fmt(NOW + timedelta(seconds=90))), "accept",
        "issued_at 90 s ahead of now: inside the 120 s skew")
    add("env-lifetime", maker.payload(issued_at=fmt(NOW - timedelta(minutes=1)),
                                      expires_at=fmt(NOW + timedelta(minutes=119))),
        "lifetime", "expires_at - issued_at = 7200 s, more than 3600 s")
    add("env-unknown-field", maker.payload(comment="hi"), "unknown-field",
        'an extra member "comment"')
    add("env-missing-field", maker.payload(nonce=None), "missing-field", "no nonce member")
    add("env-v2", maker.payload(v=2), "version", "v is 2")
    add("env-unknown-kind", maker.payload(kind="guest.format_disk"), "kind",
        "a kind outside the allow-list")
    duplicate = maker.payload().replace(b'"vmid": 101', b'"vmid": 101, "vmid": 666')
    assert duplicate.count(b'"vmid"') == 2
    add("env-duplicate-member", duplicate, "duplicate-member",
        '"vmid" twice (101 then 666); a plain JSON parser would keep 666')
    add("env-signer-mismatch", maker.payload(signer="op-rsa3072@felhom.test"), "signer",
        "the payload's signer member names a principal that does not trust this key")
    add("env-replay-nonce", maker.payload(nonce=first["nonce"]), "nonce-replay",
        "new op id, the nonce of env-ok (after env-ok was accepted)", after="env-ok")
    add("env-replay-op-id", maker.payload(op_id=first["op_id"]), "op-id-replay",
        "new nonce, the op id of env-ok (after env-ok was accepted)", after="env-ok")
    cases.append(Case("env-replay-same", ok, cases[0].signature, principal, "nonce-replay",
                      True, "env-ok sent again (after it was accepted; also after a restart)",
                      after="env-ok"))
    return cases


SK_ED = soft_sk_ed25519()
SK_EC = soft_sk_ecdsa()
DSA = soft_dsa()


def _signers_files(maker: Maker) -> dict[str, str]:
    def pub(name: str) -> str:
        return " ".join(maker.keys[name].public_line.split()[:2])

    ns = f'namespaces="{NS}"'
    core = [
        "# TEST-ONLY trust file of the project's SSHSIG vectors (made by "
        "scripts/gen-sshsig-vectors; the private keys were thrown away).",
        *(f"op-{k}@felhom.test {ns} {pub(k)}"
          for k in ("ed25519", "ecdsa256", "ecdsa384", "ecdsa521", "rsa2048", "rsa3072")),
        f'file-signer@felhom.test namespaces="file" {pub("ed25519")}',
        f'op-expired@felhom.test {ns},valid-before="20200101Z" {pub("timebound")}',
        f'op-notyet@felhom.test {ns},valid-after="20990101Z" {pub("timebound")}',
        f'op-window@felhom.test {ns},valid-after="20260101Z",valid-before="20270101Z" '
        f'{pub("timebound")}',
        f"sk-ed25519@felhom.test {ns} {SK_ED.public_line}",
        f"sk-ecdsa@felhom.test {ns} {SK_EC.public_line}",
    ]
    refused = [
        "# TEST-ONLY lines the agent refuses to load (ssh-keygen takes them).",
        f"op-dsa@felhom.test {ns} {DSA.public_line}",
        f"op-rsa1024@felhom.test {ns} {pub('rsa1024')}",
        f"*@ca.felhom.test cert-authority,{ns} {pub('ca')}",
    ]
    return {"core": "\n".join(core) + "\n", "refused": "\n".join(refused) + "\n"}


SIGNERS_FILES = {"core": "allowed_signers", "refused": "allowed_signers.refused"}


def generate(out: Path, *, log: Callable[[str], None] = print) -> list[Case]:
    """Make every vector into ``out`` (replacing its contents); return the cases."""
    dsa_known = "ssh-dss" in run([SSH, "-Q", "key"]).stdout.decode().split()
    with tempfile.TemporaryDirectory(prefix="sshsig-vectors-") as tmp:
        maker = Maker(Path(tmp))
        for name, args in [
            ("ed25519", ["-t", "ed25519"]),
            ("ecdsa256", ["-t", "ecdsa", "-b", "256"]),
            ("ecdsa384", ["-t", "ecdsa", "-b", "384"]),
            ("ecdsa521", ["-t", "ecdsa", "-b", "521"]),
            ("rsa2048", ["-t", "rsa", "-b", "2048"]),
            ("rsa3072", ["-t", "rsa", "-b", "3072"]),
            ("rsa1024", ["-t", "rsa", "-b", "1024"]),
            ("untrusted", ["-t", "ed25519"]),
            ("timebound", ["-t", "ed25519"]),
            ("ca", ["-t", "ed25519"]),
            ("certuser", ["-t", "ed25519"]),
        ]:
            maker.key(name, *args)
        made = run([SSH_KEYGEN, "-q", "-s", str(maker.keys["ca"].path), "-I", "test-only",
                    "-n", "cert-op@ca.felhom.test", "-V", "20200101000000Z:20991231000000Z",
                    str(maker.keys["certuser"].path) + ".pub"])
        assert made.returncode == 0, made.stderr
        cases = _signature_cases(maker, dsa_known) + _envelope_cases(maker)
        texts = _signers_files(maker)
        assert len({c.id for c in cases}) == len(cases)

        if out.exists():
            shutil.rmtree(out)
        (out / "msg").mkdir(parents=True)
        (out / "sig").mkdir()
        for kind, name in SIGNERS_FILES.items():
            (out / name).write_text(texts[kind])
        rows = []
        for case in cases:
            (out / "msg" / f"{case.id}.json").write_bytes(case.message)
            (out / "sig" / f"{case.id}.sig").write_bytes(case.signature)
            valid = keygen_verify(out / SIGNERS_FILES[case.signers], case.principal,
                                  case.signature, case.message, maker.workdir)
            if valid != case.keygen_valid:
                raise SystemExit(f"{case.id}: ssh-keygen says {'in' * (not valid)}valid, "
                                 f"the case expects {'in' * (not case.keygen_valid)}valid")
            rows.append((case.id, case.signers, case.principal, case.after,
                         "valid" if valid else "invalid", case.expect, case.note))
    version = run([SSH, "-V"]).stderr.decode().strip()
    header = [
        "# The project's own SSHSIG vectors. Made by scripts/gen-sshsig-vectors (do not edit).",
        f"# ssh-keygen column: {version}, -Y verify at {NOW:%Y-%m-%dT%H:%M:%SZ}; "
        f"forged parts with cryptography {cryptography.__version__}.",
        "# Agent clock 2026-11-26T10:05:00Z, host pve1, skew 120 s, lifetime 3600 s.",
        "# " + "\t".join(COLUMNS),
    ]
    lines = header + ["\t".join(row) for row in rows]
    (out / "cases.tsv").write_text("\n".join(lines) + "\n")
    log(f"wrote {len(cases)} cases to {out} ({version})")
    return cases


def main(argv: list[str]) -> int:
    """``gen-sshsig-vectors [DIR]`` (default: ``tests/authz/vectors``)."""
    out = Path(argv[0]) if argv else VECTORS
    generate(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

