"""The project's own SSHSIG vectors: every case gives the agent result its table expects.

The vectors are in ``tests/authz/vectors/`` and are made by ``scripts/gen-sshsig-vectors``
(real ``ssh-keygen`` keys and signatures; ``cryptography`` for what ssh-keygen cannot make;
see :mod:`tests.authz.gen_vectors`). ``cases.tsv`` columns:

- ``id``: the case, also ``msg/<id>.json`` and ``sig/<id>.sig``;
- ``signers``: the trust file ssh-keygen judged the case with (``core``: ``allowed_signers``,
  ``refused``: ``allowed_signers.refused``, which the agent refuses to load); the agent always
  uses ``allowed_signers``;
- ``principal``: the signer asked for (``-I``);
- ``after``: a case accepted (nonce marked) before this one, or ``-``;
- ``ssh_keygen``: what ``ssh-keygen -Y verify`` said when the vectors were made;
- ``expect``: ``accept`` or the agent's rejection reason.

Clock and limits: now 2026-11-26T10:05:00Z, host pve1, skew 120 s, lifetime 3600 s.
"""

from __future__ import annotations

import base64
import csv
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
from felhom_agent.authz.signers import AllowedSigners, parse_allowed_signers
from felhom_agent.authz.sshkeys import SUPPORTED_KEY_TYPES
from felhom_agent.authz.sshsig import parse_armored
from felhom_agent.authz.sshwire import WireReader
from felhom_agent.kinds.registry import SIGNED_KINDS
from tests.authz.gen_vectors import COLUMNS
from tests.authz.helpers import NOW, VECTORS, keygen_verify, ssh_supports_dsa

POLICY = VerifyPolicy(
    host_id="pve1", max_clock_skew_s=120, max_op_lifetime_s=3600, kinds=SIGNED_KINDS
)
SIGNERS_FILES = {"core": "allowed_signers", "refused": "allowed_signers.refused"}


@attrs.frozen
class Case:
    """One row of cases.tsv."""

    id: str
    signers: str
    principal: str
    after: str
    ssh_keygen: str
    expect: str
    note: str

    @property
    def message(self) -> bytes:
        """The exact payload bytes."""
        return (VECTORS / "msg" / f"{self.id}.json").read_bytes()

    @property
    def signature(self) -> bytes:
        """The armored signature."""
        return (VECTORS / "sig" / f"{self.id}.sig").read_bytes()


def _cases() -> list[Case]:
    with (VECTORS / "cases.tsv").open(newline="") as handle:
        rows = [line for line in handle if not line.startswith("#")]
    return [Case(*row) for row in csv.reader(rows, delimiter="\t")]


CASES = _cases()
BY_ID = {case.id: case for case in CASES}


@pytest.fixture(scope="module")
def signers() -> AllowedSigners:
    """The vectors' trust file, as the agent loads it."""
    return load_allowed_signers(VECTORS / "allowed_signers")


def _open_store(path: Path) -> FileNonceStore:
    return FileNonceStore.open(path, now=NOW, max_clock_skew_s=120, max_op_lifetime_s=3600)


def _outcome(verifier: OpVerifier, case: Case) -> Reason | str:
    try:
        return verifier.verify(case.message, case.signature, principal=case.principal).principal
    except OpRejected as err:
        return err.reason


def _expected(case: Case) -> Reason | str:
    return case.principal if case.expect == "accept" else Reason(case.expect)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_vector_case(case: Case, signers: AllowedSigners, tmp_path: Path) -> None:
    """Each case gives the agent result of its ``expect`` column (the principal on accept).

    A case with ``after`` runs once the other case was accepted and marked, with the same
    nonce store and again with the store reopened from its file (a restart).
    """
    verifier = OpVerifier(signers=signers, policy=POLICY, now=lambda: NOW)
    if case.after == "-":
        assert _outcome(verifier, case) == _expected(case)
        return
    first = BY_ID[case.after]
    store_path = tmp_path / "nonces.log"
    store = _open_store(store_path)
    with_store = attrs.evolve(verifier, nonce_store=store)
    with_store.mark(with_store.verify(first.message, first.signature, principal=first.principal))
    assert _outcome(with_store, case) == _expected(case)
    store.close()
    restarted = attrs.evolve(verifier, nonce_store=_open_store(store_path))
    assert _outcome(restarted, case) == _expected(case)


def _key_type(case: Case) -> str:
    return WireReader(parse_armored(case.signature).public_key).string().decode()


def test_table_covers_every_key_type_and_rule() -> None:
    """Every key type the agent supports has an accepted vector; every signature, trust and
    envelope rule, and each refused key form, has a rejected one."""
    accepted = {_key_type(c) for c in CASES if c.expect == "accept"}
    assert accepted == set(SUPPORTED_KEY_TYPES)
    refused_types = {_key_type(c) for c in CASES if c.expect == Reason.KEY_TYPE}
    assert refused_types == {"ssh-dss", "ssh-rsa", "ssh-ed25519-cert-v01@openssh.com"}
    inner = {c.note.split("inner ")[1][:12] for c in CASES if "inner rsa-sha2-" in c.note}
    assert inner == {"rsa-sha2-256", "rsa-sha2-512"}
    rules = {
        Reason.ARMOR, Reason.BLOB, Reason.TRAILING_DATA, Reason.SIG_VERSION, Reason.NAMESPACE,
        Reason.HASH_ALGORITHM, Reason.KEY_TYPE, Reason.UNTRUSTED_KEY,
        Reason.NAMESPACE_NOT_PERMITTED, Reason.KEY_NOT_YET_VALID, Reason.KEY_EXPIRED,
        Reason.SIGNATURE_TYPE_MISMATCH, Reason.RSA_SHA1, Reason.USER_PRESENCE,
        Reason.BAD_SIGNATURE, Reason.DUPLICATE_MEMBER, Reason.UNKNOWN_FIELD,
        Reason.MISSING_FIELD, Reason.VERSION, Reason.KIND, Reason.HOST_ID, Reason.SIGNER,
        Reason.ISSUED_IN_FUTURE, Reason.EXPIRED, Reason.LIFETIME, Reason.NONCE_REPLAY,
        Reason.OP_ID_REPLAY,
    }
    assert rules <= {Reason(c.expect) for c in CASES if c.expect != "accept"}
    assert [c.id for c in CASES] == list(BY_ID)  # ids are unique


def test_table_header_names_the_columns() -> None:
    """The table says which ssh-keygen made it and lists the columns the tests read."""
    header = [
        line for line in (VECTORS / "cases.tsv").read_text().splitlines()
        if line.startswith("#")
    ]
    assert any("OpenSSH_" in line for line in header)
    assert header[-1] == "# " + "\t".join(COLUMNS)
    assert tuple(f.name for f in attrs.fields(Case)) == COLUMNS


def test_refused_signers_file_is_refused_line_by_line() -> None:
    """The agent refuses to load a trust file with a DSA, an RSA-1024 or a CA line, and
    each of those lines alone is refused with its line number."""
    path = VECTORS / "allowed_signers.refused"
    with pytest.raises(AllowedSignersError) as info:
        load_allowed_signers(path)
    assert info.value.line is not None
    lines = [line for line in path.read_text().splitlines() if not line.startswith("#")]
    assert len(lines) == 3
    for line in lines:
        with pytest.raises(AllowedSignersError, match=r"^allowed_signers:1: "):
            parse_allowed_signers(line + "\n", path=Path("allowed_signers"))


def test_trust_file_keys_are_the_signing_keys(signers: AllowedSigners) -> None:
    """The first line's key is the key inside the ed25519 vector's signature."""
    embedded = parse_armored(BY_ID["ed25519"].signature).public_key
    assert base64.b64encode(embedded).decode() in (VECTORS / "allowed_signers").read_text()
    assert signers.entries[0].principals == "op-ed25519@felhom.test"


#: Where the agent's signature checks deliberately differ from ``ssh-keygen -Y verify``:
#: case -> whether ssh-keygen accepts (None: it depends on the installed OpenSSH).
KNOWN_DIFFERENCES: dict[str, bool | None] = {
    "sk-no-user-presence": True,  # the agent requires the user-presence flag
    "rsa1024": True,  # the agent trusts no RSA key under 2048 bits
    "certificate": True,  # the agent takes plain keys only
    "dsa": None,  # ssh-keygen accepts while OpenSSH still knows ssh-dss; the agent never
}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_signature_layer_matches_live_ssh_keygen(
    case: Case, signers: AllowedSigners, tmp_path: Path
) -> None:
    """The agent's signature checks accept a vector exactly when the installed ssh-keygen
    does, apart from the deliberate differences; ssh-keygen still says what it said when the
    vectors were made (for DSA: whatever this OpenSSH can still verify)."""
    oracle = keygen_verify(
        VECTORS / SIGNERS_FILES[case.signers],
        case.principal,
        case.signature,
        case.message,
        tmp_path,
    )
    verifier = OpVerifier(signers=signers, policy=POLICY, now=lambda: NOW)
    try:
        verifier.verify_signature(case.message, case.signature, now=NOW, principal=case.principal)
        ours = True
    except OpRejected:
        ours = False
    if case.id not in KNOWN_DIFFERENCES:
        assert ours == oracle
        assert case.ssh_keygen == ("valid" if oracle else "invalid")
        return
    assert not ours
    keygen_accepts = KNOWN_DIFFERENCES[case.id]
    assert oracle is (ssh_supports_dsa() if keygen_accepts is None else keygen_accepts)
