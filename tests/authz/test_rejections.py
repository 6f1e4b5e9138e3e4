"""Every rejection the issue lists, each asserted with its own reason, on test-time keys."""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from felhom_agent.authz import (
    FileNonceStore,
    OpRejected,
    OpVerifier,
    Reason,
    VerifyPolicy,
    load_allowed_signers,
)
from felhom_agent.authz.sshsig import signed_data
from felhom_agent.authz.sshwire import encode_string
from felhom_agent.kinds.registry import SIGNED_KINDS
from tests.authz.helpers import (
    NOW,
    KeyRing,
    armor,
    dearmor_b,
    fmt,
    make_payload,
    sign,
    sshsig_blob,
)

Signer = Callable[[bytes], bytes]


@pytest.fixture
def signers_file(keys: KeyRing, tmp_path: Path) -> Path:
    """A trust file: ed25519 and rsa3072 for felhom-op, a timebound and a git-only principal."""
    ed, rsa_key = keys["ed25519"], keys["rsa3072"]
    ecdsa = keys["ecdsa256"]
    path = tmp_path / "allowed_signers"
    path.write_text(
        f'alice@ops namespaces="felhom-op" {ed.public_line}\n'
        f'bob@ops namespaces="felhom-op" {rsa_key.public_line}\n'
        f'old@ops namespaces="felhom-op",valid-before="20260101Z" {ecdsa.public_line}\n'
        f'new@ops namespaces="felhom-op",valid-after="20270101Z" {ecdsa.public_line}\n'
        f'git@ops namespaces="git" {keys["ecdsa384"].public_line}\n'
    )
    return path


@pytest.fixture
def sign_with(keys: KeyRing, tmp_path: Path) -> Callable[..., bytes]:
    """Sign a payload with a named test key via ssh-keygen."""

    def _sign(payload: bytes, key: str = "ed25519", namespace: str = "felhom-op") -> bytes:
        msg = tmp_path / "op.json"
        msg.write_bytes(payload)
        return sign(keys[key], msg, namespace=namespace)

    return _sign


def _verifier(signers: Path, store: FileNonceStore | None = None) -> OpVerifier:
    return OpVerifier(
        signers=load_allowed_signers(signers),
        policy=VerifyPolicy(host_id="pve1", max_clock_skew_s=120, max_op_lifetime_s=900,
                            kinds=SIGNED_KINDS),
        now=lambda: NOW,
        nonce_store=store,
    )


def _reason(verifier: OpVerifier, payload: bytes, sig: bytes, principal: str | None = None) -> str:
    with pytest.raises(OpRejected) as info:
        verifier.verify(payload, sig, principal=principal)
    return info.value.reason


def test_valid_op_accepted(signers_file: Path, sign_with: Callable[..., bytes]) -> None:
    """A well-formed op signed by a listed key is accepted with that key's principal."""
    payload = make_payload()
    verified = _verifier(signers_file).verify(payload, sign_with(payload))
    assert verified.principal == "alice@ops"
    assert verified.op.vmid == 101


@pytest.mark.parametrize(
    "case",
    [
        ("wrong namespace", "ed25519", "git", None, Reason.NAMESPACE),
        ("key not listed", "ecdsa521", "felhom-op", None, Reason.UNTRUSTED_KEY),
        ("valid-before passed", "ecdsa256", "felhom-op", "old@ops", Reason.KEY_EXPIRED),
        ("valid-after ahead", "ecdsa256", "felhom-op", "new@ops", Reason.KEY_NOT_YET_VALID),
        ("namespaces excludes", "ecdsa384", "felhom-op", None, Reason.NAMESPACE_NOT_PERMITTED),
        ("principal not for key", "ed25519", "felhom-op", "bob@ops", Reason.SIGNER),
    ],
)
def test_signature_level_rejections(
    case: tuple[str, str, str, str | None, Reason],
    signers_file: Path,
    sign_with: Callable[..., bytes],
) -> None:
    """Namespace, trust-set, validity-window and principal failures each have their reason."""
    name, key, namespace, principal, reason = case
    payload = make_payload()
    sig = sign_with(payload, key=key, namespace=namespace)
    assert _reason(_verifier(signers_file), payload, sig, principal) == reason, name


def test_payload_signer_member_must_match_key(
    signers_file: Path, sign_with: Callable[..., bytes]
) -> None:
    """A payload ``signer`` the key is not listed for is refused; a listed one is reported."""
    verifier = _verifier(signers_file)
    bad = make_payload(signer="bob@ops")
    assert _reason(verifier, bad, sign_with(bad)) == Reason.SIGNER
    good = make_payload(signer="alice@ops")
    assert verifier.verify(good, sign_with(good)).principal == "alice@ops"


def test_tampered_payload(signers_file: Path, sign_with: Callable[..., bytes]) -> None:
    """One changed payload byte breaks the signature."""
    payload = make_payload()
    sig = sign_with(payload)
    tampered = payload.replace(b'"vmid": 101', b'"vmid": 107')
    assert _reason(_verifier(signers_file), tampered, sig) == Reason.BAD_SIGNATURE


def _reblob(sig: bytes, edit: Callable[[bytes], bytes]) -> bytes:
    return armor(edit(dearmor_b(sig)))


@pytest.mark.parametrize(
    ("name", "edit", "reason"),
    [
        (
            "flipped signature bit",
            lambda b: b[:-3] + bytes([b[-3] ^ 0x10]) + b[-2:],
            Reason.BAD_SIGNATURE,
        ),
        ("truncated blob", lambda b: b[:-8], Reason.BLOB),
        ("trailing garbage", lambda b: b + b"\x00junk", Reason.TRAILING_DATA),
        ("bad magic", lambda b: b"SSHSIH" + b[6:], Reason.BLOB),
        ("version 2", lambda b: b[:6] + (2).to_bytes(4, "big") + b[10:], Reason.SIG_VERSION),
    ],
)
def test_blob_level_rejections(
    name: str,
    edit: Callable[[bytes], bytes],
    reason: Reason,
    signers_file: Path,
    sign_with: Callable[..., bytes],
) -> None:
    """Byte-level damage to a real signature blob is rejected with its own reason."""
    payload = make_payload()
    sig = _reblob(sign_with(payload), edit)
    assert _reason(_verifier(signers_file), payload, sig) == reason, name


def test_armor_rejections(signers_file: Path, sign_with: Callable[..., bytes]) -> None:
    """Missing header/footer, bad base64 and text after the footer are armor errors."""
    payload = make_payload()
    sig = sign_with(payload)
    verifier = _verifier(signers_file)
    for broken in (
        b" " + sig,
        sig.replace(b"-----END SSH SIGNATURE-----", b""),
        sig.replace(b"U1NIU0lH", b"U1NIU0l!"),
        sig + b"extra",
        b"",
    ):
        assert _reason(verifier, payload, broken) == Reason.ARMOR


def test_crlf_and_76_column_armor_accepted(
    signers_file: Path, sign_with: Callable[..., bytes]
) -> None:
    """Armor wrapped at 76 columns or with CRLF line ends is accepted (newer OpenSSH)."""
    payload = make_payload()
    blob = dearmor_b(sign_with(payload))
    verifier = _verifier(signers_file)
    verifier.verify(payload, armor(blob, width=76))
    verifier.verify(payload, armor(blob).replace(b"\n", b"\r\n"))


def test_legacy_ssh_rsa_sha1_signature(keys: KeyRing, signers_file: Path) -> None:
    """A correct RSA signature with the legacy SHA-1 ``ssh-rsa`` algorithm is refused."""
    private = serialization.load_ssh_private_key(keys["rsa3072"].path.read_bytes(), None)
    assert isinstance(private, rsa.RSAPrivateKey)
    payload = make_payload()
    raw = private.sign(
        signed_data("felhom-op", "sha512", payload),
        padding.PKCS1v15(),
        hashes.SHA1(),  # noqa: S303 - building the refused legacy form on purpose
    )
    inner = encode_string(b"ssh-rsa") + encode_string(raw)
    pub = base64.b64decode(keys["rsa3072"].key_b64)
    sig = armor(sshsig_blob(pub, inner))
    assert _reason(_verifier(signers_file), payload, sig) == Reason.RSA_SHA1


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"comment": "hi"}, Reason.UNKNOWN_FIELD),
        ({"nonce": None}, Reason.MISSING_FIELD),
        ({"v": 2}, Reason.VERSION),
        ({"v": True}, Reason.VERSION),
        ({"kind": "guest.format_disk"}, Reason.KIND),
        ({"vmid": 99}, Reason.FIELD_INVALID),
        ({"vmid": "101"}, Reason.FIELD_INVALID),
        ({"nonce": "ABC"}, Reason.FIELD_INVALID),
        ({"op_id": "not-a-uuid"}, Reason.FIELD_INVALID),
        ({"irreversible": 0}, Reason.FIELD_INVALID),
        ({"params": []}, Reason.FIELD_INVALID),
        ({"issued_at": "2026-11-26T10:00:00+00:00"}, Reason.FIELD_INVALID),
        ({"host_id": "pve2"}, Reason.HOST_ID),
        (
            {
                "expires_at": fmt(NOW - timedelta(seconds=1)),
                "issued_at": fmt(NOW - timedelta(minutes=5)),
            },
            Reason.EXPIRED,
        ),
        (
            {
                "issued_at": fmt(NOW + timedelta(seconds=121)),
                "expires_at": fmt(NOW + timedelta(minutes=10)),
            },
            Reason.ISSUED_IN_FUTURE,
        ),
        (
            {
                "issued_at": fmt(NOW - timedelta(minutes=1)),
                "expires_at": fmt(NOW + timedelta(seconds=841)),
            },
            Reason.LIFETIME,
        ),
        ({"issued_at": fmt(NOW), "expires_at": fmt(NOW)}, Reason.LIFETIME),
    ],
)
def test_envelope_rejections(
    overrides: dict[str, object],
    reason: Reason,
    signers_file: Path,
    sign_with: Callable[..., bytes],
) -> None:
    """Each envelope rule has its own reason, checked only after the signature holds."""
    payload = make_payload(**overrides)
    assert _reason(_verifier(signers_file), payload, sign_with(payload)) == reason


def test_envelope_edges_accepted(signers_file: Path, sign_with: Callable[..., bytes]) -> None:
    """Exactly max skew ahead, exactly max lifetime, and now == expires_at are all accepted."""
    verifier = _verifier(signers_file)
    for counter, (issued, expires) in enumerate(
        [
            (NOW + timedelta(seconds=120), NOW + timedelta(seconds=900)),
            (NOW - timedelta(seconds=900), NOW),
        ],
    ):
        payload = make_payload(counter, issued_at=fmt(issued), expires_at=fmt(expires))
        verifier.verify(payload, sign_with(payload))


def test_duplicate_member_and_garbage_json(
    signers_file: Path, sign_with: Callable[..., bytes]
) -> None:
    """A duplicated member (even nested) and non-JSON payloads are refused after signing."""
    verifier = _verifier(signers_file)
    dup = make_payload()[:-1] + b', "vmid": 666}'
    assert _reason(verifier, dup, sign_with(dup)) == Reason.DUPLICATE_MEMBER
    nested = make_payload(params={"a": 1}).replace(b'{"a": 1}', b'{"a": 1, "a": 2}')
    assert _reason(verifier, nested, sign_with(nested)) == Reason.DUPLICATE_MEMBER
    for junk in (b"[1, 2]", b"\xff\xfe", b'{"v": NaN}', b"[" * 5000):
        assert _reason(verifier, junk, sign_with(junk)) == Reason.PAYLOAD_JSON


def test_replays_rejected_across_restart(
    signers_file: Path, sign_with: Callable[..., bytes], tmp_path: Path
) -> None:
    """A marked nonce or op id is refused again, also by a new store after a restart."""
    store_path = tmp_path / "nonces.log"

    def open_store() -> FileNonceStore:
        return FileNonceStore.open(store_path, now=NOW, max_clock_skew_s=120, max_op_lifetime_s=900)

    store = open_store()
    verifier = _verifier(signers_file, store)
    payload = make_payload(1)
    sig = sign_with(payload)
    verified = verifier.verify(payload, sig)
    verifier.mark(verified)
    assert _reason(verifier, payload, sig) == Reason.NONCE_REPLAY
    store.close()

    restarted = _verifier(signers_file, open_store())
    assert _reason(restarted, payload, sig) == Reason.NONCE_REPLAY
    same_nonce = make_payload(2, nonce=verified.op.nonce)
    assert _reason(restarted, same_nonce, sign_with(same_nonce)) == Reason.NONCE_REPLAY
    same_op = make_payload(3, op_id=verified.op.op_id)
    assert _reason(restarted, same_op, sign_with(same_op)) == Reason.OP_ID_REPLAY


def test_op_id_with_outcome_rejected(signers_file: Path, sign_with: Callable[..., bytes]) -> None:
    """The journal hook: an op id that already has an outcome is refused."""
    payload = make_payload(4)
    done = {"00000000-0000-4000-8000-000000000004"}
    verifier = OpVerifier(
        signers=load_allowed_signers(signers_file),
        policy=VerifyPolicy(host_id="pve1", kinds=SIGNED_KINDS),
        now=lambda: NOW,
        has_outcome=done.__contains__,
    )
    assert _reason(verifier, payload, sign_with(payload)) == Reason.OP_ID_HAS_OUTCOME


def test_mark_rechecks_expiry_and_outcome(
    signers_file: Path, sign_with: Callable[..., bytes], tmp_path: Path
) -> None:
    """mark() refuses an op that expired or got an outcome since verify(), consuming nothing."""
    store = FileNonceStore.open(
        tmp_path / "nonces.log", now=NOW, max_clock_skew_s=120, max_op_lifetime_s=900
    )
    clock = [NOW]
    done: set[str] = set()
    verifier = OpVerifier(
        signers=load_allowed_signers(signers_file),
        policy=VerifyPolicy(host_id="pve1", kinds=SIGNED_KINDS),
        now=lambda: clock[0],
        nonce_store=store,
        has_outcome=done.__contains__,
    )
    payload = make_payload(6)
    verified = verifier.verify(payload, sign_with(payload))
    done.add(verified.op.op_id)
    with pytest.raises(OpRejected) as info:
        verifier.mark(verified)
    assert info.value.reason == Reason.OP_ID_HAS_OUTCOME
    done.clear()
    clock[0] = verified.op.expires_at + timedelta(seconds=1)
    with pytest.raises(OpRejected) as info:
        verifier.mark(verified)
    assert info.value.reason == Reason.EXPIRED
    assert len(store) == 0


def test_mark_without_store_refuses(signers_file: Path, sign_with: Callable[..., bytes]) -> None:
    """Consuming a nonce without a store is refused rather than silently skipped."""
    payload = make_payload(5)
    verifier = _verifier(signers_file)
    verified = verifier.verify(payload, sign_with(payload))
    with pytest.raises(OpRejected) as info:
        verifier.mark(verified)
    assert info.value.reason == Reason.NONCE_STORE_UNAVAILABLE
