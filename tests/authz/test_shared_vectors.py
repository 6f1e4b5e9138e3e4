"""Cross-check: the shared SSHSIG/envelope vector table gives the expected agent results.

An independent table made outside this project; the project's own vectors are in
``test_vectors.py``. Reads ``testdata/sshsig/cases.tsv`` of the shared reference directory at
test time (never copied); runs only when that directory is found (:mod:`tests.shared_dir`),
otherwise every test here is skipped and the summary says so. Cases run with
``allowed_signers.core`` because the agent refuses to load the full file (it has a
``cert-authority`` and an ``ssh-dss`` line; a separate test checks that refusal), with the
manifest's clock and limits: now 2026-11-26T10:05:00Z, host pve1, skew 120 s, lifetime 3600 s.
"""

from __future__ import annotations

import csv
from datetime import UTC, datetime
from pathlib import Path

import attrs
import pytest

from felhom_agent.authz import (
    AllowedSignersError,
    FileNonceStore,
    OpRejected,
    OpVerifier,
    Reason,
    VerifyPolicy,
    load_allowed_signers,
)
from felhom_agent.authz.signers import AllowedSigners
from felhom_agent.authz.sshkeys import parse_public_key
from felhom_agent.authz.sshsig import parse_armored
from felhom_agent.kinds.registry import SIGNED_KINDS
from tests.authz.helpers import NOW, keygen_verify
from tests.shared_dir import CROSSCHECK, SHARED_DIR, shared_path

pytestmark = CROSSCHECK

#: The shared vector directory (None: absent, and every test here is skipped).
VECTORS_OR_NONE = None if SHARED_DIR is None else SHARED_DIR / "testdata" / "sshsig"


@attrs.frozen
class Case:
    """One row of cases.tsv."""

    id: str
    mode: str
    sig: str
    msg: str
    namespace: str
    principal: str
    opts: str
    ssh_keygen: str
    felhom: str
    note: str


def _cases() -> list[Case]:
    if VECTORS_OR_NONE is None:
        return []
    with (VECTORS_OR_NONE / "cases.tsv").open(newline="") as handle:
        rows = [line for line in handle if not line.startswith("#")]
    return [Case(*row) for row in csv.reader(rows, delimiter="\t")]


CASES = _cases()
#: Without the shared directory: one placeholder per table test, skipped by the marker.
ABSENT = [pytest.param(None, id="no-shared-dir")]


@pytest.fixture(scope="module")
def vectors() -> Path:
    """The shared vector directory."""
    return shared_path("testdata", "sshsig")

#: The reason the agent must give for each rejected signature case (our judgement of the
#: first verification step each case breaks).
S_REASONS: dict[str, Reason] = {
    "S09": Reason.BAD_SIGNATURE,
    "S10": Reason.BAD_SIGNATURE,
    "S11": Reason.BLOB,
    "S12": Reason.ARMOR,
    "S13": Reason.TRAILING_DATA,
    "S14": Reason.SIG_VERSION,
    "S18": Reason.RSA_SHA1,
    "S19": Reason.HASH_ALGORITHM,
    "S20": Reason.NAMESPACE,
    "S21": Reason.NAMESPACE_NOT_PERMITTED,
    "S24": Reason.NAMESPACE_NOT_PERMITTED,
    "S25": Reason.UNTRUSTED_KEY,
    "S26": Reason.UNTRUSTED_KEY,
    "S27": Reason.UNTRUSTED_KEY,
    "S28": Reason.SIGNER,
    "S30": Reason.KEY_EXPIRED,
    "S32": Reason.KEY_NOT_YET_VALID,
    "S34": Reason.KEY_TYPE,
    "S35": Reason.KEY_TYPE,
    "S38": Reason.USER_PRESENCE,
    "S40": Reason.SIGNATURE_TYPE_MISMATCH,
    "S41": Reason.SIGNATURE_TYPE_MISMATCH,
    "S42": Reason.KEY_TYPE,
}
E_REASONS: dict[str, Reason] = {
    "reject: host_id": Reason.HOST_ID,
    "reject: expired": Reason.EXPIRED,
    "reject: issued in the future": Reason.ISSUED_IN_FUTURE,
    "reject: lifetime": Reason.LIFETIME,
    "reject: unknown field": Reason.UNKNOWN_FIELD,
    "reject: v": Reason.VERSION,
    "reject: duplicate member": Reason.DUPLICATE_MEMBER,
    "reject: nonce replay (after E01)": Reason.NONCE_REPLAY,
    "reject: op_id replay (after E01)": Reason.OP_ID_REPLAY,
}


@pytest.fixture(scope="module")
def core_signers(vectors: Path) -> AllowedSigners:
    """The core trust file of the vectors."""
    return load_allowed_signers(vectors / "allowed_signers.core")


def _policy(namespace: str = "felhom-op") -> VerifyPolicy:
    return VerifyPolicy(
        host_id="pve1", namespace=namespace, max_clock_skew_s=120, max_op_lifetime_s=3600,
        kinds=SIGNED_KINDS,
    )


def _verify_time(case: Case) -> datetime:
    if case.opts.startswith("verify-time="):
        stamp = case.opts.removeprefix("verify-time=").rstrip("Z")
        fmt = {8: "%Y%m%d", 12: "%Y%m%d%H%M", 14: "%Y%m%d%H%M%S"}[len(stamp)]
        return datetime.strptime(stamp, fmt).replace(tzinfo=UTC)
    return NOW


def _outcome(
    case: Case, signers: AllowedSigners, vectors: Path, tmp_path: Path
) -> Reason | str:
    """Run the agent's check for a case; the principal on success, else the reason."""
    sig = (vectors / case.sig).read_bytes()
    principal = None if case.principal == "-" else case.principal
    now = _verify_time(case)
    try:
        if case.mode == "find-principals":
            # Key lookup only (no message): which principal the agent would attribute.
            key = parse_public_key(parse_armored(sig).public_key)
            return signers.authorize(key, namespace="felhom-op", now=now)
        msg = (vectors / case.msg).read_bytes()
        verifier = OpVerifier(signers=signers, policy=_policy(case.namespace), now=lambda: now)
        if case.felhom == "n/a":
            # Outside what the agent does (another namespace, a verify-time): check that the
            # signature layer agrees with ssh-keygen.
            return verifier.verify_signature(msg, sig, now=now, principal=principal)[1]
        if case.id in ("E11", "E12", "E13"):
            store_path = tmp_path / "nonces.log"
            first = _open_store(store_path)
            with_store = attrs.evolve(verifier, nonce_store=first)
            e01 = (vectors / "msg/op-ed25519.json").read_bytes()
            accepted = with_store.verify(e01, (vectors / "sig/op-ed25519.sig").read_bytes())
            with_store.mark(accepted)
            first.close()
            # "restart": a new store object reading the same file
            verifier = attrs.evolve(verifier, nonce_store=_open_store(store_path))
        return verifier.verify(msg, sig, principal=principal).principal
    except OpRejected as err:
        return err.reason


def _open_store(path: Path) -> FileNonceStore:
    return FileNonceStore.open(path, now=NOW, max_clock_skew_s=120, max_op_lifetime_s=3600)


@pytest.mark.parametrize("case", CASES or ABSENT, ids=[c.id for c in CASES] or None)
def test_vector_case(
    case: Case, core_signers: AllowedSigners, vectors: Path, tmp_path: Path
) -> None:
    """Each vector case gives the agent result its felhom column (or reason table) expects."""
    result = _outcome(case, core_signers, vectors, tmp_path)
    if case.felhom in ("valid", "accept"):
        assert not isinstance(result, Reason), result
        assert result == case.principal
    elif case.felhom == "invalid":
        assert result == S_REASONS[case.id]
    elif case.felhom.startswith("reject"):
        assert result == E_REASONS[case.felhom]
    elif case.felhom == "valid-or-refused":
        assert result == Reason.KEY_TYPE  # certificates are refused, not half-supported
    else:
        assert case.felhom == "n/a"
        if case.id == "S36":
            assert result == Reason.KEY_TYPE  # a certificate: known, deliberate difference
        else:
            assert case.ssh_keygen == "valid"
            assert not isinstance(result, Reason), result
            if case.mode == "find-principals":
                assert result == "op-ed25519@felhom.test"
            elif case.principal != "-":
                assert result == case.principal


def test_table_has_all_cases() -> None:
    """The table read at test time holds the 55 signature and 13 envelope cases."""
    ids = [c.id for c in CASES]
    assert len([i for i in ids if i.startswith("S")]) == 42
    assert len([i for i in ids if i.startswith("E")]) == 13
    assert len(ids) == len(set(ids))


def test_full_signers_file_is_refused_clearly(vectors: Path) -> None:
    """The full vector trust file is refused, naming the line and the unsupported feature."""
    with pytest.raises(AllowedSignersError) as info:
        load_allowed_signers(vectors / "allowed_signers")
    assert info.value.line is not None
    assert "ssh-dss" in str(info.value) or "cert-authority" in str(info.value)


#: Cases where the agent's signature layer deliberately differs from ssh-keygen 9.2 when both
#: use allowed_signers.core (sk signature without user presence).
KNOWN_DIFFERENCES = {"S38"}
VERIFY_CASES = [c for c in CASES if c.mode == "verify"]


@pytest.mark.parametrize(
    "case", VERIFY_CASES or ABSENT, ids=[c.id for c in VERIFY_CASES] or None
)
def test_signature_layer_matches_live_ssh_keygen(
    case: Case, core_signers: AllowedSigners, vectors: Path, tmp_path: Path
) -> None:
    """Our signature checks (steps 1-5) accept a vector exactly when ssh-keygen, run now, does."""
    sig = (vectors / case.sig).read_bytes()
    msg = (vectors / case.msg).read_bytes()
    now = _verify_time(case)
    oracle = keygen_verify(
        vectors / "allowed_signers.core",
        case.principal,
        sig,
        msg,
        tmp_path,
        namespace=case.namespace,
        verify_time=now,
    )
    verifier = OpVerifier(signers=core_signers, policy=_policy(case.namespace), now=lambda: now)
    try:
        verifier.verify_signature(msg, sig, now=now, principal=case.principal)
        ours = True
    except OpRejected:
        ours = False
    if case.id in KNOWN_DIFFERENCES:
        assert (oracle, ours) == (True, False)
    else:
        assert ours == oracle
