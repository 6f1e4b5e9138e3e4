"""LocalRunner: argv without a shell, a fixed environment, timeouts that kill the process group."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from felhom_agent.privileged import (
    CommandTimeout,
    LocalRunner,
    ProgramNotFound,
    RefusedArgument,
    RunnerError,
)
from felhom_agent.privileged.runner import DEFAULT_ENV


def test_argv_reaches_the_program_literally() -> None:
    """Shell metacharacters in an argv word are data, not syntax: no shell is involved."""
    result = LocalRunner().run(["printf", "%s\\n", "a b; c", "$(id)", "`x`|y"], timeout_s=10)
    assert result.returncode == 0
    assert result.stdout == b"a b; c\n$(id)\n`x`|y\n"
    assert result.argv == ("printf", "%s\\n", "a b; c", "$(id)", "`x`|y")


def test_non_zero_exit_is_returned_not_raised() -> None:
    """A failing command returns its status and stderr; the caller decides what it means."""
    result = LocalRunner().run(["sh", "-c", "echo oops >&2; exit 3"], timeout_s=10)
    assert result.returncode == 3
    assert result.stderr_text() == "oops\n"


def test_environment_is_fixed_not_inherited(monkeypatch: pytest.MonkeyPatch) -> None:
    """The child sees only the fixed environment: NOTIFY_SOCKET and secrets do not leak."""
    monkeypatch.setenv("NOTIFY_SOCKET", "/run/systemd/notify")
    monkeypatch.setenv("FELHOM_AGENT_PROXMOX_TOKEN_SECRET", "s3cr3t")
    result = LocalRunner().run(["env"], timeout_s=10)
    lines = set(result.stdout.decode().splitlines())
    assert lines == {f"{k}={v}" for k, v in DEFAULT_ENV.items()}


def test_stdin_is_empty_and_cwd_is_root() -> None:
    """A command reading stdin sees EOF at once; it runs in / ."""
    result = LocalRunner().run(["sh", "-c", "cat; pwd"], timeout_s=10)
    assert result.stdout == b"/\n"


def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    """Past its deadline the command and its children are killed and CommandTimeout raised."""
    pidfile = tmp_path / "child.pid"
    script = f"sleep 60 & echo $! > {pidfile}; wait"
    with pytest.raises(CommandTimeout) as info:
        LocalRunner(kill_grace_s=10).run(["sh", "-c", script], timeout_s=1.0)
    assert info.value.program == "sh"
    assert isinstance(info.value, TimeoutError)
    child = int(pidfile.read_text())
    # The background sleep was in the group: it is gone (or a zombie awaiting init's reaping).
    try:
        state = Path(f"/proc/{child}/stat").read_text().split(") ")[1][0]
    except FileNotFoundError:
        state = "gone"
    assert state in ("gone", "Z")


def test_missing_program_is_a_runner_error() -> None:
    """A program that does not exist raises RunnerError naming it, not FileNotFoundError."""
    with pytest.raises(RunnerError) as info:
        LocalRunner().run(["/nonexistent/felhom-tool"], timeout_s=10)
    assert info.value.program == "/nonexistent/felhom-tool"
    assert isinstance(info.value, ProgramNotFound)  # the "install it" case, told apart
    assert not isinstance(info.value, FileNotFoundError)


@pytest.mark.parametrize("argv", [[], ["printf", "a\x00b"], ["printf", 3]])
def test_malformed_argv_is_refused(argv: list[object]) -> None:
    """An empty argv, a NUL or a non-string word is refused before a process starts."""
    with pytest.raises(RefusedArgument):
        LocalRunner().run(argv, timeout_s=10)  # type: ignore[arg-type]


def test_custom_env_is_used() -> None:
    """An injected environment replaces the default one completely."""
    result = LocalRunner(env={"PATH": os.defpath, "X": "1"}).run(["env"], timeout_s=10)
    assert set(result.stdout.decode().splitlines()) == {f"PATH={os.defpath}", "X=1"}


def test_path_finds_tools_where_the_daemon_does(tmp_path: Path) -> None:
    """``path`` replaces only PATH: a tool first on it runs; nothing else is inherited."""
    tool = tmp_path / "sensors"
    tool.write_text("#!/bin/sh\necho fake sensors\n")
    tool.chmod(0o755)
    runner = LocalRunner(path=f"{tmp_path}:/usr/bin:/bin")
    assert runner.run(["sensors"], timeout_s=10).stdout == b"fake sensors\n"
    env = set(runner.run(["env"], timeout_s=10).stdout.decode().splitlines())
    assert env == {f"PATH={tmp_path}:/usr/bin:/bin", "LC_ALL=C", "LANG=C"}
