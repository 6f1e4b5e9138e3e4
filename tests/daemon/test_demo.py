"""``--demo``: the daemon converges the simulated node and the account says how."""

from __future__ import annotations

import io
import json

from felhom_agent.cli._demo import demo_command


def test_demo_converges_and_prints_account() -> None:
    """The text account shows the plan, each action with its UPID, and the final state."""
    out = io.StringIO()
    assert demo_command(out=out) == 0
    text = out.getvalue()
    assert "plan for generation 1: 3 action(s), 0 blocked, 0 refused" in text
    assert ":qmstart:101:" in text and ":vzstop:102:" in text
    assert "description: 'web frontend (managed by felhom)'" in text
    assert "converged in" in text and "daemon exit status 0" in text


def test_demo_json() -> None:
    """--json prints one document: converged, the plan, three applied actions, final state."""
    out = io.StringIO()
    assert demo_command(out=out, as_json=True) == 0
    doc = json.loads(out.getvalue())
    assert doc["converged"] is True and doc["daemon_exit"] == 0
    assert sorted((a["vmid"], a["kind"], a["outcome"]) for a in doc["actions"]) == [
        (100, "set_config", "applied"), (101, "start", "applied"), (102, "stop", "applied")]
    assert {r["vmid"]: r["status"] for r in doc["final"]} == {
        100: "running", 101: "running", 102: "stopped"}
    assert doc["plan"]["generation"] == 1 and len(doc["plan"]["actions"]) == 3
