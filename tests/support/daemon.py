"""The daemon as a real child process, and waiting on what the hub simulator receives.

Shared by the end-to-end daemon tests (``tests/daemon/test_process.py``), the signed-op tests
(``tests/phaseb``), the fault suite, the crash sweep and the soak (``tests/faults``). The child
is one of three programs, all ending in the CLI's no-mode path (``daemon_command``):

* :data:`STAND_IN` (default) -- ``tests/daemon/run_daemon.py``: loads the config and logging
  as the CLI does, with a short stop grace (``--grace``) so tests stop quickly;
* :data:`REAL_CLI` -- ``python -m felhom_agent``: the installed program itself;
* :data:`EIO_AGENT` -- :mod:`tests.support.eio_agent`: the real program with one syscall fault
  armed by the test (a failing ``fdatasync`` on one file).

Output goes to a log file so a failure shows the daemon's side. Waits block on simulator
events (the hub's report condition) with a deadline; nothing sleeps to synchronise.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from felhom_agent.errors import AgentError
from felhom_agent.sim.hub import HubSimulator

__all__ = [
    "EIO_AGENT",
    "GRACE_S",
    "REAL_CLI",
    "REPO",
    "RUNNER",
    "STAND_IN",
    "DaemonChild",
    "HarnessError",
    "wait_report",
    "wait_until",
]

REPO = Path(__file__).resolve().parents[2]
RUNNER = REPO / "tests" / "daemon" / "run_daemon.py"
#: The stand-in's stop grace: running jobs get this long at SIGTERM.
GRACE_S = 2.0
#: How long a stop may take before the harness gives up (a hang guard, not a limit).
EXIT_TIMEOUT_S = 20.0
#: Longest single wait on a report: a loop re-checks its predicate at least this often.
_TICK_S = 1.0

STAND_IN = (sys.executable, str(RUNNER))
REAL_CLI = (sys.executable, "-m", "felhom_agent")
EIO_AGENT = (sys.executable, "-m", "tests.support.eio_agent")


class HarnessError(AgentError, RuntimeError):
    """The harness could not drive the scenario (a wait ran out, the child died early)."""


class DaemonChild:
    """One run of the daemon program as a child process, output appended to ``log``.

    Args:
        config: the daemon's configuration file.
        log: where the child's stdout and stderr go (appended).
        program: the command before ``--config`` (:data:`STAND_IN`, :data:`REAL_CLI`,
            :data:`EIO_AGENT` followed by its own options).
        grace_s: the stand-in's stop grace (only :data:`STAND_IN` takes it).
        env: variables added to the child's minimal environment.
    """

    def __init__(self, config: Path, log: Path, *, program: Sequence[str] = STAND_IN,
                 grace_s: float = GRACE_S, env: Mapping[str, str] | None = None) -> None:
        self.log_path = log
        self._log: IO[bytes] = open(log, "ab")  # noqa: SIM115 - closed in _reap()
        self.started = time.monotonic()
        argv = [*program, "--config", str(config)]
        if tuple(program) == STAND_IN:
            argv += ["--grace", str(grace_s)]
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log, cwd=REPO,
            # faulthandler: a child that hangs at stop dumps every thread's stack on SIGABRT
            env={"PATH": "/usr/bin:/bin", "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO),
                 "PYTHONFAULTHANDLER": "1", **(env or {})},
        )

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self.proc.pid

    def alive(self) -> bool:
        """Whether the child is still running."""
        return self.proc.poll() is None

    def send(self, sig: signal.Signals) -> None:
        """Send ``sig`` (SIGHUP, SIGINT ...) to the running child."""
        self.proc.send_signal(sig)

    def sigkill(self) -> int:
        """SIGKILL the child (the crash) and reap it; return its exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        return self._reap()

    def terminate(self) -> int:
        """SIGTERM (an orderly stop); return the exit status.

        A child still running after :data:`EXIT_TIMEOUT_S` gets SIGABRT -- its threads'
        stacks land in its log, so the failure shows where it hung -- then SIGKILL.
        """
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self._reap()
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGABRT)
            try:
                self.proc.wait(timeout=5.0)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            return self._reap()

    def wait(self) -> int:
        """Wait for the child to exit by itself; return its exit status."""
        return self._reap()

    def _reap(self) -> int:
        try:
            return self.proc.wait(timeout=EXIT_TIMEOUT_S)
        finally:
            if not self._log.closed:
                self._log.close()

    def text(self) -> str:
        """The child's output so far."""
        return self.log_path.read_text(errors="replace")

    def __enter__(self) -> DaemonChild:
        return self

    def __exit__(self, *exc: object) -> None:
        """Never leave a child behind: SIGKILL it if it still runs."""
        if self.alive():
            self.sigkill()
        elif not self._log.closed:
            self._log.close()


Body = Mapping[str, Any]


def wait_report(hub: HubSimulator, pred: Callable[[Body], bool], timeout: float, *,
                after: int = 0, child: DaemonChild | None = None) -> Body:
    """Block until a report (index >= ``after``) satisfies ``pred``; return its body.

    Raises:
        HarnessError: none did within ``timeout`` (a hang guard), or ``child`` exited.
    """
    deadline = time.monotonic() + timeout
    seen = after
    while True:
        reports = hub.reports()
        for r in reports[seen:]:
            if pred(r.body):
                return r.body
        seen = max(seen, len(reports))
        if child is not None and not child.alive():
            raise HarnessError(f"daemon exited early with {child.proc.returncode}")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise HarnessError(f"no matching report among {seen} in {timeout:g} s")
        try:
            hub.wait_for_reports(seen + 1, min(remaining, _TICK_S))
        except TimeoutError:
            continue


def wait_until(hub: HubSimulator, cond: Callable[[], bool], timeout: float, *,
               child: DaemonChild | None = None) -> None:
    """Re-check ``cond`` after every report the hub receives until it holds.

    The daemon reports every hub interval, so this is also how a test waits for a line in
    the child's log. Raises :class:`HarnessError` like :func:`wait_report`.
    """
    deadline = time.monotonic() + timeout
    while not cond():
        if child is not None and not child.alive():
            raise HarnessError(f"daemon exited early with {child.proc.returncode}")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise HarnessError(f"condition not met in {timeout:g} s")
        try:
            hub.wait_for_reports(len(hub.reports()) + 1, min(remaining, _TICK_S))
        except TimeoutError:
            continue
