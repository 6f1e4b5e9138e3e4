"""allowed_signers parsing and lookup: OpenSSH format, our stricter refusals, pattern lists."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from pathlib import Path

import pytest

from felhom_agent.authz import AllowedSignersError, OpRejected, Reason, load_allowed_signers
from felhom_agent.authz.signers import AllowedSigners, match_pattern_list, parse_allowed_signers
from felhom_agent.authz.sshkeys import SshPublicKey, parse_public_key
from felhom_agent.authz.sshsig import parse_blob
from tests.authz.helpers import NOW, VECTORS, KeyPair, KeyRing, dearmor_b, soft_dsa

P = Path("allowed_signers")


def _parse(text: str) -> AllowedSigners:
    return parse_allowed_signers(text, path=P)


@pytest.fixture(scope="module")
def ed(keys: KeyRing) -> str:
    """The ed25519 test key's public line."""
    return keys["ed25519"].public_line


def _key(pair: KeyPair) -> SshPublicKey:
    return parse_public_key(base64.b64decode(pair.key_b64))


def test_comments_blank_lines_and_options(ed: str, keys: KeyRing) -> None:
    """Comments and blank lines are skipped; options, quoting and case are parsed."""
    signers = _parse(
        "# comment\n\n"
        f'"alice@ops,bob@ops" NAMESPACES="felhom-op",Valid-After="20260101Z" {ed} my comment\n'
        f"carol@ops {keys['ecdsa256'].public_line}\n"
    )
    first, second = signers.entries
    assert first.line == 3
    assert first.principals == "alice@ops,bob@ops"
    assert first.namespaces == "felhom-op"
    assert first.valid_after == datetime(2026, 1, 1, tzinfo=UTC)
    assert second.namespaces is None
    assert len(signers.warnings) == 1 and ":4:" in signers.warnings[0]


@pytest.mark.parametrize(
    ("stamp", "expected"),
    [
        ("20261126Z", datetime(2026, 11, 26, tzinfo=UTC)),
        ("202611261005Z", datetime(2026, 11, 26, 10, 5, tzinfo=UTC)),
        ("20261126100507UTC", datetime(2026, 11, 26, 10, 5, 7, tzinfo=UTC)),
    ],
)
def test_timestamp_forms(ed: str, stamp: str, expected: datetime) -> None:
    """valid-before accepts YYYYMMDD, +HHMM and +HHMMSS with a Z or UTC suffix."""
    entry = _parse(f'a@b namespaces="felhom-op",valid-before="{stamp}" {ed}\n').entries[0]
    assert entry.valid_before == expected


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        (
            'a@b cert-authority,namespaces="felhom-op" {ed}',
            "cert-authority lines are not supported",
        ),
        ('a@b valid-before="20260101" {ed}', "add a 'Z'"),
        ('a@b valid-before="20261332Z" {ed}', "not a valid date"),
        ('a@b valid-before="2026Z" {ed}', "expected YYYYMMDD"),
        ('a@b valid-after="20270101Z",valid-before="20260101Z" {ed}', "not after valid-after"),
        ("a@b namespaces=felhom-op {ed}", "double-quoted"),
        ('a@b namespaces="a",namespaces="b" {ed}', "given twice"),
        ("a@b no-touch-required {ed}", "unknown or malformed option"),
        ('a@b namespaces="felhom-op {ed}', "unterminated double quote"),
        ('a@b namespaces="x",,valid-after="20260101Z" {ed}', "empty option"),
        ("a@b ssh-ed25519", "expected 'principals"),
        ("a@b ssh-ed25519 !!!notbase64", "not valid base64"),
        ("a@b ecdsa-sha2-nistp256 {b64}", "does not match the key"),
        ('a"b"c ssh-ed25519 {b64}', "stray double quote"),
    ],
)
def test_invalid_lines_refuse_the_file(ed: str, line: str, fragment: str) -> None:
    """Any invalid line refuses the whole file, with the line number and what to change."""
    text = "# header\n" + line.format(ed=ed, b64=ed.split()[1]) + "\n"
    with pytest.raises(AllowedSignersError) as info:
        _parse(text)
    assert info.value.line == 2
    assert fragment in str(info.value)
    assert str(info.value).startswith("allowed_signers:2: ")


@pytest.mark.parametrize("name", ["dsa", "rsa1024"])
def test_weak_key_lines_refused(keys: KeyRing, name: str) -> None:
    """DSA keys and RSA keys under 2048 bits are refused when the file is loaded."""
    line = soft_dsa().public_line if name == "dsa" else keys[name].public_line
    with pytest.raises(AllowedSignersError, match="remove the line"):
        _parse(f"a@b {line}\n")


def test_unreadable_file(tmp_path: Path) -> None:
    """A missing file is an AllowedSignersError naming the path."""
    with pytest.raises(AllowedSignersError, match="cannot read"):
        load_allowed_signers(tmp_path / "missing")
    (tmp_path / "bin").write_bytes(b"\xff\xfe")
    with pytest.raises(AllowedSignersError, match="UTF-8"):
        load_allowed_signers(tmp_path / "bin")


def test_first_passing_line_wins(ed: str, keys: KeyRing) -> None:
    """The first line that passes key, namespace and window gives the principal."""
    signers = _parse(
        f'git@ops namespaces="git" {ed}\n'
        f'old@ops namespaces="felhom-op",valid-before="20200101Z" {ed}\n'
        f'alice@ops,backup@ops namespaces="felhom-op" {ed}\n'
        f'zed@ops namespaces="felhom-op" {ed}\n'
    )
    key = _key(keys["ed25519"])
    assert signers.authorize(key, namespace="felhom-op", now=NOW) == "alice@ops"
    assert signers.authorize(key, namespace="felhom-op", now=NOW, principal="zed@ops") == "zed@ops"
    assert (
        signers.authorize(key, namespace="felhom-op", now=NOW, principal="backup@ops")
        == "backup@ops"
    )
    with pytest.raises(OpRejected) as info:
        signers.authorize(key, namespace="felhom-op", now=NOW, principal="git@ops")
    assert info.value.reason == Reason.NAMESPACE_NOT_PERMITTED
    with pytest.raises(OpRejected) as info:
        signers.authorize(key, namespace="felhom-op", now=NOW, principal="mallory@ops")
    assert info.value.reason == Reason.SIGNER
    with pytest.raises(OpRejected) as info:
        signers.authorize(_key(keys["untrusted"]), namespace="felhom-op", now=NOW)
    assert info.value.reason == Reason.UNTRUSTED_KEY


def test_wildcard_principal_reported_as_written(ed: str, keys: KeyRing) -> None:
    """A pattern principal is reported literally without a signer, and matches a signer."""
    signers = _parse(f'*@ops.example,!mallory@ops.example namespaces="felhom-op" {ed}\n')
    key = _key(keys["ed25519"])
    assert signers.authorize(key, namespace="felhom-op", now=NOW) == "*@ops.example"
    assert signers.authorize(key, namespace="felhom-op", now=NOW, principal="al@ops.example")
    with pytest.raises(OpRejected):
        signers.authorize(key, namespace="felhom-op", now=NOW, principal="mallory@ops.example")


@pytest.mark.parametrize(
    ("value", "patterns", "expected"),
    [
        ("felhom-op", "felhom-op", True),
        ("felhom-op", "git,felhom-op", True),
        ("felhom-op", "felhom-*", True),
        ("felhom-op", "felhom-o?", True),
        ("felhom-op", "Felhom-op", False),
        ("felhom-op", "*,!felhom-op", False),
        ("felhom-op", "!git", False),
        ("a.b", "a?b", True),
        ("a+b", "a+b", True),
        ("aXb", "a.b", False),
    ],
)
def test_pattern_lists(value: str, patterns: str, expected: bool) -> None:
    """OpenSSH pattern-lists: wildcards, case-sensitive, negation vetoes, regex chars literal."""
    assert match_pattern_list(value, patterns) is expected


def test_vector_signature_key_matches_file(keys: KeyRing) -> None:
    """A key parsed from a signature blob equals the same key parsed from the file."""
    signers = load_allowed_signers(VECTORS / "allowed_signers")
    blob = dearmor_b((VECTORS / "sig/ed25519.sig").read_bytes())
    key = parse_public_key(parse_blob(blob).public_key)
    assert key == signers.entries[0].key
    assert hash(key) == hash(signers.entries[0].key)
    assert key.fingerprint.startswith("SHA256:")
