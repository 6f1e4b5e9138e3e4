"""Shared pieces of the operations-packaging tests: paths, a fake agent, the script runner.

The selftest script is tested as a real program (bash, flock, timeout) against a FAKE
``felhom-agent``: a tiny ``sh`` script written into the test's tmp directory that prints
canned output per selftest mode, exits with a chosen status (or hangs, or waits for the test),
and records the argv and environment it was started with.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import attrs
import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGING = REPO / "packaging"
SELFTEST_SCRIPT = REPO / "scripts" / "felhom-agent-selftest"

#: Generous upper bound for one script run in a test; runs normally take well under 1 s.
RUN_TIMEOUT_S = 60.0

PASSING_READ = (
    "OK   api-reachable  PVE 9.2.2\n"
    "OK   permissions    all required privileges present\n"
    "selftest read: all 2 checks passed\n"
)
FAILING_READ = (
    "OK   api-reachable  PVE 9.2.2\n"
    "FAIL permissions    missing VM.PowerMgmt on /vms\n"
    "selftest read: 1 of 2 checks FAILED (permissions)\n"
)


@attrs.frozen
class Mode:
    """What the fake does for one ``--selftest=MODE``.

    ``action`` is ``exit`` (print, exit ``rc``), ``hang`` (never return), ``segv`` (die of
    SIGSEGV) or ``block`` (print ``started`` to ``started_fifo``, then wait for a line on
    ``release_fifo``, then exit ``rc``).
    """

    stdout: str = ""
    stderr: str = ""
    rc: int = 0
    action: str = "exit"
    started_fifo: Path | None = None
    release_fifo: Path | None = None


@attrs.frozen
class FakeAgent:
    """A fake ``felhom-agent`` on disk and the files where it records how it was run."""

    path: Path
    calls: Path

    def argv_lines(self) -> list[list[str]]:
        """One argv per run, in order (empty when it never ran)."""
        if not self.calls.exists():
            return []
        return [shlex.split(line) for line in self.calls.read_text().splitlines()]

    def env_of_last_run(self) -> dict[str, str]:
        """The environment of the most recent run."""
        env_file = self.calls.with_suffix(".env")
        pairs = env_file.read_bytes().split(b"\0")
        return dict(p.decode().split("=", 1) for p in pairs if b"=" in p)


def _mode_body(mode: Mode, workdir: Path, name: str) -> str:
    out = workdir / f"{name}.stdout"
    err = workdir / f"{name}.stderr"
    out.write_text(mode.stdout)
    err.write_text(mode.stderr)
    lines = [f"cat {shlex.quote(str(out))}", f"cat {shlex.quote(str(err))} >&2"]
    if mode.action == "hang":
        lines.append("exec sleep infinity")
    elif mode.action == "segv":
        lines += ["ulimit -c 0", "kill -SEGV $$"]
    elif mode.action == "block":
        assert mode.started_fifo is not None and mode.release_fifo is not None
        lines += [f"echo started > {shlex.quote(str(mode.started_fifo))}",
                  f"read -r _ < {shlex.quote(str(mode.release_fifo))}"]
    lines.append(f"exit {mode.rc}")
    return "\n    ".join(lines)


def make_fake_agent(workdir: Path, modes: dict[str, Mode], *, name: str = "felhom-agent"
                    ) -> FakeAgent:
    """Write an executable fake agent into ``workdir`` handling ``--selftest=<mode>``."""
    workdir.mkdir(parents=True, exist_ok=True)
    calls = workdir / "calls.log"
    cases = "".join(
        f"  --selftest={m})\n    {_mode_body(mode, workdir, m)}\n    ;;\n"
        for m, mode in modes.items()
    )
    script = (
        "#!/bin/sh\n"
        "# fake felhom-agent for tests/ops: records argv and env, then plays a canned part\n"
        f"env -0 > {shlex.quote(str(calls.with_suffix('.env')))}\n"
        "line=''\n"
        "for a in \"$@\"; do line=\"$line '$a'\"; done\n"
        f"echo \"$line\" >> {shlex.quote(str(calls))}\n"
        "case \"$1\" in\n"
        f"{cases}"
        "  *) echo \"fake: unexpected arguments: $*\" >&2; exit 64 ;;\n"
        "esac\n"
    )
    path = workdir / name
    path.write_text(script)
    path.chmod(0o755)
    return FakeAgent(path, calls)


def script_env(tmp_path: Path, *, agent_dir: Path | None = None,
               extra: dict[str, str] | None = None) -> dict[str, str]:
    """A minimal, cron-like environment for the script (PATH with the fake dir first)."""
    path = "/usr/local/bin:/usr/bin:/bin"
    if agent_dir is not None:
        path = f"{agent_dir}:{path}"
    env = {"PATH": path, "TMPDIR": str(tmp_path), "LC_ALL": "C"}
    env.update(extra or {})
    return env


def run_script(args: list[str], env: dict[str, str], *, lock: Path,
               timeout_s: float = RUN_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    """Run the selftest script with ``--lock-file lock`` and capture its output."""
    return subprocess.run(
        ["bash", str(SELFTEST_SCRIPT), "--lock-file", str(lock), *args],
        env=env, capture_output=True, text=True, timeout=timeout_s, check=False,
    )


def make_fifo(path: Path) -> int:
    """Create a FIFO and open it O_RDWR (never blocks on Linux, keeps both ends alive)."""
    os.mkfifo(path)
    return os.open(path, os.O_RDWR | os.O_CLOEXEC)


@pytest.fixture
def lock(tmp_path: Path) -> Path:
    """A private lock file path for the script under test."""
    return tmp_path / "selftest.lock"
