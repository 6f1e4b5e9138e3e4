"""Cross-check against the real ``ssh-keygen -Y verify``: we accept exactly what it accepts.

Keys of every supported type are made at test time with ``ssh-keygen``, ops are signed with
``ssh-keygen -Y sign -n felhom-op``, and every case is verified by both our verifier and
``ssh-keygen -Y verify -O verify-time=<our clock>``. The only allowed differences are the
deliberate ones (sk without user presence, DSA, RSA below 2048 bits) and are asserted as such.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from felhom_agent.authz import (
    AllowedSignersError,
    OpRejected,
    OpVerifier,
    Reason,
    VerifyPolicy,
    load_allowed_signers,
)
from felhom_agent.kinds.registry import SIGNED_KINDS
from tests.authz.conftest import KEY_SPECS
from tests.authz.helpers import (
    NOW,
    KeyRing,
    SoftSkKey,
    keygen_verify,
    make_payload,
    sign,
    soft_dsa,
    soft_sk_ecdsa,
    soft_sk_ed25519,
    ssh_supports_dsa,
)

POLICY = VerifyPolicy(host_id="pve1", kinds=SIGNED_KINDS)

#: scenario -> (allowed_signers options for the key, sign namespace, tamper payload?, trusted?)
SCENARIOS: dict[str, tuple[str, str, bool, bool]] = {
    "valid": ('namespaces="felhom-op"', "felhom-op", False, True),
    "valid-sha256": ('namespaces="felhom-op"', "felhom-op", False, True),
    "no-namespaces-option": ("", "felhom-op", False, True),
    "tampered-payload": ('namespaces="felhom-op"', "felhom-op", True, True),
    "wrong-namespace": ('namespaces="felhom-op"', "git", False, True),
    "namespaces-excludes": ('namespaces="git,file"', "felhom-op", False, True),
    "negated-namespace": ('namespaces="*,!felhom-op"', "felhom-op", False, True),
    "expired-key": ('namespaces="felhom-op",valid-before="20260101Z"', "felhom-op", False, True),
    "not-yet-valid": ('namespaces="felhom-op",valid-after="20270101Z"', "felhom-op", False, True),
    "inside-window": (
        'namespaces="felhom-op",valid-after="20260101Z",valid-before="202611261006Z"',
        "felhom-op",
        False,
        True,
    ),
    "untrusted-key": ('namespaces="felhom-op"', "felhom-op", False, False),
}


def _ours(signers: Path, principal: str, sig: bytes, msg: bytes) -> bool:
    verifier = OpVerifier(signers=load_allowed_signers(signers), policy=POLICY, now=lambda: NOW)
    try:
        verifier.verify(msg, sig, principal=principal)
    except OpRejected:
        return False
    return True


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
@pytest.mark.parametrize("key_name", sorted(KEY_SPECS))
def test_agrees_with_ssh_keygen(
    key_name: str, scenario: str, keys: KeyRing, tmp_path: Path
) -> None:
    """Our verifier accepts a test-time ssh-keygen signature exactly when ssh-keygen does."""
    options, namespace, tamper, trusted = SCENARIOS[scenario]
    key = keys[key_name]
    listed = key if trusted else keys["untrusted"]
    principal = f"op-{key_name}@felhom.test"
    signers = tmp_path / "allowed_signers"
    head = f"{principal} {options}".rstrip()
    signers.write_text(f"{head} {listed.key_type} {listed.key_b64}\n")
    msg_path = tmp_path / "op.json"
    payload = make_payload(7, kind="guest.rollback", params={"snapname": "pre"})
    msg_path.write_bytes(payload)
    hashalg = "sha256" if scenario == "valid-sha256" else None
    sig = sign(key, msg_path, namespace=namespace, hashalg=hashalg)
    if tamper:
        payload = payload.replace(b'"vmid": 101', b'"vmid": 107')
    oracle = keygen_verify(signers, principal, sig, payload, tmp_path)
    ours = _ours(signers, principal, sig, payload)
    assert ours == oracle
    assert ours == (scenario in ("valid", "valid-sha256", "no-namespaces-option", "inside-window"))


def _soft_case(tmp_path: Path, key: SoftSkKey, flags: int) -> tuple[bool, bool, Reason | None]:
    principal = "sk@felhom.test"
    signers = tmp_path / "allowed_signers"
    signers.write_text(f'{principal} namespaces="felhom-op" {key.public_line}\n')
    payload = make_payload(9)
    sig = key.sign(payload, flags=flags, counter=42)
    oracle = keygen_verify(signers, principal, sig, payload, tmp_path)
    verifier = OpVerifier(signers=load_allowed_signers(signers), policy=POLICY, now=lambda: NOW)
    try:
        verifier.verify(payload, sig)
    except OpRejected as err:
        return oracle, False, err.reason
    return oracle, True, None


@pytest.mark.parametrize("make", [soft_sk_ed25519, soft_sk_ecdsa], ids=["sk-ed25519", "sk-ecdsa"])
def test_security_key_types(make: object, tmp_path: Path) -> None:
    """sk-* signatures with user presence verify (and ssh-keygen agrees); without, we refuse."""
    assert callable(make)
    key = make()
    assert isinstance(key, SoftSkKey)
    assert _soft_case(tmp_path, key, 0x01) == (True, True, None)
    assert _soft_case(tmp_path, key, 0x05) == (True, True, None)
    # Deliberate difference: ssh-keygen -Y verify ignores the flags, we require presence.
    assert _soft_case(tmp_path, key, 0x04) == (True, False, Reason.USER_PRESENCE)


@pytest.mark.parametrize("key_name", ["dsa", "rsa1024"])
def test_weak_keys_refused_whatever_ssh_keygen_does(
    key_name: str, keys: KeyRing, tmp_path: Path
) -> None:
    """DSA and RSA-1024 keys are never trusted by the agent, though ssh-keygen accepts them.

    ssh-keygen accepts RSA-1024 and, while OpenSSH still knows ``ssh-dss`` (up to 9.7, or 9.8
    and 9.9 built with DSA), DSA. The DSA key and signature are made with ``cryptography``
    so the test does not depend on the installed ssh-keygen being able to make them.
    """
    payload = make_payload(3)
    if key_name == "dsa":
        dsa_key = soft_dsa()
        public_line, sig = dsa_key.public_line, dsa_key.sign(payload)
        keygen_accepts = ssh_supports_dsa()
    else:
        msg = tmp_path / "op.json"
        msg.write_bytes(payload)
        public_line, sig = keys[key_name].public_line, sign(keys[key_name], msg)
        keygen_accepts = True
    signers = tmp_path / "allowed_signers"
    signers.write_text(f'weak@felhom.test namespaces="felhom-op" {public_line}\n')
    assert keygen_verify(signers, "weak@felhom.test", sig, payload, tmp_path) is keygen_accepts
    with pytest.raises(AllowedSignersError, match=r":1: "):
        load_allowed_signers(signers)
    # And a signature by such a key is refused at the key-type step whatever the trust file.
    other = tmp_path / "other_signers"
    other.write_text(f"x@y {keys['ed25519'].public_line}\n")
    verifier = OpVerifier(signers=load_allowed_signers(other), policy=POLICY, now=lambda: NOW)
    with pytest.raises(OpRejected) as info:
        verifier.verify(payload, sig)
    assert info.value.reason == Reason.KEY_TYPE
