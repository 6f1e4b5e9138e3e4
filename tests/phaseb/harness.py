"""The daemon program as a child process, against the PVE and hub simulators, with signed ops.

Every run is the real program -- ``python -m felhom_agent --config FILE`` (or the same program
with one injected disk fault, :mod:`tests.support.eio_agent`) -- so the daemon builds its
parts, its verifying signed-op consumer and its nonce store exactly as in production; the
tests see only what an operator would: the reports the hub receives, the tasks PVE ran, the
files in ``state_dir``, the exit status and the log.
"""

from __future__ import annotations

import copy
import json
import signal
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs

from felhom_agent.config import Config, load_config
from felhom_agent.sim.hub import HubScenario, HubSimulator
from felhom_agent.sim.pve import PveScenario, PveSimulator
from felhom_agent.sim.pve.defaults import default_scenario_dict
from tests.daemon.helpers import HUB_TOKEN, PVE_SECRET, agent_config, write_agent_config
from tests.phaseb.signing import OpSigner
from tests.support.daemon import REAL_CLI, DaemonChild, wait_report, wait_until

#: A hang guard for waits on the child (never a limit on how fast it must be).
TIMEOUT = 30.0

#: Extra guests: 103 protected, 104 stopped (destroy), 105 running CT (destroy stop_first).
EXTRA_GUESTS: list[dict[str, Any]] = [
    {"vmid": 103, "type": "qemu", "name": "vault", "status": "running",
     "config": {"cores": 1, "memory": 512, "protection": 1}},
    {"vmid": 104, "type": "qemu", "name": "old", "status": "stopped",
     "config": {"cores": 1, "memory": 512}},
    {"vmid": 105, "type": "lxc", "name": "tmp", "status": "running",
     "config": {"cores": 1, "memory": 256, "ostype": "alpine"}},
]


def pve_scenario(task_s: float = 0.05) -> PveScenario:
    """The default guests (100 lxc running, 101 qemu with snapshot ``initial``, 102 lxc)
    plus :data:`EXTRA_GUESTS`; every task takes ``task_s``."""
    data: dict[str, Any] = copy.deepcopy(default_scenario_dict(token_secret=PVE_SECRET))
    data["auth_failure_delay_s"] = 0
    data["task_durations"] = {"default": task_s}
    data["guests"].extend(copy.deepcopy(EXTRA_GUESTS))
    return PveScenario.from_dict(data)


@attrs.define
class Harness:
    """Simulators, signers, a config file, and the daemon program run as a child (restartable)."""

    tmp: Path
    pve: PveSimulator
    hub: HubSimulator
    signer: OpSigner
    stranger: OpSigner
    config_path: Path
    child: DaemonChild | None = None
    runs: list[DaemonChild] = attrs.Factory(list)

    def config(self) -> Config:
        """The daemon config as loaded from disk."""
        return load_config(self.config_path, env={})

    def edit_config(self, change: Callable[[dict[str, Any]], None]) -> None:
        """Rewrite the config file with ``change`` applied to its JSON document."""
        doc: dict[str, Any] = json.loads(self.config_path.read_text())
        change(doc)
        write_agent_config(self.tmp, doc, name=self.config_path.name)

    def start(self, program: Sequence[str] = REAL_CLI) -> DaemonChild:
        """Start the program; return once the hub received its first report (it is up)."""
        before = len(self.hub.reports())
        child = DaemonChild(self.config_path, self.tmp / f"daemon{len(self.runs) + 1}.log",
                            program=program)
        self.child = child
        self.runs.append(child)
        wait_report(self.hub, lambda _body: True, TIMEOUT, after=before, child=child)
        return child

    def running(self) -> DaemonChild:
        """The current child."""
        assert self.child is not None, "the daemon was not started"
        return self.child

    def stop(self) -> int:
        """SIGTERM the daemon; return its exit status."""
        return self.running().terminate()

    def reload(self) -> None:
        """SIGHUP the daemon (``systemctl reload``) and wait until it logged the outcome."""
        child = self.running()
        done = child.text().count("SIGHUP: ")
        child.send(signal.SIGHUP)
        wait_until(self.hub, lambda: child.text().count("SIGHUP: ") > done, TIMEOUT,
                   child=child)

    def log(self) -> str:
        """Everything every run of the daemon logged so far."""
        return "".join(run.text() for run in self.runs)

    def deliver(self, doc: dict[str, Any], *, signer: OpSigner | None = None,
                namespace: str = "felhom-op") -> str:
        """Sign ``doc`` and queue it at the hub; return its op id."""
        payload, sig = (signer or self.signer).sign(doc, namespace=namespace)
        self.hub.add_signed_op(payload, sig)
        return str(doc["op_id"])

    def reported(self, op_id: str) -> dict[str, Any] | None:
        """The newest non-running ``ops`` entry for ``op_id`` the hub received."""
        for report in reversed(self.hub.reports()):
            for entry in report.body.get("ops", ()):
                if entry.get("op_id") == op_id and entry.get("state") != "running":
                    return dict(entry)
        return None

    def wait_reported(self, op_ids: Sequence[str], timeout: float = TIMEOUT
                      ) -> dict[str, dict[str, Any]]:
        """Block until the hub received an outcome for every op id; return them."""
        found: dict[str, dict[str, Any]] = {}

        def check() -> bool:
            for op_id in op_ids:
                if op_id not in found:
                    entry = self.reported(op_id)
                    if entry is not None:
                        found[op_id] = entry
            return len(found) == len(op_ids)

        wait_until(self.hub, check, timeout, child=self.child)
        return found


def build(tmp: Path, *, pve: PveSimulator, hub: HubSimulator, signer: OpSigner,
          stranger: OpSigner, signers_file: Path) -> Harness:
    """A harness whose config points at ``signers_file``."""
    cfg = agent_config(tmp, pve, hub_url=hub.url,
                       authz={"allowed_signers": str(signers_file)})
    return Harness(tmp=tmp, pve=pve, hub=hub, signer=signer, stranger=stranger,
                   config_path=write_agent_config(tmp, cfg))


def hub_scenario() -> HubScenario:
    """A hub polling every second, nothing desired yet."""
    return HubScenario.from_dict({"token": HUB_TOKEN, "poll_interval_s": 1})
