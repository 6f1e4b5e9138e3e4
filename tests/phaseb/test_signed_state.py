"""Unsigned desired state stays benign; consumed-but-never-run ops; allowed_signers reloads."""

from __future__ import annotations

import errno
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from felhom_agent.authz.nonces import FileNonceStore
from felhom_agent.authz.signers import load_allowed_signers
from felhom_agent.authz.verifier import OpVerifier, VerifyPolicy
from felhom_agent.cli._plan import plan_command
from felhom_agent.compose.root import verify_policy
from felhom_agent.durable import DurabilityError
from felhom_agent.kinds.registry import SIGNED_KINDS
from tests.phaseb.harness import Harness
from tests.phaseb.signing import op_payload

DESIRED = {"generation": 9, "guests": {"101": {"type": "qemu", "state": "stopped",
                                                "config": {"memory": 8192,
                                                           "description": "db server"}}}}
REFUSAL = {"vmid": 101, "kind": "set_config", "reason": "destructive key: memory"}


def test_unsigned_destructive_change_refused_and_reported(harness: Harness,
                                                          tmp_path: Path) -> None:
    """From desired state only the benign key is written; ``memory`` is refused and reported."""
    h = harness
    h.hub.set_desired(DESIRED)
    h.start()
    reports = h.hub.wait_for_reports(1, 10.0)

    def refused_seen() -> bool:
        return any(REFUSAL in (r.body.get("reconcile") or {}).get("refused", [])
                   for r in h.hub.reports())

    while not refused_seen():
        reports = h.hub.wait_for_reports(len(reports) + 1, 10.0)
    assert h.stop() == 0
    config = h.pve.guest(101)["config"]
    assert config["memory"] == "4096"
    assert config["description"].rstrip("\n") == "db server"
    assert [t["type"] for t in h.pve.tasks() if t["id"] == "101"] == ["qmconfig"]
    audit = [json.loads(x) for x in (h.tmp / "state" / "audit.log").read_text().splitlines()]
    assert [a["source"] for a in audit] == ["plan:9"]

    desired = tmp_path / "desired.json"
    desired.write_text(json.dumps(DESIRED))
    code, out = plan_command(h.config(), desired, as_json=True)
    assert code == 1
    assert json.loads(out)["refused"] == [REFUSAL]


def test_op_consumed_before_a_restart_is_reported_failed_not_run(harness: Harness) -> None:
    """An op whose nonce was marked but which never began is reported failed and never run."""
    h = harness
    doc = op_payload("guest.start", 102)
    payload, sig = h.signer.sign(doc)
    config = h.config()
    state = config.state_dir
    state.mkdir(mode=0o700, parents=True, exist_ok=True)
    now = datetime.now(UTC)
    with FileNonceStore.open(state / "nonces.log", now=now, max_clock_skew_s=120,
                             max_op_lifetime_s=900) as store:
        verifier = OpVerifier(signers=load_allowed_signers(config.authz.allowed_signers),
                              policy=VerifyPolicy(host_id="pve1", kinds=SIGNED_KINDS),
                              now=lambda: datetime.now(UTC), nonce_store=store)
        verifier.mark(verifier.verify(payload.encode(), sig))
    h.hub.add_signed_op(payload, sig)
    h.start()
    entry = h.wait_reported([doc["op_id"]])[doc["op_id"]]
    assert h.stop() == 0
    assert entry["state"] == "failed"
    assert "never started; not executed" in entry["reason"]
    assert [t for t in h.pve.tasks() if t["id"] == "102"] == []


def test_allowed_signers_fixed_by_reload(harness: Harness, tmp_path: Path) -> None:
    """A broken allowed_signers refuses ops visibly; after a reload the next op is accepted."""
    h = harness
    good = h.config().authz.allowed_signers.read_text()
    broken = tmp_path / "broken_signers"
    broken.write_text("alice@ops cert-authority ssh-ed25519 AAAA\n")
    cfg = json.loads(h.config_path.read_text())
    cfg["authz"]["allowed_signers"] = str(broken)
    h.config_path.write_text(json.dumps(cfg))
    first = h.deliver(op_payload("guest.start", 102))
    h.start()
    refused = h.wait_reported([first])[first]
    assert refused["state"] == "refused"
    assert refused["reason"].startswith("allowed-signers:")
    broken.write_text(good)
    assert h.wiring is not None
    config = h.config()
    h.wiring.reconfigure(allowed_signers=config.authz.allowed_signers,
                         policy=verify_policy(config))
    second = h.deliver(op_payload("guest.start", 102))
    assert h.wait_reported([second])[second]["state"] == "applied"
    assert h.stop() == 0
    assert h.records.wait_for("allowed signers reloaded", 1.0)


def test_nonce_store_fsync_failure_is_fatal_and_nothing_runs(
        harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """A nonce mark that cannot be made durable stops the agent before the op runs."""
    h = harness
    h.start()

    def broken(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr("felhom_agent.authz.nonces.os.fdatasync", broken)
    h.deliver(op_payload("guest.start", 102))
    assert h.thread is not None
    h.thread.join(20.0)
    assert not h.thread.is_alive()
    assert h.wiring is not None and isinstance(h.wiring.fatal[0], DurabilityError)
    assert h.records.wait_for("durable state could not be written", 1.0)
    assert [t for t in h.pve.tasks() if t["id"] == "102"] == []
    h.consumer.close()
