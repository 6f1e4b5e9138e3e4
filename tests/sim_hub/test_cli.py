"""The hub simulator command: one JSON ready line, SIGTERM exits 0, bad input exits 2."""

from __future__ import annotations

import io
import json
import selectors
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO, Any

import pytest

from felhom_agent.hub.client import HubClient
from felhom_agent.hub.report import HostReport
from felhom_agent.secret import Secret
from felhom_agent.sim.hub.cli import main


def _readline(stream: IO[str], timeout: float) -> str:
    with selectors.DefaultSelector() as sel:
        sel.register(stream, selectors.EVENT_READ)
        if not sel.select(timeout):
            raise TimeoutError("no ready line from the hub simulator")
    return stream.readline()


def _scenario(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / "hub.json"
    path.write_text(json.dumps(data))
    return path


def _report() -> HostReport:
    return HostReport(host_id="pve1", agent_version="0", collected_at="2026-11-26T10:00:00Z")


def test_child_process_ready_line_serves_and_exits_0_on_sigterm(tmp_path: Path) -> None:
    """A real child prints one ready line with url and generated token, serves, exits 0."""
    scenario = _scenario(tmp_path, {"poll_interval_s": 9, "desired": {"generation": 4}})
    proc = subprocess.Popen(
        [sys.executable, "-m", "felhom_agent.sim.hub.cli", "--scenario", str(scenario),
         "--listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        ready = json.loads(_readline(proc.stdout, timeout=30))
        assert set(ready) == {"url", "token"}
        assert ready["url"].startswith("http://127.0.0.1:")
        with HubClient(url=ready["url"], host_id="pve1", token=Secret(ready["token"])) as client:
            answer = client.report(_report())
        assert answer["desired"] == {"generation": 4} and answer["poll_interval_s"] == 9
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert proc.stdout.read() == ""  # exactly one line
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)


def test_child_process_malformed_scenario_exits_2(tmp_path: Path) -> None:
    """A malformed scenario exits 2 naming the file, the key and the value."""
    scenario = _scenario(tmp_path, {"faults": [{"kind": "explode"}]})
    done = subprocess.run(
        [sys.executable, "-m", "felhom_agent.sim.hub.cli", "--scenario", str(scenario)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 2
    assert str(scenario) in done.stderr and "faults[0]" in done.stderr
    assert "explode" in done.stderr
    assert done.stdout == ""


class _LineOut(io.StringIO):
    """A stdout that sets an event when a full line has been written."""

    def __init__(self) -> None:
        super().__init__()
        self.line_done = threading.Event()

    def write(self, s: str) -> int:
        n = super().write(s)
        if "\n" in s:
            self.line_done.set()
        return n


def _run_in_thread(argv: list[str]) -> tuple[threading.Thread, threading.Event, _LineOut,
                                             list[int]]:
    stop = threading.Event()
    out = _LineOut()
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(main(argv, stdout=out,
                                                                stop_event=stop)))
    thread.start()
    return thread, stop, out, result


def test_in_process_tls_ready_line_has_fingerprint_and_no_token(tmp_path: Path) -> None:
    """With tls and a scenario token the ready line has url and fingerprint, no token."""
    scenario = _scenario(tmp_path, {"tls": True, "token": "given-token"})
    thread, stop, out, result = _run_in_thread(["--scenario", str(scenario)])
    try:
        assert out.line_done.wait(timeout=30)
        ready = json.loads(out.getvalue())
        assert set(ready) == {"url", "fingerprint"}
        with HubClient(url=ready["url"], host_id="pve1", token=Secret("given-token"),
                       tls_fingerprint=ready["fingerprint"]) as client:
            assert client.report(_report())["schema"] == 1
    finally:
        stop.set()
        thread.join(timeout=30)
    assert result == [0]


@pytest.mark.parametrize("listen", ["0.0.0.0:0", "hub.example:80", "127.0.0.1", "127.0.0.1:x",
                                    "127.0.0.1:70000"])
def test_bad_listen_exits_2(tmp_path: Path, listen: str) -> None:
    """--listen must be a loopback IPv4 HOST:PORT; anything else exits 2."""
    err = io.StringIO()
    code = main(["--scenario", str(_scenario(tmp_path, {})), "--listen", listen], stderr=err)
    assert code == 2 and "--listen" in err.getvalue()


def test_missing_scenario_flag_exits_2() -> None:
    """Without --scenario the command exits 2 naming the flag."""
    err = io.StringIO()
    assert main([], stderr=err) == 2
    assert "--scenario" in err.getvalue()


def test_unreadable_scenario_exits_2(tmp_path: Path) -> None:
    """A scenario file that does not exist exits 2 naming it."""
    err = io.StringIO()
    assert main(["--scenario", str(tmp_path / "nope.json")], stderr=err) == 2
    assert "nope.json" in err.getvalue()
