"""Unsigned desired state stays benign; accepted-but-never-sent ops; allowed_signers reloads."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from felhom_agent.authz.nonces import FileNonceStore
from felhom_agent.authz.signers import load_allowed_signers
from felhom_agent.authz.verifier import OpVerifier, VerifyPolicy
from felhom_agent.cli._plan import plan_command
from felhom_agent.kinds.registry import SIGNED_KINDS
from felhom_agent.state.journal import JOURNAL_NAME, encode_line
from felhom_agent.state.journal_records import DEFAULT_KEEP_OUTCOMES
from tests.phaseb.harness import Harness
from tests.phaseb.signing import op_payload
from tests.support.daemon import EIO_AGENT

NONCE_FILE = "nonces.log"

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


def _mark_before_start(h: Harness, doc: dict[str, Any], *, at: datetime) -> tuple[str, str]:
    """Sign ``doc`` and mark its nonce as accepted at ``at``, as a run killed after the mark."""
    payload, sig = h.signer.sign(doc)
    config = h.config()
    state = config.state_dir
    state.mkdir(mode=0o700, parents=True, exist_ok=True)
    with FileNonceStore.open(state / "nonces.log", now=at, max_clock_skew_s=120,
                             max_op_lifetime_s=900) as store:
        verifier = OpVerifier(signers=load_allowed_signers(config.authz.allowed_signers),
                              policy=VerifyPolicy(host_id="pve1", kinds=SIGNED_KINDS),
                              now=lambda: at, nonce_store=store)
        verifier.mark(verifier.verify(payload.encode(), sig))
    return payload, sig


def test_op_accepted_before_a_restart_but_never_sent_runs_once(harness: Harness) -> None:
    """An op whose nonce was marked but which has no journal record runs after the restart."""
    h = harness
    doc = op_payload("guest.start", 102)
    payload, sig = _mark_before_start(h, doc, at=datetime.now(UTC))
    h.hub.add_signed_op(payload, sig)
    h.start()
    entry = h.wait_reported([doc["op_id"]])[doc["op_id"]]
    assert entry["state"] == "applied"
    assert "never sent; running it now" in h.log()
    # The hub keeps delivering it until the report shows the outcome; it ran once.
    h.hub.add_signed_op(payload, sig)
    h.wait_reported([doc["op_id"]])
    assert h.stop() == 0
    assert [t["type"] for t in h.pve.tasks() if t["id"] == "102"] == ["vzstart"]


def test_op_that_expired_before_it_ran_is_reported_failed(harness: Harness) -> None:
    """Marked, never sent, expired by the restart: ``failed`` in one record, nothing sent."""
    h = harness
    now = datetime.now(UTC).replace(microsecond=0)
    issued = now - timedelta(seconds=700)
    doc = op_payload("guest.start", 102, issued_at=issued, lifetime_s=600)
    # Accepted while valid; expired 100 s ago (the store keeps it for the clock skew, 120 s).
    payload, sig = _mark_before_start(h, doc, at=issued + timedelta(seconds=60))
    h.hub.add_signed_op(payload, sig)
    h.start()
    entry = h.wait_reported([doc["op_id"]])[doc["op_id"]]
    assert h.stop() == 0
    assert entry["state"] == "failed"
    assert entry["reason"].startswith("expired before it ran")
    assert [t for t in h.pve.tasks() if t["id"] == "102"] == []
    lines = (h.config().state_dir / "journal.log").read_text().splitlines()
    mine = [json.loads(line.split(" ", 1)[1]) for line in lines if doc["op_id"] in line]
    assert [r["t"] for r in mine] == ["outcome"]


def test_op_whose_records_the_journal_may_have_dropped_is_not_run(harness: Harness) -> None:
    """1000 signed outcomes newer than the acceptance: "no record" is no proof, not run."""
    h = harness
    now = datetime.now(UTC).replace(microsecond=0)
    doc = op_payload("guest.start", 102)
    payload, sig = _mark_before_start(h, doc, at=now - timedelta(seconds=10))
    state = h.config().state_dir
    (state / JOURNAL_NAME).write_bytes(b"".join(
        encode_line({"t": "outcome", "op": f"flood-{i}", "vmid": 101, "kind": "start",
                     "state": "applied", "reason": "", "exitstatus": None,
                     "source": "alice@ops", "time": now.timestamp() - 5})
        for i in range(DEFAULT_KEEP_OUTCOMES)))
    h.hub.add_signed_op(payload, sig)
    h.start()
    entry = h.wait_reported([doc["op_id"]])[doc["op_id"]]
    assert h.stop() == 0
    assert entry["state"] == "refused"
    assert "may no longer hold its records; not run again" in entry["reason"]
    assert [t for t in h.pve.tasks() if t["id"] == "102"] == []


def test_allowed_signers_fixed_by_reload(harness: Harness, tmp_path: Path) -> None:
    """A broken allowed_signers refuses ops visibly; once the file is fixed in place, SIGHUP
    (``systemctl reload``) makes the daemon re-read it and the next op is accepted."""
    h = harness
    good = h.config().authz.allowed_signers.read_text()
    broken = tmp_path / "broken_signers"
    broken.write_text("alice@ops cert-authority ssh-ed25519 AAAA\n")
    h.edit_config(lambda cfg: cfg["authz"].update(allowed_signers=str(broken)))
    first = h.deliver(op_payload("guest.start", 102))
    h.start()
    refused = h.wait_reported([first])[first]
    assert refused["state"] == "refused"
    assert refused["reason"].startswith("allowed-signers:")
    broken.write_text(good)  # same path, new contents
    h.reload()
    assert f"allowed signers reloaded from {broken}" in h.log()
    second = h.deliver(op_payload("guest.start", 102))
    assert h.wait_reported([second])[second]["state"] == "applied"
    assert h.stop() == 0
    assert [t["type"] for t in h.pve.tasks() if t["id"] == "102"] == ["vzstart"]


def test_sighup_applies_the_signers_file_named_in_the_config(
        harness: Harness, tmp_path: Path) -> None:
    """The config is changed to name another allowed_signers file and the daemon gets SIGHUP:
    an op signed by the key added there is accepted, one by the key no longer listed refused."""
    h = harness
    before = h.deliver(op_payload("guest.snapshot", 101, {"snapname": "by-alice"}))
    h.start()
    assert h.wait_reported([before])[before]["state"] == "applied"
    rotated = tmp_path / "rotated_signers"
    rotated.write_text(f'bob@ops namespaces="felhom-op" {h.stranger.key.public_line}\n')
    h.edit_config(lambda cfg: cfg["authz"].update(allowed_signers=str(rotated)))
    h.reload()
    assert "SIGHUP: configuration reloaded" in h.log()
    assert f"allowed signers reloaded from {rotated}" in h.log()
    by_bob = h.deliver(op_payload("guest.snapshot", 101, {"snapname": "by-bob"}),
                       signer=h.stranger)
    by_alice = h.deliver(op_payload("guest.snapshot", 101, {"snapname": "by-alice-2"}))
    found = h.wait_reported([by_bob, by_alice])
    assert h.stop() == 0
    assert found[by_bob]["state"] == "applied", found[by_bob]
    assert found[by_alice]["state"] == "refused"
    assert found[by_alice]["reason"].startswith("untrusted-key:")
    snaps = h.pve.guest(101)["snapshots"]
    assert "by-alice" in snaps and "by-bob" in snaps and "by-alice-2" not in snaps
    audit = [json.loads(x) for x in (h.tmp / "state" / "audit.log").read_text().splitlines()]
    assert {a["op_id"]: a["source"] for a in audit if a["op_id"] in (before, by_bob)} == {
        before: "alice@ops", by_bob: "bob@ops"}


def test_nonce_store_fsync_failure_is_fatal_and_nothing_runs(
        harness: Harness, tmp_path: Path) -> None:
    """A nonce mark that cannot be made durable (EIO from fdatasync) stops the daemon with
    exit status 1 before the op runs."""
    h = harness
    arm = tmp_path / "eio-armed"
    child = h.start(program=[*EIO_AGENT, "--eio-file", NONCE_FILE, "--arm", str(arm), "--"])
    arm.touch()  # from now on, syncing the nonce store fails
    op_id = h.deliver(op_payload("guest.start", 102))
    assert child.wait() == 1
    log = h.log()
    assert "signed ops: durable state could not be written" in log
    assert "exiting with status 1 after a durability failure" in log
    assert (h.tmp / "state" / NONCE_FILE).exists()
    assert [t for t in h.pve.tasks() if t["id"] == "102"] == []
    assert h.reported(op_id) is None
