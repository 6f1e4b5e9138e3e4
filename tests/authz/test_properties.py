"""Property tests: random mutations are never accepted and only raise our own error type.

Valid signatures are made once with the real ssh-keygen (ed25519, ECDSA P-256, RSA-2048) and
a software sk key; hypothesis then flips, inserts, deletes and truncates bytes of the blob,
the armored text and the payload. A mutated blob may only be accepted if it still encodes
the same key, namespace, hash and signature (the version and reserved fields are not signed,
``docs/sshsig.md`` ("Pitfalls"), item 8).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from felhom_agent.authz import (
    AllowedSigners,
    AllowedSignersError,
    OpRejected,
    OpVerifier,
    Reason,
    VerifyPolicy,
    load_allowed_signers,
)
from felhom_agent.authz.envelope import parse_payload
from felhom_agent.authz.signers import parse_allowed_signers
from felhom_agent.authz.sshkeys import parse_public_key
from felhom_agent.authz.sshsig import SshSignature, parse_blob
from felhom_agent.kinds.registry import SIGNED_KINDS
from tests.authz.helpers import (
    NOW,
    KeyRing,
    armor,
    dearmor_b,
    make_payload,
    sign,
    soft_sk_ecdsa,
)
from tests.support.hypo import examples

SETTINGS = settings(
    max_examples=examples(200),
    # the profile's own suppressions, plus: the module-scoped fixture is read-only here
    suppress_health_check=[*settings().suppress_health_check,
                           HealthCheck.function_scoped_fixture],
)

Signed = tuple[OpVerifier, bytes, bytes]

#: Steps 1-5 of verification (armor, blob, namespace, hash, key, allowed_signers, signature):
#: the only reasons a damaged signature over an intact, valid payload may be rejected for.
SIGNATURE_REASONS = frozenset({
    Reason.SIGNATURE_TOO_LARGE, Reason.ARMOR, Reason.BLOB, Reason.TRAILING_DATA,
    Reason.SIG_VERSION, Reason.NAMESPACE, Reason.HASH_ALGORITHM, Reason.KEY_TYPE,
    Reason.KEY_MALFORMED, Reason.UNTRUSTED_KEY, Reason.NAMESPACE_NOT_PERMITTED,
    Reason.KEY_NOT_YET_VALID, Reason.KEY_EXPIRED, Reason.SIGNATURE_MALFORMED,
    Reason.SIGNATURE_TYPE_MISMATCH, Reason.RSA_SHA1, Reason.USER_PRESENCE,
    Reason.BAD_SIGNATURE,
})
#: What parsing a payload document may reject it for (the envelope checks come later).
PAYLOAD_REASONS = frozenset({
    Reason.PAYLOAD_TOO_LARGE, Reason.PAYLOAD_JSON, Reason.DUPLICATE_MEMBER,
    Reason.UNKNOWN_FIELD, Reason.MISSING_FIELD, Reason.VERSION, Reason.KIND,
    Reason.FIELD_INVALID,
})
#: What a public-key blob may be rejected for.
KEY_REASONS = frozenset({Reason.KEY_TYPE, Reason.KEY_MALFORMED})


@pytest.fixture(scope="module")
def signed(keys: KeyRing, tmp_path_factory: pytest.TempPathFactory) -> list[Signed]:
    """(verifier, payload, armored signature) for several key types, all valid."""
    tmp = tmp_path_factory.mktemp("props")
    sk = soft_sk_ecdsa()
    signers_path = tmp / "allowed_signers"
    signers_path.write_text(
        "".join(
            f'p{name}@ops namespaces="felhom-op" {keys[name].public_line}\n'
            for name in ("ed25519", "ecdsa256", "rsa2048")
        )
        + f'psk@ops namespaces="felhom-op" {sk.public_line}\n'
    )
    verifier = OpVerifier(
        signers=load_allowed_signers(signers_path),
        policy=VerifyPolicy(host_id="pve1", kinds=SIGNED_KINDS),
        now=lambda: NOW,
    )
    out: list[Signed] = []
    for counter, name in enumerate(("ed25519", "ecdsa256", "rsa2048")):
        msg = tmp / f"{name}.json"
        msg.write_bytes(make_payload(counter))
        out.append((verifier, msg.read_bytes(), sign(keys[name], msg)))
    payload = make_payload(9)
    out.append((verifier, payload, sk.sign(payload)))
    for item in out:
        item[0].verify(item[1], item[2])  # all valid to begin with
    return out


@st.composite
def mutations(draw: st.DrawFn, data: bytes) -> bytes:
    """A non-identity mutation of ``data``: flips, inserts, deletes, truncation, appends."""
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate", "append"]))
        pos = draw(st.integers(0, max(len(out) - 1, 0)))
        if kind == "flip" and out:
            out[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set" and out:
            out[pos] = draw(st.integers(0, 255))
        elif kind == "insert":
            out[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete" and out:
            del out[pos : pos + draw(st.integers(1, 8))]
        elif kind == "truncate":
            del out[pos:]
        else:
            out += draw(st.binary(min_size=1, max_size=8))
    return bytes(out)


def _semantics(sig: SshSignature) -> tuple[bytes, bytes, bytes, bytes]:
    return (sig.public_key, sig.namespace, sig.hash_algorithm, sig.signature)


def _check(verifier: OpVerifier, payload: bytes, armored: bytes, original: bytes) -> None:
    try:
        verifier.verify(payload, armored)
    except OpRejected as err:
        assert err.reason in SIGNATURE_REASONS, err
        return
    # Accepted: only if it is the same authorization (unsigned fields aside).
    assert _semantics(parse_blob(dearmor_b(armored))) == _semantics(parse_blob(dearmor_b(original)))


@SETTINGS
@given(data=st.data(), which=st.integers(0, 3))
def test_mutated_blob_never_accepted(signed: list[Signed], data: st.DataObject, which: int) -> None:
    """A mutated SSHSIG blob is rejected (OpRejected, a signature-step reason) unless it
    means the same signature."""
    verifier, payload, sig = signed[which]
    blob = dearmor_b(sig)
    mutated = data.draw(mutations(blob))
    if mutated == blob:
        return
    _check(verifier, payload, armor(mutated), sig)


@SETTINGS
@given(data=st.data(), which=st.integers(0, 3))
def test_mutated_armor_never_accepted(
    signed: list[Signed], data: st.DataObject, which: int
) -> None:
    """A mutated armored text raises OpRejected for a signature-step reason, or decodes to
    the same signature."""
    verifier, payload, sig = signed[which]
    mutated = data.draw(mutations(sig))
    try:
        verifier.verify(payload, mutated)
    except OpRejected as err:
        assert err.reason in SIGNATURE_REASONS, err
        return
    _check(verifier, payload, mutated, sig)


@SETTINGS
@given(data=st.data(), which=st.integers(0, 3))
def test_mutated_payload_never_accepted(
    signed: list[Signed], data: st.DataObject, which: int
) -> None:
    """Any change to the signed payload bytes fails the signature check (OpRejected,
    ``bad-signature``): the payload is never parsed before its signature holds."""
    verifier, payload, sig = signed[which]
    mutated = data.draw(mutations(payload))
    if mutated == payload:
        return
    with pytest.raises(OpRejected) as info:
        verifier.verify(mutated, sig)
    assert info.value.reason is Reason.BAD_SIGNATURE, info.value


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)


@SETTINGS
@given(
    doc=st.dictionaries(
        st.sampled_from(
            [
                "v",
                "op_id",
                "host_id",
                "kind",
                "vmid",
                "params",
                "irreversible",
                "nonce",
                "issued_at",
                "expires_at",
                "signer",
                "extra",
            ]
        ),
        json_values,
    )
)
def test_payload_parser_only_raises_op_rejected(doc: dict[str, object]) -> None:
    """Arbitrary JSON objects over the known member names parse, or raise OpRejected for a
    payload reason."""
    try:
        parse_payload(json.dumps(doc).encode(), kinds=SIGNED_KINDS)
    except OpRejected as err:
        assert err.reason in PAYLOAD_REASONS, err


@SETTINGS
@given(data=st.data())
def test_payload_byte_mutations_only_raise_op_rejected(data: st.DataObject) -> None:
    """Byte-mutated payloads parse or raise OpRejected for a payload reason, nothing else."""
    mutated = data.draw(mutations(make_payload(3, params={"a": [1, {"b": None}]})))
    try:
        parse_payload(mutated, kinds=SIGNED_KINDS)
    except OpRejected as err:
        assert err.reason in PAYLOAD_REASONS, err


@SETTINGS
@given(blob=st.binary(max_size=300))
def test_random_key_blobs(blob: bytes) -> None:
    """Random public-key blobs parse or raise OpRejected as a bad or unsupported key."""
    try:
        parse_public_key(blob)
    except OpRejected as err:
        assert err.reason in KEY_REASONS, err


@SETTINGS
@given(data=st.data())
def test_random_signers_text(signed: list[Signed], data: st.DataObject) -> None:
    """Mutated allowed_signers text parses or raises AllowedSignersError naming the file."""
    signers: AllowedSigners = signed[0][0].signers
    text = signers.path.read_text()
    mutated = data.draw(mutations(text.encode())).decode("utf-8", "replace")
    try:
        parse_allowed_signers(mutated, path=Path("x"))
    except AllowedSignersError as err:
        assert err.path == Path("x") and str(err).startswith("x"), err
        assert err.line is None or 1 <= err.line <= len(mutated.splitlines()) + 1, err
