"""``python -m felhom_agent.sim pve``: the ready line, SIGTERM handling and exit status 2."""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.sim.helpers import TIMEOUT, pinned_session, scenario_dict

REPO = Path(__file__).resolve().parents[2]


def _spawn(*args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FELHOM_AGENT_")}
    return subprocess.Popen([sys.executable, "-m", "felhom_agent.sim", *args], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _ready_line(proc: subprocess.Popen[str]) -> dict[str, Any]:
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    assert sel.select(timeout=TIMEOUT), "no ready line within the timeout"
    line = proc.stdout.readline()
    data: dict[str, Any] = json.loads(line)
    return data


def _stop(proc: subprocess.Popen[str]) -> tuple[int, str]:
    proc.send_signal(signal.SIGTERM)
    out, _err = proc.communicate(timeout=TIMEOUT)
    return proc.returncode, out


def test_default_program_prints_one_ready_line_and_exits_0_on_sigterm() -> None:
    """Without --scenario the ready line has url, fingerprint, node, token_id, token_secret;
    the token works against the pinned URL; SIGTERM exits 0 with nothing else on stdout."""
    proc = _spawn("pve")
    try:
        ready = _ready_line(proc)
        assert set(ready) == {"url", "fingerprint", "node", "token_id", "token_secret"}
        assert ready["url"].startswith("https://127.0.0.1:") and ready["node"] == "pve1"
        session = pinned_session(ready["fingerprint"],
                                 f"PVEAPIToken={ready['token_id']}={ready['token_secret']}")
        r = session.get(ready["url"] + "/api2/json/nodes/pve1/lxc", timeout=TIMEOUT)
        statuses = {g["vmid"]: g["status"] for g in r.json()["data"]}
        assert statuses == {100: "running", 102: "stopped"}
        r = session.get(ready["url"] + "/api2/json/nodes/pve1/qemu", timeout=TIMEOUT)
        assert {g["vmid"]: g["status"] for g in r.json()["data"]} == {101: "stopped"}
        session.close()
    finally:
        code, rest = _stop(proc)
    assert code == 0 and rest == ""


def test_scenario_program_ready_line_has_no_secret(tmp_path: Path) -> None:
    """With --scenario the ready line is exactly url, fingerprint and node."""
    path = tmp_path / "scen.json"
    path.write_text(json.dumps(scenario_dict(node="pve7")), encoding="utf-8")
    proc = _spawn("pve", "--scenario", str(path), "--listen", "127.0.0.1:0")
    try:
        ready = _ready_line(proc)
        assert set(ready) == {"url", "fingerprint", "node"} and ready["node"] == "pve7"
    finally:
        code, _ = _stop(proc)
    assert code == 0


@pytest.mark.parametrize(
    ("mutate", "key", "value"),
    [
        (lambda d: d["guests"][0].update(type="kvm"), "guests[0].type", "kvm"),
        (lambda d: d.update(workers=0), "workers", "0"),
        (lambda d: d["tokens"][0].update(user_privileges={"/": ["VM.Monitor"]}),
         "tokens[0].user_privileges['/']", "VM.Monitor"),
        (lambda d: d.update(colour="blue"), "colour", "blue"),
    ],
)
def test_malformed_scenario_exits_2_naming_file_key_and_value(
        tmp_path: Path, mutate: Any, key: str, value: str) -> None:
    """A bad scenario exits 2 with one stderr line naming the file, the key and the value."""
    data = scenario_dict()
    mutate(data)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    proc = _spawn("pve", "--scenario", str(path))
    out, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 2 and out == ""
    assert str(path) in err and key in err and value in err, err


def test_invalid_json_and_missing_file_exit_2(tmp_path: Path) -> None:
    """Unparseable JSON and a missing file both exit 2 naming the file."""
    bad = tmp_path / "broken.json"
    bad.write_text("{nope", encoding="utf-8")
    for path in (bad, tmp_path / "missing.json"):
        proc = _spawn("pve", "--scenario", str(path))
        _out, err = proc.communicate(timeout=TIMEOUT)
        assert proc.returncode == 2 and str(path) in err


def test_unknown_subcommand_and_bad_listen_exit_2() -> None:
    """An unknown simulator name, a malformed or non-loopback --listen exits 2."""
    for args in (("nosuch",), ("pve", "--listen", "nonsense"),
                 ("pve", "--listen", "0.0.0.0:8006")):
        proc = _spawn(*args)
        proc.communicate(timeout=TIMEOUT)
        assert proc.returncode == 2, args


def test_hub_subcommand_is_dispatched() -> None:
    """'hub' reaches the hub simulator's program (which needs --scenario: exit 2)."""
    proc = _spawn("hub")
    out, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 2 and out == "" and "scenario" in err
