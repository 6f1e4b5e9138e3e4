"""The agent unit's ExecStart really runs, and its `-X faulthandler` really dumps every thread.

The unit's comments claim that the watchdog's SIGABRT turns into a stack dump of every thread
in the journal. These tests run the unit's own argv (interpreter swapped for this venv's) and
send SIGABRT to a ``python -X faulthandler`` process with a second, blocked thread.
"""

from __future__ import annotations

import resource
import select
import signal
import subprocess
import sys

from felhom_agent import __version__
from tests.ops.conftest import PACKAGING, RUN_TIMEOUT_S
from tests.ops.unitfile import parse_unit

_BLOCKED_THREAD = """
import threading
stop = threading.Event()
threading.Thread(target=stop.wait, name="worker", daemon=True).start()
print("ready", flush=True)
stop.wait(60)
"""


def _no_core_dump() -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _unit_argv() -> list[str]:
    argv = parse_unit(PACKAGING / "felhom-agent.service").get("Service", "ExecStart").split()
    return [sys.executable, *argv[1:]]


def test_exec_start_argv_runs_the_agent() -> None:
    """The unit's ExecStart arguments start felhom_agent (checked with --version appended)."""
    argv = _unit_argv()
    res = subprocess.run([*argv, "--version"], capture_output=True, text=True,
                         timeout=RUN_TIMEOUT_S, check=False)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == f"felhom-agent {__version__}"


def test_sigabrt_dumps_every_thread() -> None:
    """Under `-X faulthandler` a SIGABRT (WatchdogSignal) prints the stack of all threads."""
    argv = _unit_argv()
    x_opts = argv[1:argv.index("-m")]
    assert x_opts == ["-X", "faulthandler"]
    proc = subprocess.Popen([sys.executable, *x_opts, "-c", _BLOCKED_THREAD],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=_no_core_dump)  # noqa: PLW1509 - sets only an rlimit
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], RUN_TIMEOUT_S)
        assert ready and proc.stdout.readline() == b"ready\n"
        proc.send_signal(signal.SIGABRT)
        _, err = proc.communicate(timeout=RUN_TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=RUN_TIMEOUT_S)
    text = err.decode()
    assert proc.returncode == -signal.SIGABRT
    assert "Fatal Python error: Aborted" in text
    assert text.lower().count("thread 0x") >= 2, text  # "Thread 0x…" + "Current thread 0x…"
    assert "in wait" in text
