"""The node runtime: one simulated PVE node's state, tasks, faults, tokens and counters.

The HTTP layer and the handlers share this object. It also keeps the request counters the
tests use: ``requests_seen`` (requests parsed; a failed TLS handshake never counts),
``routed`` (authenticated requests that matched an endpoint, per ``METHOD /path/template``),
``in_flight`` (requests holding one of the bounded pveproxy-like worker slots) and
``queued`` (requests waiting for a slot), all guarded by one condition so a test can wait
for "two requests are in flight" without sleeping.

``request_latency_s`` models pveproxy's processing time: a request that got a slot holds it
for that long (on the monotonic clock) before its handler runs, so it delays only requests
queued behind a full pool, never the other slots. ``served`` and ``min_service_s`` (slot
acquired to response written, monotonic) let a test check that every request took at least
the latency.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

from felhom_agent.sim.pve.faults import FaultBook
from felhom_agent.sim.pve.scenario import PveScenario, TokenSpec
from felhom_agent.sim.pve.state import NodeState
from felhom_agent.sim.pve.tasks import TaskPlan, TaskRunner

__all__ = ["NodeRuntime"]


class NodeRuntime:
    """Everything one simulated node holds while it runs."""

    def __init__(self, scenario: PveScenario, *, clock: Callable[[], float],
                 fingerprint: str) -> None:
        self.scenario = scenario
        self.node = scenario.node
        self.fingerprint = fingerprint
        self.clock = clock
        self.boot_time = clock()
        self.state = NodeState(scenario, clock)
        self.faults = FaultBook()
        for fault in scenario.faults:
            self.faults.add(fault)
        self.tasks = TaskRunner(self.state, self.faults, scenario.task_durations,
                                scenario.lock_wait_s)
        self.tokens: dict[str, TokenSpec] = {t.token_id: t for t in scenario.tokens}
        self.stop_event = threading.Event()
        self.counters = threading.Condition()
        self.requests_seen = 0
        self.in_flight = 0
        self.queued = 0
        self.peak_in_flight = 0
        #: ``"GET /nodes/{node}/storage"`` -> requests that matched that endpoint.
        self.routed: dict[str, int] = {}
        #: requests that held a slot and finished, and the shortest of their service times.
        self.served = 0
        self.min_service_s = math.inf
        #: tracebacks of handler bugs answered as 500 (tests assert this stays empty).
        self.internal_errors: list[str] = []

    def fork(self, plan: TaskPlan, user: str) -> str:
        """Fork a task for ``user`` and return its UPID."""
        return self.tasks.fork(plan, user)

    def count_route(self, method: str, template: str) -> None:
        """Record one request that matched the endpoint ``method template``."""
        key = f"{method} {template}"
        with self.counters:
            self.routed[key] = self.routed.get(key, 0) + 1

    # -- the bounded worker pool ------------------------------------------------------------
    def count_request(self) -> None:
        """Record one parsed request."""
        with self.counters:
            self.requests_seen += 1
            self.counters.notify_all()

    def acquire_worker(self) -> bool:
        """Wait for a free worker slot (False if the simulator is stopping)."""
        with self.counters:
            self.queued += 1
            self.counters.notify_all()
            try:
                while self.in_flight >= self.scenario.workers:
                    if self.stop_event.is_set():
                        return False
                    self.counters.wait(timeout=0.5)
                if self.stop_event.is_set():
                    return False
                self.in_flight += 1
                self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
                return True
            finally:
                self.queued -= 1
                self.counters.notify_all()

    def release_worker(self, service_s: float | None = None) -> None:
        """Free a worker slot; ``service_s`` is how long the request held it (monotonic)."""
        with self.counters:
            self.in_flight -= 1
            if service_s is not None:
                self.served += 1
                self.min_service_s = min(self.min_service_s, service_s)
            self.counters.notify_all()

    def process_delay(self, started: float) -> bool:
        """Hold the current request until ``request_latency_s`` after ``started`` (a
        ``time.monotonic()`` reading). False if the simulator stopped meanwhile."""
        deadline = started + self.scenario.request_latency_s
        while not self.stop_event.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return True
            self.stop_event.wait(remaining)
        return False

    def wait_counters(self, pred: Callable[[NodeRuntime], bool], timeout: float) -> bool:
        """Block until ``pred(self)`` holds (checked on every counter change)."""
        with self.counters:
            return self.counters.wait_for(lambda: pred(self), timeout=timeout)
