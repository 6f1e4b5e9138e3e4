"""The OpenSSH ``allowed_signers`` trust file: parsing and the lookup ``-Y verify`` does.

Format (``ssh-keygen(1)`` ALLOWED SIGNERS; ``docs/sshsig.md`` ("allowed_signers")): one entry per
line, ``principals [options] keytype base64-key [comment]``; blank lines and ``#`` comments are
ignored. ``principals`` is an OpenSSH pattern-list (``*``, ``?``, ``!`` negation, case-sensitive).
Options are comma-separated, keywords case-insensitive, values double-quoted:
``namespaces="pattern-list"``, ``valid-after="ts"``, ``valid-before="ts"`` and ``cert-authority``.

Where this is stricter than ``ssh-keygen``, on purpose (a privileged agent refuses rather
than guesses):

* the whole file is refused when any line is malformed (``ssh-keygen`` skips such lines and
  keeps going, so a typo silently removes or keeps trust);
* ``cert-authority`` lines are refused with a message saying so: certificates are not
  supported yet; ``ssh-dss`` keys and RSA keys under 2048 bits are refused as well;
* timestamps must carry ``Z`` or ``UTC`` (without it ``ssh-keygen`` uses the verifier's local
  time zone, which differs between hosts).

A line without ``namespaces=`` trusts its key for *every* namespace (git commits, files, …);
that is accepted but listed in :attr:`AllowedSigners.warnings` for the caller to log.

The object is immutable; reloading (SIGHUP) means loading a new one and swapping it in.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, TypeAlias

import attrs

from felhom_agent.authz.errors import AllowedSignersError, OpRejected, Reason
from felhom_agent.authz.sshkeys import SshPublicKey, parse_public_key
from felhom_agent.utc import format_utc

__all__ = ["AllowedSigners", "SignerEntry", "load_allowed_signers", "match_pattern_list"]

MAX_FILE_SIZE: Final = 1 << 20
_Fail: TypeAlias = Callable[[str], AllowedSignersError]
_TS = re.compile(r"(\d{8})(\d{4}(\d{2})?)?(Z|UTC)?")


@attrs.frozen
class SignerEntry:
    """One trusted line of the file.

    Attributes:
        line: 1-based line number (for messages).
        principals: the principal pattern-list exactly as written.
        namespaces: the ``namespaces=`` pattern-list, ``None`` when absent (= every namespace).
        valid_after: the ``valid-after`` instant (inclusive), if any.
        valid_before: the ``valid-before`` instant (inclusive), if any.
        key: the trusted key.
    """

    line: int
    principals: str
    namespaces: str | None
    valid_after: datetime | None
    valid_before: datetime | None
    key: SshPublicKey

    @property
    def first_principal(self) -> str:
        """The principal reported when the payload names none: the first positive pattern."""
        for pattern in self.principals.split(","):
            if not pattern.startswith("!"):
                return pattern
        return self.principals

    def refusal(self, namespace: str, now: datetime) -> OpRejected | None:
        """Why this line does not allow ``namespace`` at ``now``, or ``None`` if it does."""
        if self.namespaces is not None and not match_pattern_list(namespace, self.namespaces):
            return OpRejected(
                Reason.NAMESPACE_NOT_PERMITTED,
                f"allowed_signers line {self.line} does not permit namespace {namespace!r}",
            )
        if self.valid_after is not None and now < self.valid_after:
            return OpRejected(
                Reason.KEY_NOT_YET_VALID,
                f"allowed_signers line {self.line}: key valid only after "
                f"{format_utc(self.valid_after)}",
            )
        if self.valid_before is not None and now > self.valid_before:
            return OpRejected(
                Reason.KEY_EXPIRED,
                f"allowed_signers line {self.line}: key expired at "
                f"{format_utc(self.valid_before)}",
            )
        return None


@attrs.frozen
class AllowedSigners:
    """A parsed allowed_signers file.

    Attributes:
        path: where it was read from.
        entries: the trusted lines, in file order (the first passing line wins).
        warnings: operator hints (e.g. a line without ``namespaces=``), for the caller to log.
    """

    path: Path
    entries: tuple[SignerEntry, ...]
    warnings: tuple[str, ...] = ()

    def authorize(
        self, key: SshPublicKey, *, namespace: str, now: datetime, principal: str | None = None
    ) -> str:
        """Find the principal that ``key`` may sign ``namespace`` for at ``now``.

        Like ``ssh-keygen -Y verify``: lines are tried in order; a line applies when its
        principal pattern-list matches ``principal`` (any line when ``principal`` is
        ``None``) and its key is ``key``; the first applicable line whose ``namespaces=`` and
        validity window pass wins.

        Returns:
            ``principal`` if given, else the winning line's first principal.

        Raises:
            OpRejected: ``UNTRUSTED_KEY`` (no line has this key), ``SIGNER`` (the key is
                listed, but not for ``principal``), or the first applicable line's refusal
                (``NAMESPACE_NOT_PERMITTED``, ``KEY_NOT_YET_VALID``, ``KEY_EXPIRED``).
        """
        key_lines = [entry for entry in self.entries if entry.key == key]
        if not key_lines:
            raise OpRejected(
                Reason.UNTRUSTED_KEY,
                f"{key.key_type} key {key.fingerprint} is not in {self.path}",
            )
        if principal is not None:
            key_lines = [e for e in key_lines if match_pattern_list(principal, e.principals)]
            if not key_lines:
                raise OpRejected(
                    Reason.SIGNER,
                    f"signer {principal!r} is not a principal of key {key.fingerprint} "
                    f"in {self.path}",
                )
        refusals: list[OpRejected] = []
        for entry in key_lines:
            refusal = entry.refusal(namespace, now)
            if refusal is None:
                return principal if principal is not None else entry.first_principal
            refusals.append(refusal)
        raise refusals[0]


def match_pattern_list(value: str, patterns: str) -> bool:
    """OpenSSH ``match_pattern_list``: true if a positive pattern matches and no ``!`` one does."""
    positive = False
    for pattern in patterns.split(","):
        negated = pattern.startswith("!")
        if _match_pattern(value, pattern[1:] if negated else pattern):
            if negated:
                return False
            positive = True
    return positive


def _match_pattern(value: str, pattern: str) -> bool:
    regex = "".join(".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in pattern)
    return re.fullmatch(regex, value, flags=re.DOTALL) is not None


def load_allowed_signers(path: Path) -> AllowedSigners:
    """Read and parse an allowed_signers file.

    Raises:
        AllowedSignersError: unreadable, too large, not UTF-8, or any line invalid/refused.
    """
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_FILE_SIZE + 1)
    except OSError as err:
        raise AllowedSignersError(f"cannot read ({err.strerror})", path=path) from err
    if len(data) > MAX_FILE_SIZE:
        raise AllowedSignersError(f"larger than {MAX_FILE_SIZE} bytes", path=path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise AllowedSignersError("not UTF-8 text", path=path) from err
    return parse_allowed_signers(text, path=path)


def parse_allowed_signers(text: str, *, path: Path) -> AllowedSigners:
    """Parse allowed_signers text; see the module docstring for the rules.

    Raises:
        AllowedSignersError: naming the line and what to change.
    """
    entries: list[SignerEntry] = []
    warnings: list[str] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        entry = _parse_line(line, number, path)
        if entry.namespaces is None:
            warnings.append(
                f"{path}:{number}: no namespaces= option: this key is trusted for every "
                'namespace; add namespaces="felhom-op"'
            )
        entries.append(entry)
    return AllowedSigners(path=path, entries=tuple(entries), warnings=tuple(warnings))


def _parse_line(line: str, number: int, path: Path) -> SignerEntry:
    def fail(message: str) -> AllowedSignersError:
        return AllowedSignersError(message, path=path, line=number)

    tokens = _tokens(line, fail)
    if len(tokens) < 3:
        raise fail("expected 'principals [options] keytype base64-key'")
    principals = _dequote(tokens[0], fail)
    if not principals:
        raise fail("empty principals")
    rest = tokens[1:]
    options: dict[str, str | None] = {}
    if not _looks_like_key_type(rest[0]):
        options = _parse_options(rest[0], fail)
        rest = rest[1:]
    if len(rest) < 2:
        raise fail("missing key type or key")
    key_type, key_b64 = rest[0], rest[1]
    if "cert-authority" in options:
        raise fail(
            "cert-authority lines are not supported (certificates cannot sign ops yet); "
            "remove the line or list each operator's plain public key instead"
        )
    try:
        blob = base64.b64decode(key_b64.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error) as err:
        raise fail("the key is not valid base64") from err
    try:
        key = parse_public_key(blob)
    except OpRejected as err:
        raise fail(f"{err.detail}; remove the line or use a supported key") from err
    if key.key_type != key_type:
        raise fail(f"key type {key_type!r} does not match the key ({key.key_type})")
    valid_after = _timestamp(options.get("valid-after"), "valid-after", fail)
    valid_before = _timestamp(options.get("valid-before"), "valid-before", fail)
    if valid_after and valid_before and valid_before <= valid_after:
        raise fail("valid-before is not after valid-after")
    return SignerEntry(
        line=number,
        principals=principals,
        namespaces=options.get("namespaces"),
        valid_after=valid_after,
        valid_before=valid_before,
        key=key,
    )


_KEY_TYPE = re.compile(r"(ssh|ecdsa|sk|rsa|webauthn)-[A-Za-z0-9@.+-]+")


def _looks_like_key_type(token: str) -> bool:
    # Options contain '=' or are the bare keyword cert-authority; key type names never
    # contain '=' or '"' and start with one of these families.
    return _KEY_TYPE.fullmatch(token) is not None


def _tokens(line: str, fail: _Fail) -> list[str]:
    """Split on whitespace outside double quotes (options and quoted principals)."""
    tokens: list[str] = []
    current: list[str] = []
    quoted = False
    escaped = False
    for ch in line:
        if escaped:
            current.append(ch)
            escaped = False
        elif ch == "\\" and quoted:
            current.append(ch)
            escaped = True
        elif ch == '"':
            current.append(ch)
            quoted = not quoted
        elif ch.isspace() and not quoted:
            if current:
                tokens.append("".join(current))
                current = []
        else:
            current.append(ch)
    if quoted:
        raise fail("unterminated double quote")
    if current:
        tokens.append("".join(current))
    return tokens


def _dequote(token: str, fail: _Fail) -> str:
    if not token.startswith('"'):
        if '"' in token:
            raise fail(f"stray double quote in {token!r}")
        return token
    if len(token) < 2 or not token.endswith('"'):
        raise fail(f"bad quoting in {token!r}")
    inner = token[1:-1]
    out: list[str] = []
    chars = iter(inner)
    for ch in chars:
        if ch == "\\":
            nxt = next(chars, "")
            if nxt != '"':
                raise fail(f"bad escape in {token!r}")
            out.append('"')
        elif ch == '"':
            raise fail(f"bad quoting in {token!r}")
        else:
            out.append(ch)
    return "".join(out)


def _parse_options(token: str, fail: _Fail) -> dict[str, str | None]:
    options: dict[str, str | None] = {}
    for item in _split_commas(token, fail):
        name, sep, value = item.partition("=")
        name = name.lower()
        if name == "cert-authority" and not sep:
            parsed: str | None = None
        elif name in ("namespaces", "valid-after", "valid-before") and sep:
            if not value.startswith('"'):
                raise fail(f'option {name} needs a double-quoted value ({name}="...")')
            parsed = _dequote(value, fail)
        else:
            raise fail(f"unknown or malformed option {item!r}")
        if name in options:
            raise fail(f"option {name} given twice")
        options[name] = parsed
    return options


def _split_commas(token: str, fail: _Fail) -> list[str]:
    items: list[str] = []
    current: list[str] = []
    quoted = False
    escaped = False
    for ch in token:
        if escaped:
            escaped = False
        elif ch == "\\" and quoted:
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == "," and not quoted:
            items.append("".join(current))
            current = []
            continue
        current.append(ch)
    items.append("".join(current))
    if any(not item for item in items):
        raise fail(f"empty option in {token!r}")
    return items


def _timestamp(value: str | None, name: str, fail: _Fail) -> datetime | None:
    if value is None:
        return None
    match = _TS.fullmatch(value)
    if match is None:
        raise fail(f"{name}={value!r}: expected YYYYMMDD[HHMM[SS]]Z")
    if match.group(4) is None:
        raise fail(
            f"{name}={value!r}: add a 'Z' (UTC); without it the time would depend on the "
            "host's time zone"
        )
    digits = match.group(1) + (match.group(2) or "")
    fmt = {8: "%Y%m%d", 12: "%Y%m%d%H%M", 14: "%Y%m%d%H%M%S"}[len(digits)]
    try:
        return datetime.strptime(digits, fmt).replace(tzinfo=UTC)
    except ValueError as err:
        raise fail(f"{name}={value!r}: not a valid date/time") from err
