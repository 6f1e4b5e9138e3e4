"""Without a hub the daemon reconciles from ``reconcile.desired_file`` (real engine)."""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path

from felhom_agent.config import load_config
from felhom_agent.daemon.runner import Daemon
from felhom_agent.sim.pve import PveSimulator
from tests.daemon.helpers import LogRecords, agent_config, pve_scenario, write_agent_config

TIMEOUT = 20.0


def _write_desired(path: Path, doc: object) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc))
    os.replace(tmp, path)


def test_desired_file_is_applied_and_followed(tmp_path: Path) -> None:
    """The file's desired state is applied; a rewritten file is picked up and applied too."""
    desired = tmp_path / "desired.json"
    _write_desired(desired, {"generation": 1,
                             "guests": {"102": {"type": "lxc", "state": "running"}}})
    records = LogRecords()
    logger = logging.getLogger("felhom_agent.test.nohub")
    logger.setLevel(logging.DEBUG)
    logger.addHandler(records)
    with PveSimulator(pve_scenario()) as pve:
        cfg = agent_config(tmp_path, pve, reconcile={"desired_file": str(desired)})
        config = load_config(write_agent_config(tmp_path, cfg), env={})
        stop = threading.Event()
        codes: list[int] = []
        daemon = Daemon(config, env={}, stop_event=stop, install_signals=False, logger=logger)
        thread = threading.Thread(target=lambda: codes.append(daemon.run()), daemon=True)
        thread.start()
        try:
            assert records.wait_for("op plan-1-102-start-", TIMEOUT)
            assert records.wait_for("applied", TIMEOUT)
            assert pve.guest(102)["status"] == "running"
            _write_desired(desired, {"generation": 2,
                                     "guests": {"102": {"type": "lxc", "state": "stopped"}}})
            assert records.wait_for("op plan-2-102-stop-", TIMEOUT)
            assert records.wait_for("loaded desired state generation 2", TIMEOUT)
            assert records.wait_for(": applied", TIMEOUT, count=2)
            assert pve.guest(102)["status"] == "stopped"
        finally:
            stop.set()
            thread.join(TIMEOUT)
    assert codes == [0]
