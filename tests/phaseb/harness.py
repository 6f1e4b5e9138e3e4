"""An in-process daemon with the verifying signed-op sink, against the PVE and hub simulators.

The daemon builds its engine inside :meth:`Daemon.run`; :class:`SinkWiring` is passed both as
the ``engine_factory`` (it builds the real engine, then the consumer from the same parts) and
as the ``sink`` (it delegates to that consumer), so no daemon code changes for the tests.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs

from felhom_agent.authz.verifier import VerifyPolicy
from felhom_agent.compose.engine_seam import EngineLike, default_engine_factory
from felhom_agent.compose.root import signed_op_sink
from felhom_agent.config import Config, load_config
from felhom_agent.daemon.runner import Daemon
from felhom_agent.execution.engine import Engine
from felhom_agent.hub.envelope import SignedOp as DeliveredOp
from felhom_agent.hub.report import OpResult
from felhom_agent.signedops.consumer import SignedOpConsumer
from felhom_agent.sim.hub import HubScenario, HubSimulator
from felhom_agent.sim.pve import PveScenario, PveSimulator
from felhom_agent.sim.pve.defaults import default_scenario_dict
from tests.daemon.helpers import HUB_TOKEN, PVE_SECRET, LogRecords, agent_config, write_agent_config
from tests.phaseb.signing import OpSigner

TIMEOUT = 20.0

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


class SinkWiring:
    """Engine factory + sink in one: builds the engine, then the consumer from its parts."""

    def __init__(self, config: Config, logger: logging.Logger) -> None:
        self._config = config
        self._log = logger
        self.consumer: SignedOpConsumer | None = None
        self.engine: Engine | None = None
        self.fatal: list[BaseException] = []
        self._stop: threading.Event | None = None

    def engine_factory(self, **parts: Any) -> EngineLike:
        """Build the real engine and the consumer sharing its client, journal and audit."""
        engine = default_engine_factory(**parts)
        assert isinstance(engine, Engine)
        self.engine = engine
        self.consumer = signed_op_sink(
            self._config, engine, client=parts["client"], journal=parts["journal"],
            audit=parts["audit"], clock=parts["clock"], logger=self._log.getChild("signed"),
            stop_event=parts["stop_event"], on_fatal=self._on_fatal,
        )
        self._stop = parts["stop_event"]
        return engine

    def _on_fatal(self, err: BaseException) -> None:
        """What the daemon's FatalSignal does: remember the error and stop."""
        self.fatal.append(err)
        if self._stop is not None:
            self._stop.set()

    def handle(self, ops: Sequence[DeliveredOp]) -> None:
        """Delegate to the consumer."""
        assert self.consumer is not None
        self.consumer.handle(ops)

    def results(self) -> Sequence[OpResult]:
        """Delegate to the consumer."""
        return () if self.consumer is None else self.consumer.results()

    def reconfigure(self, *, allowed_signers: Path, policy: VerifyPolicy) -> None:
        """Delegate to the consumer."""
        if self.consumer is not None:
            self.consumer.reconfigure(allowed_signers=allowed_signers, policy=policy)

    def close(self) -> None:
        """Delegate to the consumer."""
        if self.consumer is not None:
            self.consumer.close()


@attrs.define
class Harness:
    """Simulators, a signer, and a daemon run (restartable) on a thread."""

    tmp: Path
    pve: PveSimulator
    hub: HubSimulator
    signer: OpSigner
    stranger: OpSigner
    config_path: Path
    records: LogRecords = attrs.Factory(LogRecords)
    wiring: SinkWiring | None = None
    thread: threading.Thread | None = None
    stop_event: threading.Event = attrs.Factory(threading.Event)
    exit_code: list[int] = attrs.Factory(list)

    def config(self) -> Config:
        """The daemon config as loaded from disk."""
        return load_config(self.config_path, env={})

    def start(self) -> Daemon:
        """Run a daemon on a thread with the verifying sink; wait until it is ready."""
        logger = logging.getLogger(f"felhom_agent.test.phaseb.{id(self)}")
        logger.setLevel(logging.DEBUG)
        if self.records not in logger.handlers:
            logger.addHandler(self.records)
        config = self.config()
        self.stop_event = threading.Event()
        self.exit_code = []
        self.wiring = SinkWiring(config, logger)
        daemon = Daemon(config, env={}, stop_event=self.stop_event,
                        engine_factory=self.wiring.engine_factory, sink=self.wiring,
                        install_signals=False, logger=logger)
        self.thread = threading.Thread(target=lambda: self.exit_code.append(daemon.run()),
                                       daemon=True)
        self.thread.start()
        assert daemon.ready.wait(TIMEOUT)
        return daemon

    @property
    def consumer(self) -> SignedOpConsumer:
        """The running daemon's consumer."""
        assert self.wiring is not None and self.wiring.consumer is not None
        return self.wiring.consumer

    def stop(self) -> int:
        """Stop the daemon and release the nonce store; return its exit status."""
        self.stop_event.set()
        assert self.thread is not None
        self.thread.join(TIMEOUT)
        assert not self.thread.is_alive()
        self.consumer.close()
        return self.exit_code[0]

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

        deadline = time.monotonic() + timeout
        while not check():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                self.hub.wait_for_reports(len(self.hub.reports()) + 1, remaining)
            except TimeoutError:
                break
        assert check(), f"no outcome reported for {set(op_ids) - set(found)}"
        return found


def build(tmp: Path, *, pve: PveSimulator, hub: HubSimulator, signer: OpSigner,
          stranger: OpSigner, signers_file: Path,
          extra: Callable[[dict[str, Any]], None] | None = None) -> Harness:
    """A harness whose config points at ``signers_file``."""
    cfg = agent_config(tmp, pve, hub_url=hub.url,
                       authz={"allowed_signers": str(signers_file)})
    if extra is not None:
        extra(cfg)
    return Harness(tmp=tmp, pve=pve, hub=hub, signer=signer, stranger=stranger,
                   config_path=write_agent_config(tmp, cfg))


def hub_scenario() -> HubScenario:
    """A hub polling every second, nothing desired yet."""
    return HubScenario.from_dict({"token": HUB_TOKEN, "poll_interval_s": 1})
