"""``--verify-op`` end to end with a real ssh-keygen signature."""

from __future__ import annotations

import io
import json
import subprocess
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from felhom_agent.cli import main
from tests.configfiles import base_config, write_config
from tests.support.cli import run_cli


@pytest.fixture
def signed(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A config with an allowed signer, an op for host pve1 and its signature."""
    key = tmp_path / "alice"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "alice",
                    "-f", str(key)], check=True, timeout=30)
    signers = tmp_path / "allowed_signers"
    signers.write_text(f'alice@ops namespaces="felhom-op" {(tmp_path / "alice.pub").read_text()}')
    now = datetime.now(UTC).replace(microsecond=0)
    op = {"v": 1, "op_id": str(uuid.uuid4()), "host_id": "pve1", "kind": "guest.rollback",
          "vmid": 101, "params": {"snapname": "pre-upgrade"}, "irreversible": False,
          "nonce": uuid.uuid4().hex, "issued_at": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
          "expires_at": (now + timedelta(minutes=10)).strftime("%Y-%m-%dT%H:%M:%SZ"),
          "signer": "alice@ops"}
    op_path = tmp_path / "op.json"
    op_path.write_text(json.dumps(op))
    subprocess.run(["ssh-keygen", "-q", "-Y", "sign", "-n", "felhom-op", "-f", str(key),
                    str(op_path)], check=True, timeout=30, capture_output=True)
    data = base_config(tmp_path)
    data["authz"] = {"allowed_signers": str(signers)}
    return write_config(tmp_path, data), op_path, Path(str(op_path) + ".sig")


def test_valid_op_json(signed: tuple[Path, Path, Path]) -> None:
    """A correctly signed op is valid: exit 0 and the JSON with principal, op id, kind, vmid."""
    config, op, sig = signed
    code, out, err = run_cli(["--config", str(config), "--verify-op", str(op),
                              "--signature", str(sig), "--json"])
    assert code == 0, out + err
    doc = json.loads(out)
    assert doc["valid"] is True
    assert doc["principal"] == "alice@ops"
    assert doc["kind"] == "guest.rollback"
    assert doc["vmid"] == 101
    assert doc["op_id"] == json.loads(op.read_text())["op_id"]


def test_valid_op_text(signed: tuple[Path, Path, Path]) -> None:
    """Text output names the principal and summarises the op in one line."""
    config, op, sig = signed
    code, out, _ = run_cli(["--config", str(config), "--verify-op", str(op),
                            "--signature", str(sig)])
    assert code == 0
    assert out.startswith("valid: signed by alice@ops")
    assert "guest.rollback" in out


def test_tampered_op_rejected(signed: tuple[Path, Path, Path]) -> None:
    """One changed byte in the payload is rejected with exit 1 and a reason."""
    config, op, sig = signed
    op.write_text(op.read_text().replace('"vmid": 101', '"vmid": 107'))
    code, out, _ = run_cli(["--config", str(config), "--verify-op", str(op),
                            "--signature", str(sig), "--json"])
    assert code == 1
    doc = json.loads(out)
    assert doc["valid"] is False
    assert doc["reason"]


def test_wrong_host_rejected(signed: tuple[Path, Path, Path]) -> None:
    """An op for another host_id is rejected even though the signature holds."""
    config, op, sig = signed
    out = io.StringIO()
    code = main(["--config", str(config), "--verify-op", str(op), "--signature", str(sig),
                 "--json"], env={"FELHOM_AGENT_HOST_ID": "pve2"}, stdout=out,
                stderr=io.StringIO())
    assert code == 1
    assert "host" in json.loads(out.getvalue())["reason"]


def test_verify_op_needs_signature(signed: tuple[Path, Path, Path]) -> None:
    """--verify-op without --signature is a usage error naming the flag (exit 2)."""
    config, op, _ = signed
    code, _, err = run_cli(["--config", str(config), "--verify-op", str(op)])
    assert code == 2
    assert "--signature" in err


def test_unreadable_op_file_is_exit_2(signed: tuple[Path, Path, Path], tmp_path: Path) -> None:
    """A missing OP_FILE is a usage problem (exit 2) with the path in the message."""
    config, _, sig = signed
    code, out, _ = run_cli(["--config", str(config), "--verify-op", str(tmp_path / "nope.json"),
                            "--signature", str(sig)])
    assert code == 2
    assert "nope.json" in out
