"""The signed-op payload: strict parsing and the envelope rules, in order.

The payload's members and where these rules sit in the verification are in ``docs/architecture.md``
("Signed operations").

The payload is the exact JSON bytes the operator signed. It is parsed only *after* the
signature over those bytes holds (:mod:`felhom_agent.authz.verifier`), and then checked in
this order, each failure with its own :class:`~felhom_agent.authz.errors.Reason`:

1. size cap (64 KiB), UTF-8, JSON object, **no duplicate member at any depth** (a plain JSON parser
   would silently keep the last ``"vmid"``: E10), no NaN/Infinity (:mod:`felhom_agent.strictjson`);
2. exactly the known members (``signer`` optional): unknown → ``unknown-field``, absent →
   ``missing-field``;
3. ``v == 1``;
4. each member's type and form: ``op_id`` a lowercase canonical UUID, ``kind`` from the
   allow-list, ``vmid`` an integer 100…999999999 (PVE's range) -- or ``null`` for a host kind
   (one of ``host_kinds``: it acts on no guest), and only for one --, ``params`` an object,
   ``irreversible`` a boolean, ``nonce`` 32 lowercase hex digits (128 bits), times exactly
   ``YYYY-MM-DDTHH:MM:SSZ``;
5. ``host_id`` is ours;
6. ``issued_at <= now + max_clock_skew_s``;
7. ``now <= expires_at``;
8. ``issued_at < expires_at`` and ``expires_at - issued_at <= max_op_lifetime_s``.

Replay (nonce, op id) is the nonce store's and the journal's job, after these.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping
from datetime import datetime, timedelta
from typing import Final

import attrs

from felhom_agent import strictjson
from felhom_agent.authz.errors import OpRejected, Reason
from felhom_agent.utc import UTC_PATTERN, format_utc, parse_utc
from felhom_agent.vmids import VMID_RANGE, is_vmid

__all__ = ["MAX_PAYLOAD_SIZE", "SignedOp", "check_envelope", "parse_payload"]

MAX_PAYLOAD_SIZE: Final = 64 * 1024
REQUIRED_FIELDS: Final = (
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
)
OPTIONAL_FIELDS: Final = ("signer",)
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_NONCE = re.compile(r"[0-9a-f]{32}")
_NAME = re.compile(r"[\x21-\x7e]{1,256}")


@attrs.frozen
class SignedOp:
    """A parsed signed operation (the payload's members, typed).

    ``params`` is the JSON object as sent; the executor validates it per ``kind``.
    ``vmid`` is ``None`` exactly for a host kind.
    """

    op_id: str
    host_id: str
    kind: str
    vmid: int | None
    params: Mapping[str, object]
    irreversible: bool
    nonce: str
    issued_at: datetime
    expires_at: datetime
    signer: str | None = None
    v: int = 1

    def summary(self) -> str:
        """One line for humans: kind, vmid, params, op id and expiry."""
        params = json.dumps(self.params, sort_keys=True, separators=(",", ":"))
        if len(params) > 200:
            params = params[:197] + "..."
        flag = " irreversible" if self.irreversible else ""
        target = "host" if self.vmid is None else f"vmid {self.vmid}"
        return (
            f"{self.kind} {target} params {params}{flag} "
            f"(op {self.op_id}, expires {format_utc(self.expires_at)})"
        )


def parse_payload(payload: bytes, *, kinds: Collection[str],
                  host_kinds: Collection[str] = ()) -> SignedOp:
    """Parse and type-check a payload (rules 1 to 4); no policy (host, time) yet.

    Args:
        payload: the exact signed bytes.
        kinds: the signed-op allow-list (the kind registry's signed names, handed in by the
            composition root so that this module needs no knowledge of kinds).
        host_kinds: the kinds that act on no guest; their ``vmid`` must be ``null``, and
            every other kind's must be a vmid.

    Raises:
        OpRejected: with the reason of the first rule that fails.
    """
    if len(payload) > MAX_PAYLOAD_SIZE:
        raise OpRejected(
            Reason.PAYLOAD_TOO_LARGE, f"{len(payload)} bytes (maximum {MAX_PAYLOAD_SIZE})"
        )
    try:
        doc = strictjson.loads(payload.decode("utf-8"))
    except strictjson.DuplicateMember as err:
        raise OpRejected(Reason.DUPLICATE_MEMBER, str(err)) from err
    except strictjson.NonFiniteNumber as err:
        raise OpRejected(Reason.PAYLOAD_JSON, str(err)) from err
    except ValueError as err:  # StrictJsonError, UnicodeDecodeError
        raise OpRejected(Reason.PAYLOAD_JSON, f"not valid UTF-8 JSON: {err}") from err
    if not isinstance(doc, dict):
        raise OpRejected(Reason.PAYLOAD_JSON, "the payload is not a JSON object")
    unknown = sorted(set(doc) - set(REQUIRED_FIELDS) - set(OPTIONAL_FIELDS))
    if unknown:
        raise OpRejected(Reason.UNKNOWN_FIELD, f"unknown member(s) {', '.join(unknown)}")
    missing = [name for name in REQUIRED_FIELDS if name not in doc]
    if missing:
        raise OpRejected(Reason.MISSING_FIELD, f"missing member(s) {', '.join(missing)}")
    version = doc["v"]
    if type(version) is not int or version != 1:
        raise OpRejected(Reason.VERSION, f"v is {version!r}, only 1 is supported")
    kind = doc["kind"]
    if not isinstance(kind, str) or kind not in kinds:
        raise OpRejected(Reason.KIND, f"kind {kind!r} is not one of {', '.join(sorted(kinds))}")
    vmid = doc["vmid"]
    if kind in host_kinds:
        if vmid is not None:
            raise _invalid("vmid", vmid, f"null: {kind} acts on the host, not on a guest")
    elif not is_vmid(vmid):
        raise _invalid("vmid", vmid, f"an integer {VMID_RANGE}")
    params = doc["params"]
    if not isinstance(params, dict):
        raise _invalid("params", params, "a JSON object")
    irreversible = doc["irreversible"]
    if not isinstance(irreversible, bool):
        raise _invalid("irreversible", irreversible, "true or false")
    signer = doc.get("signer")
    if signer is not None and not _is(_NAME, signer):
        raise _invalid("signer", signer, "a principal name (printable, no spaces)")
    host_id = doc["host_id"]
    if not _is(_NAME, host_id):
        raise _invalid("host_id", host_id, "a host name")
    return SignedOp(
        op_id=_checked(doc, "op_id", _UUID, "a lowercase UUID"),
        host_id=host_id,
        kind=kind,
        vmid=vmid,
        params=params,
        irreversible=irreversible,
        nonce=_checked(doc, "nonce", _NONCE, "32 lowercase hex digits"),
        issued_at=_time(doc, "issued_at"),
        expires_at=_time(doc, "expires_at"),
        signer=signer,
    )


def check_envelope(
    op: SignedOp,
    *,
    host_id: str,
    now: datetime,
    max_clock_skew_s: int,
    max_op_lifetime_s: int,
) -> None:
    """Apply the policy rules 5 to 8 to a parsed op.

    Raises:
        OpRejected: ``HOST_ID``, ``ISSUED_IN_FUTURE``, ``EXPIRED`` or ``LIFETIME``.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if op.host_id != host_id:
        raise OpRejected(Reason.HOST_ID, f"op is for host {op.host_id!r}, this is {host_id!r}")
    if op.issued_at > now + timedelta(seconds=max_clock_skew_s):
        raise OpRejected(
            Reason.ISSUED_IN_FUTURE,
            f"issued_at {format_utc(op.issued_at)} is more than {max_clock_skew_s} s after "
            f"now ({format_utc(now)})",
        )
    if now > op.expires_at:
        raise OpRejected(Reason.EXPIRED,
                         f"expired at {format_utc(op.expires_at)} (now {format_utc(now)})")
    lifetime = (op.expires_at - op.issued_at).total_seconds()
    if lifetime <= 0:
        raise OpRejected(Reason.LIFETIME, "expires_at is not after issued_at")
    if lifetime > max_op_lifetime_s:
        raise OpRejected(
            Reason.LIFETIME,
            f"lifetime {int(lifetime)} s exceeds the maximum {max_op_lifetime_s} s",
        )


def _is(pattern: re.Pattern[str], value: object) -> bool:
    return isinstance(value, str) and pattern.fullmatch(value) is not None


def _invalid(name: str, value: object, expected: str) -> OpRejected:
    shown = repr(value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return OpRejected(Reason.FIELD_INVALID, f"{name} is {shown}, expected {expected}")


def _checked(doc: dict[str, object], name: str, pattern: re.Pattern[str], expected: str) -> str:
    value = doc[name]
    if not isinstance(value, str) or pattern.fullmatch(value) is None:
        raise _invalid(name, value, expected)
    return value


def _time(doc: dict[str, object], name: str) -> datetime:
    text = _checked(doc, name, UTC_PATTERN, "YYYY-MM-DDTHH:MM:SSZ")
    try:
        return parse_utc(text)
    except ValueError as err:
        raise _invalid(name, text, "a valid UTC time") from err
