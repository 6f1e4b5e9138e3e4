"""The host health monitor: disks, SMART and sensors read on their own thread, cached.

``docs/architecture.md`` ("Host storage", "Threads"). Every ``storage.smart_interval_s`` the
``felhom-host-health`` thread reads ``GET /nodes/{node}/disks/list``, then each disk's
``smartctl --json`` and ``sensors -j`` through the fenced runner, and publishes what it has
after every step. The report reads :meth:`HealthMonitor.snapshot` -- a lock and a copy, never a
wait -- so a slow or hanging tool delays no report: a hanging one is killed at its timeout by the
runner and becomes an ``errors`` entry. Until a disk is read again its previous entry (and
error) stays; a failed or missing tool is an ``errors`` entry naming what to install.

Without a fenced runner (``proxmox.privileged.mode`` off) the disks are PVE's data only, each
entry saying ``"smart": "off"``, and there are no sensors; that is not an error.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol

import attrs

from felhom_agent.host.health import (
    DiskEntry,
    SensorEntry,
    disk_entry,
    sensor_entries,
    smart_device_type,
    smart_note,
    tool_problem,
)
from felhom_agent.privileged.errors import PrivilegedError, RefusedArgument
from felhom_agent.privileged.ops import SensorsRead, SmartRead
from felhom_agent.privileged.parse import SensorChip, SmartReport
from felhom_agent.proxmox.errors import PveError
from felhom_agent.proxmox.models import Disk

__all__ = ["DiskLister", "FencedReader", "HealthMonitor", "HealthProblem", "HealthSnapshot"]

_API = "api"
_SENSORS = "sensors"


class DiskLister(Protocol):
    """The one PVE read the monitor needs (the Proxmox client)."""

    def disks(self, *, skipsmart: bool = True) -> tuple[Disk, ...]:
        """``GET /nodes/{node}/disks/list``."""
        ...


class FencedReader(Protocol):
    """The fenced readings the monitor needs (the :class:`~felhom_agent.privileged.Privileged`)."""

    def read_smart(self, args: SmartRead) -> SmartReport:
        """``smartctl --json -a``."""
        ...

    def read_sensors(self, args: SensorsRead | None = None) -> tuple[SensorChip, ...]:
        """``sensors -j``."""
        ...


@attrs.frozen
class HealthProblem:
    """One ``errors`` entry of the report: ``source`` is ``disks`` or ``sensors``."""

    source: str
    message: str


@attrs.frozen
class HealthSnapshot:
    """What the monitor knows now (``collected_at``: end of the last complete reading)."""

    disks: tuple[DiskEntry, ...] = ()
    sensors: tuple[SensorEntry, ...] = ()
    problems: tuple[HealthProblem, ...] = ()
    collected_at: float | None = None
    cycles: int = 0


@attrs.define
class _Reading:
    """One cycle's results so far, keyed so a later step replaces only its own part."""

    disks: dict[str, DiskEntry] = attrs.Factory(dict)
    order: list[str] = attrs.Factory(list)
    problems: dict[str, HealthProblem] = attrs.Factory(dict)
    read: set[str] = attrs.Factory(set)
    sensors: tuple[SensorEntry, ...] | None = None


class HealthMonitor:
    """Reads disks, SMART and sensors every ``interval_s`` on its own thread; see the module.

    Args:
        client: lists the disks (PVE API).
        fenced: the fenced root CLI, or ``None`` when ``proxmox.privileged.mode`` is off.
        interval_s: seconds between two readings (``storage.smart_interval_s``).
        clock: wall-clock seconds (``collected_at``).
        logger: reading failures at debug level (the report carries them).
    """

    def __init__(self, *, client: DiskLister, fenced: FencedReader | None, interval_s: float,
                 clock: Callable[[], float] = time.time,
                 logger: logging.Logger | None = None) -> None:
        self._client = client
        self._fenced = fenced
        self._interval = interval_s
        self._clock = clock
        self._log = logger if logger is not None else logging.getLogger(__name__)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._done = _Reading()
        self._current = _Reading()
        self._snapshot = HealthSnapshot()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the report's side ---------------------------------------------------------------

    def snapshot(self) -> HealthSnapshot:
        """The newest published state; returns at once."""
        with self._lock:
            return self._snapshot

    def wait(self, cycles: int, timeout: float) -> HealthSnapshot:
        """Block until ``cycles`` readings completed (or ``timeout``); the snapshot then."""
        with self._changed:
            self._changed.wait_for(lambda: self._snapshot.cycles >= cycles, timeout)
            return self._snapshot

    # -- the thread ----------------------------------------------------------------------

    def start(self) -> None:
        """Start the ``felhom-host-health`` thread (a daemon thread: a hung tool never holds
        up the process's exit; the runner kills it at its timeout anyway)."""
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._run, name="felhom-host-health",
                                            daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 1.0) -> None:
        """Ask the thread to end and wait briefly (a tool still running is not waited for)."""
        self._stop.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.collect_once()
            except Exception:  # the thread never dies of a reading
                self._log.exception("reading disks, SMART and sensors failed")
            if self._stop.wait(self._interval):
                return

    # -- one reading ---------------------------------------------------------------------

    def collect_once(self) -> HealthSnapshot:
        """One complete reading, published step by step; returns the final snapshot."""
        with self._lock:
            self._current = _Reading()
        state = "pending" if self._fenced is not None else "off"
        try:
            disks = self._client.disks(skipsmart=False)
        except PveError as err:
            self._log.debug("disks/list failed: %s", err)
            disks = ()
            self._problem(_API, "disks", f"GET disks/list failed: {err}")
            with self._lock:  # the disks read before stay, as last known
                self._current.order = list(self._done.order)
                self._current.disks = dict(self._done.disks)
        with self._lock:
            self._current.read.add(_API)
            if disks:
                self._current.order = [d.devpath for d in disks]
            for disk in disks:
                kept = self._done.disks.get(disk.devpath)
                if self._fenced is None or kept is None:
                    self._current.disks[disk.devpath] = disk_entry(disk, None, state)
            self._publish()
        if self._fenced is not None:
            for disk in disks:
                self._read_disk(self._fenced, disk)
            self._read_sensors(self._fenced)
        with self._lock:
            if self._fenced is None:
                self._current.sensors = ()
            self._done = self._current
            self._current = _Reading()
            return self._publish(completed=True)

    def _read_disk(self, fenced: FencedReader, disk: Disk) -> None:
        problem: str | None = None
        try:
            report = fenced.read_smart(SmartRead(disk.devpath, smart_device_type(disk)))
        except RefusedArgument as err:
            entry, problem = disk_entry(disk, None, "error"), f"not read: {err}"
        except PrivilegedError as err:
            entry, problem = disk_entry(disk, None, "error"), tool_problem(
                err, f"smartctl {disk.devpath}")
        else:
            entry, problem = disk_entry(disk, report, "ok"), smart_note(disk.devpath, report)
        with self._lock:
            self._current.disks[disk.devpath] = entry
            self._current.read.add(disk.devpath)
            if problem is not None:
                self._current.problems[disk.devpath] = HealthProblem("disks", problem)
            self._publish()
        if problem is not None:
            self._log.debug("SMART of %s: %s", disk.devpath, problem)

    def _read_sensors(self, fenced: FencedReader) -> None:
        try:
            chips = fenced.read_sensors()
        except PrivilegedError as err:
            self._problem(_SENSORS, "sensors", tool_problem(err, "sensors -j"))
            sensors: tuple[SensorEntry, ...] = ()
        else:
            sensors = sensor_entries(chips)
        with self._lock:
            self._current.sensors = sensors
            self._current.read.add(_SENSORS)
            self._publish()

    def _problem(self, key: str, source: str, message: str) -> None:
        with self._lock:
            self._current.problems[key] = HealthProblem(source, message)
            self._publish()

    def _publish(self, *, completed: bool = False) -> HealthSnapshot:
        """Merge the finished reading with this one's progress (caller holds the lock)."""
        cur, done = self._current, self._done
        order = cur.order or done.order
        disks = tuple(cur.disks.get(d) or done.disks[d] for d in order
                      if d in cur.disks or d in done.disks)
        problems = {**{k: v for k, v in done.problems.items() if k not in cur.read},
                    **cur.problems}
        sensors = cur.sensors if cur.sensors is not None else done.sensors or ()
        previous = self._snapshot
        self._snapshot = HealthSnapshot(
            disks=disks, sensors=sensors, problems=tuple(problems.values()),
            collected_at=self._clock() if completed else previous.collected_at,
            cycles=previous.cycles + (1 if completed else 0))
        self._changed.notify_all()
        return self._snapshot
