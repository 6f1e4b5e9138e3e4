"""Desired-state provider tests: Empty, File (real files) and Hub, and the change signal."""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from felhom_agent.core.desired import DesiredState, parse_desired
from felhom_agent.durable import atomic_write_bytes
from felhom_agent.planning.providers import (
    DesiredStateProvider,
    EmptyProvider,
    FileProvider,
    HubProvider,
)

WAIT_S = 5.0


def doc(generation: int, state: str = "running") -> bytes:
    """A desired-state file body."""
    return json.dumps({"generation": generation,
                       "guests": {"101": {"type": "lxc", "state": state}}}).encode()


def state(generation: int, guest_state: str = "running") -> DesiredState:
    """The DesiredState that doc(generation, state) parses to."""
    return parse_desired(json.loads(doc(generation, guest_state)))


def test_all_providers_satisfy_the_protocol(tmp_path: Path) -> None:
    """Empty, File and Hub providers are interchangeable behind DesiredStateProvider: each
    answers ``current()``, calls a subscribed listener once per change (Empty never changes)
    and stops calling it after ``unsubscribe()``."""
    path = tmp_path / "desired.json"
    hub = HubProvider()

    def write_file(generation: int) -> None:
        atomic_write_bytes(path, doc(generation))
        assert file_provider.refresh() is True

    file_provider = FileProvider(path)
    cases: list[tuple[DesiredStateProvider, Callable[[int], object] | None]] = [
        (EmptyProvider(), None),
        (file_provider, write_file),
        (hub, lambda generation: hub.update(state(generation))),
    ]
    for provider, change in cases:
        calls: list[DesiredState | None] = []

        def listener(p: DesiredStateProvider = provider,
                     c: list[DesiredState | None] = calls) -> None:
            c.append(p.current())

        unsubscribe = provider.subscribe(listener)
        assert provider.current() is None
        if change is not None:
            change(1)
        assert calls == ([] if change is None else [state(1)]), provider
        unsubscribe()
        if change is not None:
            change(2)
            assert provider.current() == state(2), provider
        assert len(calls) == (0 if change is None else 1), provider


def test_empty_provider_desires_nothing() -> None:
    """EmptyProvider always answers None and never signals."""
    p = EmptyProvider()
    fired = threading.Event()
    p.subscribe(fired.set)
    assert p.current() is None
    assert not fired.is_set()


def test_file_provider_loads_and_signals_on_change(tmp_path: Path) -> None:
    """A new file content loads on the next check and wakes subscribers once."""
    path = tmp_path / "desired.json"
    atomic_write_bytes(path, doc(1))
    p = FileProvider(path)
    fired = threading.Event()
    p.subscribe(fired.set)
    assert p.current() == state(1)
    assert fired.is_set()
    assert p.last_error is None
    fired.clear()
    assert p.current() == state(1)
    assert not fired.is_set(), "an unchanged file must not signal"
    atomic_write_bytes(path, doc(2))
    assert p.refresh() is True
    assert fired.wait(WAIT_S)
    assert p.current() == state(2)


def test_rewrite_with_identical_content_is_not_a_change(tmp_path: Path) -> None:
    """Replacing the file with the same content (new inode) does not signal."""
    path = tmp_path / "desired.json"
    atomic_write_bytes(path, doc(1))
    p = FileProvider(path)
    p.current()
    fired = threading.Event()
    p.subscribe(fired.set)
    atomic_write_bytes(path, doc(1))
    assert p.refresh() is False
    assert not fired.is_set()


def test_in_place_same_size_rewrite_is_seen(tmp_path: Path) -> None:
    """An in-place rewrite of the same size is detected through mtime/ctime."""
    path = tmp_path / "desired.json"
    path.write_bytes(doc(1, "running"))
    p = FileProvider(path)
    assert p.current() == state(1, "running")
    st = os.stat(path)
    with open(path, "r+b") as fh:
        fh.write(doc(1, "stopped")[: st.st_size])
    assert os.stat(path).st_size == st.st_size
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    got = p.current()
    assert got is not None
    assert got.guests[101].state == "stopped"


def test_bad_file_keeps_last_good_state_and_logs_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A malformed file is logged once with its path and the last good state is kept."""
    path = tmp_path / "desired.json"
    atomic_write_bytes(path, doc(3))
    p = FileProvider(path)
    assert p.current() == state(3)
    fired = threading.Event()
    p.subscribe(fired.set)
    atomic_write_bytes(path, b'{"generation": 4, "guests": {"101": {"type": "lxc", "state": 1}}}')
    with caplog.at_level(logging.ERROR, logger="felhom_agent.planning.providers"):
        assert p.current() == state(3)
        assert p.current() == state(3)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "guests.101.state" in errors[0].getMessage()
    assert "keeping generation 3" in errors[0].getMessage()
    error = p.last_error
    assert error is not None
    assert str(path) in error
    assert "guests.101.state" in error
    assert not fired.is_set()
    atomic_write_bytes(path, doc(5))
    assert p.current() == state(5)
    assert p.last_error is None
    assert fired.is_set()


def test_missing_file_means_nothing_until_it_appears(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A file that does not exist yet gives None, logs once, and loads when created."""
    path = tmp_path / "desired.json"
    p = FileProvider(path)
    with caplog.at_level(logging.ERROR, logger="felhom_agent.planning.providers"):
        assert p.current() is None
        assert p.current() is None
    assert len([r for r in caplog.records if "does not exist" in r.getMessage()]) == 1
    assert p.last_error is not None
    atomic_write_bytes(path, doc(1))
    assert p.current() == state(1)


def test_deleted_file_keeps_last_good_state(tmp_path: Path) -> None:
    """Deleting the file does not turn into 'nothing desired': the last good state stays."""
    path = tmp_path / "desired.json"
    atomic_write_bytes(path, doc(1))
    p = FileProvider(path)
    p.current()
    path.unlink()
    assert p.current() == state(1)
    assert p.last_error is not None
    assert "does not exist" in p.last_error


def test_oversized_file_is_refused(tmp_path: Path) -> None:
    """A file larger than max_bytes is refused with a clear error."""
    path = tmp_path / "desired.json"
    atomic_write_bytes(path, doc(1))
    p = FileProvider(path, max_bytes=10)
    assert p.current() is None
    assert p.last_error is not None
    assert "larger than 10 bytes" in p.last_error


def test_unreadable_file_is_an_error_not_a_crash(tmp_path: Path) -> None:
    """A path that cannot be read (a directory) is logged and kept as an error."""
    path = tmp_path / "desired.json"
    path.mkdir()
    p = FileProvider(path)
    assert p.current() is None
    assert p.last_error is not None
    assert "cannot read" in p.last_error


def test_listener_runs_outside_the_lock_and_failures_are_contained(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Listeners may call current() (no deadlock); a raising listener does not stop others."""
    path = tmp_path / "desired.json"
    atomic_write_bytes(path, doc(1))
    p = FileProvider(path)
    seen: list[DesiredState | None] = []
    done = threading.Event()

    def boom() -> None:
        raise RuntimeError("listener bug")

    def reader() -> None:
        seen.append(p.current())
        done.set()

    p.subscribe(boom)
    unsubscribe_reader = p.subscribe(reader)
    with caplog.at_level(logging.ERROR, logger="felhom_agent.planning.providers"):
        worker = threading.Thread(target=p.refresh)
        worker.start()
        assert done.wait(WAIT_S)
        worker.join(WAIT_S)
    assert not worker.is_alive()
    assert seen == [state(1)]
    assert any("listener" in r.getMessage() for r in caplog.records)
    unsubscribe_reader()
    done.clear()
    atomic_write_bytes(path, doc(2))
    assert p.refresh() is True
    assert not done.is_set()


def test_hub_provider_signals_only_on_change(caplog: pytest.LogCaptureFixture) -> None:
    """The hub's re-delivery of the same state is not a change; a new one is."""
    p = HubProvider()
    fired = threading.Event()
    p.subscribe(fired.set)
    assert p.current() is None
    assert p.update(state(1)) is True
    assert fired.is_set()
    fired.clear()
    assert p.update(state(1)) is False
    assert not fired.is_set()
    assert p.update(state(2)) is True
    assert p.current() == state(2)
    with caplog.at_level(logging.WARNING, logger="felhom_agent.planning.providers"):
        assert p.update(state(1, "stopped")) is True
    assert p.current() == state(1, "stopped")
    assert any("went back from generation 2 to 1" in r.getMessage() for r in caplog.records)


def test_hub_provider_wakes_a_waiting_thread() -> None:
    """A reconciler thread blocked on the signal wakes when the hub loop pushes new state."""
    p = HubProvider()
    wake = threading.Event()
    p.subscribe(wake.set)
    got: list[DesiredState | None] = []

    def reconciler() -> None:
        if wake.wait(WAIT_S):
            got.append(p.current())

    t = threading.Thread(target=reconciler)
    t.start()
    p.update(state(9))
    t.join(WAIT_S)
    assert got == [state(9)]
