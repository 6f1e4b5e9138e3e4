"""The ``--demo`` operator: a throwaway ed25519 key that signs one op with real ``ssh-keygen``.

An operator signs ops on their own machine with ``ssh-keygen -Y sign -n felhom-op``
(``docs/architecture.md``, "Signed operations"); the demo does exactly that, with a key made for the
run in the demo's temporary directory, and writes the ``allowed_signers`` line the agent's
``authz.allowed_signers`` points at. There is no fallback: without ``ssh-keygen`` the demo stops
with :class:`SshKeygenMissing` (whose message names the ``openssh-client`` package) -- a signature
made any other way would demonstrate nothing.

The process runner and the tool lookup are injectable; the key has no passphrase and is
deleted with the temporary directory. ``ssh-keygen`` runs with an environment of only
``LC_ALL=C``, so an operator's ``SSH_AUTH_SOCK`` is never consulted.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Final

import attrs

from felhom_agent.errors import AgentError
from felhom_agent.utc import format_utc

__all__ = [
    "DemoSigner",
    "DemoSignerError",
    "RunTool",
    "SigningFailed",
    "SshKeygenMissing",
    "op_payload",
    "run_tool",
]

NAMESPACE: Final = "felhom-op"
TOOL_TIMEOUT_S: Final = 30.0
OP_LIFETIME: Final = timedelta(minutes=10)
_KEY_NAME: Final = "demo-operator"

#: Runs an argv with a timeout and returns the finished process (output captured).
RunTool = Callable[[Sequence[str]], "subprocess.CompletedProcess[bytes]"]


class DemoSignerError(AgentError):
    """The demo could not make its key or sign its op; ``str(err)`` is one line for people."""


class SshKeygenMissing(DemoSignerError, FileNotFoundError):
    """``ssh-keygen`` is not installed (Debian/Proxmox package ``openssh-client``)."""


class SigningFailed(DemoSignerError, RuntimeError):
    """``ssh-keygen`` ran but failed, timed out, or left no output file."""


def run_tool(argv: Sequence[str]) -> subprocess.CompletedProcess[bytes]:
    """Run ``argv`` with no stdin, a minimal environment and :data:`TOOL_TIMEOUT_S`."""
    return subprocess.run(list(argv), stdin=subprocess.DEVNULL, capture_output=True,
                          env={"LC_ALL": "C"}, timeout=TOOL_TIMEOUT_S, check=False)


def op_payload(op: Mapping[str, Any], *, host_id: str, now: datetime, signer: str,
               op_id: str | None = None, nonce: str | None = None) -> str:
    """The exact payload text of a signed op: ``op``'s kind/vmid/params plus a fresh envelope.

    Args:
        op: ``kind``, ``vmid``, ``params`` and optionally ``irreversible``.
        host_id: the agent's ``host_id``.
        now: issue time (UTC, aware); the op expires :data:`OP_LIFETIME` later.
        signer: the principal, as listed in ``allowed_signers``.
        op_id: defaults to a fresh uuid4; nonce: defaults to 128 random bits in hex.
    """
    doc = {
        "v": 1, "op_id": op_id or str(uuid.uuid4()), "host_id": host_id,
        "kind": op["kind"], "vmid": op["vmid"], "params": dict(op.get("params", {})),
        "irreversible": bool(op.get("irreversible", False)),
        "nonce": nonce or secrets.token_hex(16),
        "issued_at": format_utc(now), "expires_at": format_utc(now + OP_LIFETIME), "signer": signer,
    }
    return json.dumps(doc)


@attrs.frozen
class DemoSigner:
    """A key pair in ``directory`` and the ``allowed_signers`` file that trusts it."""

    directory: Path
    principal: str
    ssh_keygen: str
    public_line: str
    run: RunTool = attrs.field(default=run_tool, repr=False)

    @property
    def key_path(self) -> Path:
        """The private key file (no passphrase; lives only in the demo's temp dir)."""
        return self.directory / _KEY_NAME

    @property
    def allowed_signers(self) -> Path:
        """The ``allowed_signers`` file to point ``authz.allowed_signers`` at."""
        return self.directory / "allowed_signers"

    @classmethod
    def create(cls, directory: Path, principal: str, *,
               which: Callable[[str], str | None] = shutil.which,
               run: RunTool = run_tool) -> DemoSigner:
        """Make an ed25519 key with ``ssh-keygen`` and an ``allowed_signers`` line for it.

        Raises:
            SshKeygenMissing: ``which("ssh-keygen")`` found nothing.
            SigningFailed: ``ssh-keygen`` failed or timed out.
        """
        tool = which("ssh-keygen")
        if tool is None:
            raise SshKeygenMissing("ssh-keygen not found: install the openssh-client package "
                                   "(the demo signs its op with ssh-keygen -Y sign)")
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        key = directory / _KEY_NAME
        _checked(run, [tool, "-q", "-t", "ed25519", "-N", "", "-C", principal,
                       "-f", str(key)], "key generation")
        try:
            public_line = key.with_suffix(".pub").read_text(encoding="ascii").strip()
        except OSError as err:
            raise SigningFailed(f"ssh-keygen wrote no public key: {err}") from err
        key_type, key_b64 = public_line.split()[:2]
        signer = cls(directory=directory, principal=principal, ssh_keygen=tool,
                     public_line=f"{key_type} {key_b64}", run=run)
        signer.allowed_signers.write_text(
            f'{principal} namespaces="{NAMESPACE}" {key_type} {key_b64}\n', encoding="ascii")
        return signer

    def sign(self, payload: str) -> str:
        """``ssh-keygen -Y sign -n felhom-op`` over ``payload``; the armored signature.

        Raises:
            SigningFailed: ``ssh-keygen`` failed, timed out or wrote no signature.
        """
        message = self.directory / f"op-{secrets.token_hex(4)}.json"
        message.write_text(payload, encoding="utf-8")
        _checked(self.run, [self.ssh_keygen, "-Y", "sign", "-n", NAMESPACE,
                            "-f", str(self.key_path), str(message)], "signing")
        try:
            return message.with_name(message.name + ".sig").read_text(encoding="ascii")
        except OSError as err:
            raise SigningFailed(f"ssh-keygen wrote no signature: {err}") from err


def _checked(run: RunTool, argv: list[str], what: str) -> None:
    try:
        result = run(argv)
    except subprocess.TimeoutExpired as err:
        raise SigningFailed(f"ssh-keygen {what} timed out after {err.timeout} s") from err
    except OSError as err:
        raise SigningFailed(f"ssh-keygen {what} could not run: {err}") from err
    if result.returncode != 0:
        detail = result.stderr.decode("utf-8", "replace").strip().splitlines()
        raise SigningFailed(f"ssh-keygen {what} failed (exit {result.returncode}): "
                            f"{detail[-1] if detail else 'no message'}")
