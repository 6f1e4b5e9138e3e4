"""``felhom-agent --backups [--json]`` against the PVE simulator: entries and exit codes."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from felhom_agent.sim.pve import PveSimulator
from tests.backups.rig import DAY, backup_scenario, policy_guests
from tests.daemon.helpers import agent_config, write_agent_config
from tests.support.cli import run_cli


def _backup(vmid: int, kind: str, age_s: float, **extra: Any) -> dict[str, Any]:
    return {"vmid": vmid, "type": kind, "ctime": int(time.time() - age_s), **extra}


@pytest.fixture
def sim() -> Iterator[PveSimulator]:
    backups = [_backup(100, "lxc", 3600), _backup(101, "qemu", 3 * DAY),
               _backup(102, "lxc", DAY / 2)]
    with PveSimulator(backup_scenario(local_backups=backups)) as s:
        yield s
        assert s.internal_errors == []


def _run(tmp: Path, sim: PveSimulator, guests: dict[str, Any], *, as_json: bool
         ) -> tuple[int, str]:
    desired = tmp / "desired.json"
    desired.write_text(json.dumps({"generation": 1, "guests": guests}))
    config = write_agent_config(tmp, agent_config(tmp, sim,
                                                  reconcile={"desired_file": str(desired)}))
    code, out, err = run_cli(["--config", str(config), "--backups",
                              *(["--json"] if as_json else [])])
    assert err == "" or code == 2, err
    return code, out


def test_all_fine_exits_0_with_the_json_shape(tmp_path: Path, sim: PveSimulator) -> None:
    """Fresh backups under their policies: exit 0; ``--json`` has ``ok``, the ``backup``
    entries, ``pbs`` and ``errors``; a guest with backups but no policy is ``no_policy``."""
    code, out = _run(tmp_path, sim, policy_guests({100: "lxc"}), as_json=True)
    doc = json.loads(out)
    assert code == 0 and doc["ok"] is True and doc["errors"] == []
    assert set(doc) == {"ok", "backup", "pbs", "errors"}
    entries = {e["vmid"]: e for e in doc["backup"]}
    assert entries[100]["status"] == "ok" and entries[100]["count"] == 1
    assert set(entries[100]) == {"vmid", "type", "storage", "policy", "last", "count",
                                 "status", "reason", "next_due_at"}
    assert set(entries[100]["last"]) == {"volid", "ctime", "size", "verified", "protected",
                                         "encrypted"}
    assert entries[100]["last"]["verified"] == "none"
    assert entries[101]["status"] == "no_policy" and entries[101]["policy"] is None
    assert [p["storage"] for p in doc["pbs"]] == ["pbs1"]
    code, text = _run(tmp_path, sim, policy_guests({100: "lxc"}), as_json=False)
    assert code == 0 and text.splitlines()[-1] == "backups: 3 guest(s), all fine"


def test_an_overdue_guest_exits_1(tmp_path: Path, sim: PveSimulator) -> None:
    """101's newest backup is three days old under ``every_h`` 24: overdue, exit 1; 102's is
    12 h old under ``every_h`` 8: due but not overdue."""
    guests = policy_guests({100: "lxc", 102: "lxc"})
    guests["102"]["backup"]["every_h"] = 8
    guests.update(policy_guests({101: "qemu"}))
    code, text = _run(tmp_path, sim, guests, as_json=False)
    assert code == 1
    line = next(x for x in text.splitlines() if x.split()[:1] == ["101"])
    assert "DUE" in line and "OVERDUE" in line
    assert "OVERDUE" not in next(x for x in text.splitlines() if x.split()[:1] == ["102"])
    assert text.splitlines()[-1] == "backups: 1 of 3 guest(s) need attention (101)"
    code, out = _run(tmp_path, sim, guests, as_json=True)
    doc = json.loads(out)
    assert code == 1 and doc["ok"] is False
    assert {e["vmid"]: e["status"] for e in doc["backup"]} == {100: "ok", 101: "due",
                                                               102: "due"}


def test_a_stale_lock_exits_1(tmp_path: Path, sim: PveSimulator) -> None:
    """A ``backup`` lock with no vzdump running: ``stale_lock`` naming ``pct unlock``."""
    sim.set_lock(100, "backup")
    code, out = _run(tmp_path, sim, policy_guests({100: "lxc"}), as_json=True)
    doc = json.loads(out)
    entry = next(e for e in doc["backup"] if e["vmid"] == 100)
    assert code == 1 and entry["status"] == "stale_lock"
    assert "`pct unlock 100`" in entry["reason"]


def test_pve_unreachable_exits_2(tmp_path: Path, sim: PveSimulator) -> None:
    """No PVE: exit 2 with the error, in JSON as well."""
    desired = tmp_path / "desired.json"
    desired.write_text(json.dumps({"generation": 1, "guests": {}}))
    config = write_agent_config(tmp_path, agent_config(
        tmp_path, sim, reconcile={"desired_file": str(desired)}))
    sim.stop()
    code, out, _ = run_cli(["--config", str(config), "--backups", "--json"])
    assert code == 2 and "error" in json.loads(out)
