"""Signed ops made at test time: real ``ssh-keygen`` keys, payloads and ``-Y sign`` signatures."""

from __future__ import annotations

import json
import secrets
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import attrs

from tests.authz.helpers import NS, KeyPair, keygen, sign

__all__ = ["OpSigner", "make_keys", "op_payload"]


def _fmt(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def op_payload(kind: str, vmid: int, params: dict[str, Any] | None = None, *,
               irreversible: bool = False, host_id: str = "pve1",
               issued_at: datetime | None = None, lifetime_s: int = 600,
               **extra: Any) -> dict[str, Any]:
    """A signed-op payload issued now (real clock: the daemon under test uses it) for ``kind``."""
    issued = issued_at if issued_at is not None else datetime.now(UTC).replace(microsecond=0)
    doc: dict[str, Any] = {
        "v": 1, "op_id": str(uuid.uuid4()), "host_id": host_id, "kind": kind, "vmid": vmid,
        "params": params or {}, "irreversible": irreversible, "nonce": secrets.token_hex(16),
        "issued_at": _fmt(issued - timedelta(seconds=5)),
        "expires_at": _fmt(issued + timedelta(seconds=lifetime_s)),
    }
    doc.update(extra)
    return doc


@attrs.frozen
class OpSigner:
    """Signs payload documents with one key via ``ssh-keygen -Y sign`` into ``workdir``."""

    key: KeyPair
    workdir: Path

    def sign(self, doc: dict[str, Any], *, namespace: str = NS) -> tuple[str, str]:
        """Return ``(payload text, armored signature)`` for ``doc``."""
        text = json.dumps(doc)
        message = self.workdir / f"op-{doc.get('op_id', 'x')}-{secrets.token_hex(4)}.json"
        message.write_text(text)
        return text, sign(self.key, message, namespace=namespace).decode("ascii")


def make_keys(directory: Path) -> tuple[KeyPair, KeyPair, Path]:
    """A trusted ed25519 key (principal ``alice@ops``), an untrusted one, allowed_signers."""
    directory.mkdir(parents=True, exist_ok=True)
    trusted = keygen(directory, "alice", ["-t", "ed25519"])
    stranger = keygen(directory, "mallory", ["-t", "ed25519"])
    signers = directory / "allowed_signers"
    signers.write_text(f'alice@ops namespaces="{NS}" {trusted.public_line}\n')
    return trusted, stranger, signers
