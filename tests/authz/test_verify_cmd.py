"""``--verify-op`` command logic: output shapes (text and JSON), exit codes, dry replay check."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from felhom_agent.authz import (
    FileNonceStore,
    OpVerifier,
    VerifyPolicy,
    load_allowed_signers,
    verify_op_command,
)
from felhom_agent.kinds.registry import SIGNED_KINDS
from tests.authz.helpers import NOW, KeyRing, make_payload, sign

POLICY = VerifyPolicy(host_id="pve1", kinds=SIGNED_KINDS)


@pytest.fixture
def files(keys: KeyRing, tmp_path: Path) -> dict[str, Path]:
    """A trust file, a signed op and its signature."""
    signers = tmp_path / "allowed_signers"
    signers.write_text(f'alice@ops namespaces="felhom-op" {keys["ed25519"].public_line}\n')
    op = tmp_path / "op.json"
    op.write_bytes(make_payload(1, kind="guest.rollback", params={"snapname": "pre-upgrade"}))
    sign(keys["ed25519"], op)
    return {"signers": signers, "op": op, "sig": tmp_path / "op.json.sig"}


def _run(files: dict[str, Path], *, as_json: bool, store: Path | None = None) -> tuple[int, str]:
    return verify_op_command(
        allowed_signers=files["signers"],
        policy=POLICY,
        op_path=files["op"],
        sig_path=files["sig"],
        nonce_store_path=store,
        as_json=as_json,
        now=lambda: NOW,
    )


def test_valid_text(files: dict[str, Path]) -> None:
    """A valid op prints the principal and a one-line summary, exit 0."""
    code, out = _run(files, as_json=False)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("valid: signed by alice@ops (ssh-ed25519 key SHA256:")
    assert lines[1].startswith('guest.rollback vmid 101 params {"snapname":"pre-upgrade"}')
    assert "replay not checked" in out


def test_valid_json(files: dict[str, Path]) -> None:
    """--json prints exactly the design's document for a valid op."""
    code, out = _run(files, as_json=True)
    assert code == 0
    assert json.loads(out) == {
        "valid": True,
        "principal": "alice@ops",
        "op_id": "00000000-0000-4000-8000-000000000001",
        "kind": "guest.rollback",
        "vmid": 101,
    }


def test_rejected(files: dict[str, Path]) -> None:
    """A tampered op is rejected with its reason, exit 1, in text and JSON."""
    files["op"].write_bytes(files["op"].read_bytes().replace(b"101", b"102"))
    code, out = _run(files, as_json=False)
    assert (code, out) == (1, "rejected: bad-signature: signature does not verify")
    code, out = _run(files, as_json=True)
    assert code == 1
    assert json.loads(out) == {"valid": False, "reason": "bad-signature: signature does not verify"}


@pytest.mark.parametrize("broken", ["op", "sig", "signers"])
def test_unreadable_inputs_exit_2(files: dict[str, Path], broken: str) -> None:
    """An unreadable op/signature file or an unusable allowed_signers file exits 2."""
    if broken == "signers":
        files["signers"].write_text("a@b cert-authority ssh-ed25519 AAAA\n")
    else:
        files[broken] = files[broken].with_name("missing")
    code, out = _run(files, as_json=True)
    assert code == 2
    assert json.loads(out)["valid"] is False


def test_store_checked_read_only(files: dict[str, Path], tmp_path: Path) -> None:
    """With a nonce store the check sees replays but never consumes or creates anything."""
    store_path = tmp_path / "nonces.log"
    code, _ = _run(files, as_json=True, store=store_path)
    assert code == 0 and not store_path.exists()

    store = FileNonceStore.open(store_path, now=NOW, max_clock_skew_s=120, max_op_lifetime_s=900)
    code, _ = _run(files, as_json=True, store=store_path)
    assert code == 0  # a dry check twice does not consume the nonce
    verifier = OpVerifier(
        signers=load_allowed_signers(files["signers"]),
        policy=POLICY,
        now=lambda: NOW,
        nonce_store=store,
    )
    verifier.mark(verifier.verify(files["op"].read_bytes(), files["sig"].read_bytes()))
    before = store_path.read_bytes()
    code, out = _run(files, as_json=True, store=store_path)
    assert code == 1
    assert json.loads(out)["reason"].startswith("nonce-replay: ")
    assert store_path.read_bytes() == before
    store.close()

    store_path.write_bytes(b"not a nonce store\n")
    code, out = _run(files, as_json=False, store=store_path)
    assert code == 1
    assert out.startswith("rejected: nonce-store-unavailable: ")
