"""scripts/felhom-agent-selftest against a fake felhom-agent: exit mapping, output, lock, timeout.

The monitoring-plugin contract checked here: exit 0 OK / 1 WARNING / 2 CRITICAL / 3 UNKNOWN,
the first line a one-line summary starting with the state word, details after it, silence
when OK unless -v, and never two runs at once.
"""

from __future__ import annotations

import os
import select
import subprocess
from pathlib import Path

import pytest

from tests.ops.conftest import (
    FAILING_READ,
    PASSING_READ,
    RUN_TIMEOUT_S,
    SELFTEST_SCRIPT,
    Mode,
    make_fake_agent,
    make_fifo,
    run_script,
    script_env,
)

OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3


def _wait_readable(fd: int, what: str) -> bytes:
    ready, _, _ = select.select([fd], [], [], RUN_TIMEOUT_S)
    assert ready, f"timed out waiting for {what}"
    return os.read(fd, 64)


def test_script_is_executable_bash() -> None:
    """The shipped script is executable and passes `bash -n` (syntax) so cron can run it."""
    assert os.access(SELFTEST_SCRIPT, os.X_OK)
    assert SELFTEST_SCRIPT.read_text().startswith("#!/usr/bin/env bash\n")
    subprocess.run(["bash", "-n", str(SELFTEST_SCRIPT)], check=True, timeout=RUN_TIMEOUT_S)


def test_ok_is_quiet(tmp_path: Path, lock: Path) -> None:
    """Agent exit 0 maps to OK (0) and prints nothing, so cron mails nothing."""
    fake = make_fake_agent(tmp_path / "bin", {"read": Mode(PASSING_READ, "log line\n", 0)})
    res = run_script([], script_env(tmp_path, agent_dir=fake.path.parent), lock=lock)
    assert (res.returncode, res.stdout) == (OK, "")
    assert fake.argv_lines() == [["--selftest=read"]]


def test_ok_verbose_prints_summary_then_details(tmp_path: Path, lock: Path) -> None:
    """With -v an OK run prints `OK …` as the first line, the agent's check lines after it."""
    fake = make_fake_agent(tmp_path / "bin", {"read": Mode(PASSING_READ, "", 0)})
    res = run_script(["-v"], script_env(tmp_path, agent_dir=fake.path.parent), lock=lock)
    assert res.returncode == OK
    lines = res.stdout.splitlines()
    assert lines[0] == "OK felhom-agent selftest read: all 2 checks passed"
    assert "OK   permissions    all required privileges present" in lines[1:]


def test_a_warn_line_is_a_warning(tmp_path: Path, lock: Path) -> None:
    """Agent exit 0 with a WARN line (a storage at its critical level) maps to WARNING (1)
    and is printed, so cron mails it."""
    warned = ("OK   api-reachable  PVE 9.2.2\n"
              "WARN storage        at or above 95% (storage.crit_pct): local 96% used\n"
              "selftest read: all 2 checks passed; 1 WARNING(S) (storage)\n")
    fake = make_fake_agent(tmp_path / "bin", {"read": Mode(warned, "", 0)})
    res = run_script([], script_env(tmp_path, agent_dir=fake.path.parent), lock=lock)
    assert res.returncode == 1
    lines = res.stdout.splitlines()
    assert lines[0] == ("WARNING felhom-agent selftest read: all 2 checks passed; "
                        "1 WARNING(S) (storage)")
    assert any("local 96% used" in line for line in lines[1:])


_MAPPING_CASES = {
    "check-failed-critical": (1, FAILING_READ, "", CRITICAL,
                              "CRITICAL felhom-agent selftest read: 1 of 2 checks FAILED "
                              "(permissions)"),
    "config-error-unknown": (2, "", "felhom-agent: config error: proxmox.node: required\n",
                             UNKNOWN,
                             "UNKNOWN felhom-agent selftest read: usage or configuration error "
                             "(exit 2): felhom-agent: config error: proxmox.node: required"),
    "odd-status-unknown": (5, "", "Traceback (most recent call last):\n", UNKNOWN,
                           "UNKNOWN felhom-agent selftest read: crashed: unexpected exit status 5"),
}


@pytest.mark.parametrize("case", sorted(_MAPPING_CASES))
def test_exit_mapping_and_first_line(tmp_path: Path, lock: Path, case: str) -> None:
    """Agent 1 -> CRITICAL, 2 -> UNKNOWN, anything else -> UNKNOWN; the summary line first."""
    agent_rc, stdout, stderr, want_rc, want_first = _MAPPING_CASES[case]
    fake = make_fake_agent(tmp_path / "bin", {"read": Mode(stdout, stderr, agent_rc)})
    res = run_script([], script_env(tmp_path, agent_dir=fake.path.parent), lock=lock)
    assert res.returncode == want_rc
    assert res.stdout.splitlines()[0] == want_first


def test_failure_details_follow_the_summary(tmp_path: Path, lock: Path) -> None:
    """A problem is always printed with details: the agent's FAIL lines and its stderr."""
    fake = make_fake_agent(tmp_path / "bin",
                           {"read": Mode(FAILING_READ, "warning: slow API\n", 1)})
    res = run_script([], script_env(tmp_path, agent_dir=fake.path.parent), lock=lock)
    body = res.stdout.splitlines()[1:]
    assert "FAIL permissions    missing VM.PowerMgmt on /vms" in body
    assert "warning: slow API" in body
    assert any(line.startswith("--- felhom-agent --selftest=read: exit 1") for line in body)


def test_agent_killed_by_signal_is_unknown(tmp_path: Path, lock: Path) -> None:
    """An agent that crashes with a signal (SIGSEGV) is UNKNOWN, naming the signal."""
    fake = make_fake_agent(tmp_path / "bin", {"read": Mode(action="segv")})
    res = run_script([], script_env(tmp_path, agent_dir=fake.path.parent), lock=lock)
    assert res.returncode == UNKNOWN
    assert res.stdout.splitlines()[0] == (
        "UNKNOWN felhom-agent selftest read: crashed: killed by signal SIGSEGV")


def test_hanging_agent_times_out_unknown(tmp_path: Path, lock: Path) -> None:
    """An agent still running past --timeout is killed and reported UNKNOWN."""
    fake = make_fake_agent(tmp_path / "bin", {"read": Mode(action="hang")})
    res = run_script(["--timeout", "0.5"],
                     script_env(tmp_path, agent_dir=fake.path.parent), lock=lock)
    assert res.returncode == UNKNOWN
    assert res.stdout.splitlines()[0] == (
        "UNKNOWN felhom-agent selftest read: timed out after 0.5s; the run was killed")


def test_hub_runs_both_modes_and_worst_state_wins(tmp_path: Path, lock: Path) -> None:
    """--hub adds --selftest=hub; read OK + hub failed is CRITICAL with both summaries."""
    fake = make_fake_agent(tmp_path / "bin", {
        "read": Mode(PASSING_READ, "", 0),
        "hub": Mode("FAIL hub-round-trip  401\nselftest hub: 1 of 1 checks FAILED\n", "", 1),
    })
    res = run_script(["--hub", "--config", "/etc/x.json"],
                     script_env(tmp_path, agent_dir=fake.path.parent), lock=lock)
    assert res.returncode == CRITICAL
    assert res.stdout.splitlines()[0] == (
        "CRITICAL felhom-agent selftest read: all 2 checks passed; "
        "selftest hub: 1 of 1 checks FAILED")
    assert fake.argv_lines() == [["--selftest=read", "--config", "/etc/x.json"],
                                 ["--selftest=hub", "--config", "/etc/x.json"]]


def test_unknown_outranks_ok_but_not_critical(tmp_path: Path, lock: Path) -> None:
    """Worst-state order is OK < WARNING < UNKNOWN < CRITICAL: CRITICAL + UNKNOWN = CRITICAL."""
    fake = make_fake_agent(tmp_path / "bin", {
        "read": Mode(FAILING_READ, "", 1),
        "hub": Mode("", "felhom-agent: usage error: bad mode\n", 2),
    })
    env = script_env(tmp_path, agent_dir=fake.path.parent)
    assert run_script(["--hub"], env, lock=lock).returncode == CRITICAL
    fake = make_fake_agent(tmp_path / "bin2", {
        "read": Mode(PASSING_READ, "", 0),
        "hub": Mode("", "felhom-agent: usage error: bad mode\n", 2),
    })
    env = script_env(tmp_path, agent_dir=fake.path.parent)
    assert run_script(["--hub"], env, lock=lock).returncode == UNKNOWN


def test_felhom_agent_bin_is_used_and_not_leaked(tmp_path: Path, lock: Path) -> None:
    """$FELHOM_AGENT_BIN wins over PATH and is removed from the agent's environment."""
    fake = make_fake_agent(tmp_path / "elsewhere", {"read": Mode(PASSING_READ, "", 0)},
                           name="agent-under-test")
    env = script_env(tmp_path, extra={"FELHOM_AGENT_BIN": str(fake.path)})
    res = run_script(["--credentials-dir", str(tmp_path / "creds")], env, lock=lock)
    assert res.returncode == OK, res.stdout
    seen = fake.env_of_last_run()
    assert "FELHOM_AGENT_BIN" not in seen
    assert not [k for k in seen if k.startswith("FELHOM_AGENT_")]
    assert seen["CREDENTIALS_DIRECTORY"] == str(tmp_path / "creds")


def test_inherited_credentials_directory_is_kept(tmp_path: Path, lock: Path) -> None:
    """Under systemd ($CREDENTIALS_DIRECTORY set) the unit's credentials reach the agent."""
    fake = make_fake_agent(tmp_path / "bin", {"read": Mode(PASSING_READ, "", 0)})
    env = script_env(tmp_path, agent_dir=fake.path.parent,
                     extra={"CREDENTIALS_DIRECTORY": "/run/credentials/x.service"})
    res = run_script(["--credentials-dir", "/ignored"], env, lock=lock)
    assert res.returncode == OK
    assert fake.env_of_last_run()["CREDENTIALS_DIRECTORY"] == "/run/credentials/x.service"


@pytest.mark.parametrize("how", ["path", "env"])
def test_missing_binary_is_unknown(tmp_path: Path, lock: Path, how: str) -> None:
    """No felhom-agent on PATH, or a FELHOM_AGENT_BIN that does not exist, is UNKNOWN."""
    extra = {"FELHOM_AGENT_BIN": str(tmp_path / "nope")} if how == "env" else {}
    env = script_env(tmp_path, extra=extra)
    env["PATH"] = str(tmp_path / "empty-bin") + ":/usr/bin:/bin"
    res = run_script(["-v"], env, lock=lock)
    assert res.returncode == UNKNOWN
    first = res.stdout.splitlines()[0]
    assert first.startswith("UNKNOWN felhom-agent-selftest: felhom-agent not ")
    assert ("FELHOM_AGENT_BIN" in first) and (str(tmp_path / "nope") in first or how == "path")


def test_bad_arguments_are_unknown(tmp_path: Path, lock: Path) -> None:
    """An unknown option or a non-positive --timeout is UNKNOWN (cannot run the check)."""
    env = script_env(tmp_path)
    for args in (["--bogus"], ["--timeout", "0"], ["--timeout", "abc"], ["--config"]):
        res = run_script(args, env, lock=lock)
        assert res.returncode == UNKNOWN, args
        assert res.stdout.startswith("UNKNOWN felhom-agent-selftest: "), args


def test_help_exits_zero(tmp_path: Path, lock: Path) -> None:
    """--help prints the usage with the exit-status contract and exits 0."""
    res = run_script(["--help"], script_env(tmp_path), lock=lock)
    assert res.returncode == 0
    assert res.stdout.startswith("usage: felhom-agent-selftest")
    assert "0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN" in res.stdout


def test_lock_held_by_another_process_refuses_run(tmp_path: Path, lock: Path) -> None:
    """While another process holds the flock, a run exits UNKNOWN at once and runs no agent."""
    fake = make_fake_agent(tmp_path / "bin", {"read": Mode(PASSING_READ, "", 0)})
    env = script_env(tmp_path, agent_dir=fake.path.parent)
    holder = subprocess.Popen(
        ["flock", "-n", str(lock), "sh", "-c", "echo held; cat >/dev/null"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None and holder.stdin is not None
        assert _wait_readable(holder.stdout.fileno(), "the lock holder") == b"held\n"
        res = run_script([], env, lock=lock)
        assert res.returncode == UNKNOWN
        assert res.stdout.splitlines()[0] == (
            f"UNKNOWN felhom-agent-selftest: another felhom-agent-selftest run holds the "
            f"lock {lock}; not starting")
        assert fake.argv_lines() == []
    finally:
        if holder.stdin is not None:
            holder.stdin.close()
        holder.wait(timeout=RUN_TIMEOUT_S)
    assert holder.returncode == 0
    assert run_script([], env, lock=lock).returncode == OK


def test_second_run_refused_while_first_is_running(tmp_path: Path, lock: Path) -> None:
    """Two script runs never overlap: the second is refused while the first's agent runs."""
    started_fd = make_fifo(tmp_path / "started")
    release_fd = make_fifo(tmp_path / "release")
    try:
        fake = make_fake_agent(tmp_path / "bin", {"read": Mode(
            PASSING_READ, "", 0, action="block",
            started_fifo=tmp_path / "started", release_fifo=tmp_path / "release")})
        env = script_env(tmp_path, agent_dir=fake.path.parent)
        first = subprocess.Popen(
            ["bash", str(SELFTEST_SCRIPT), "--lock-file", str(lock), "-v"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        try:
            assert _wait_readable(started_fd, "the first run's agent") == b"started\n"
            second = run_script([], env, lock=lock)
            assert second.returncode == UNKNOWN
            assert "holds the lock" in second.stdout.splitlines()[0]
        finally:
            os.write(release_fd, b"go\n")
            out, _ = first.communicate(timeout=RUN_TIMEOUT_S)
        assert first.returncode == OK
        assert out.startswith("OK felhom-agent selftest read: all 2 checks passed\n")
        assert len(fake.argv_lines()) == 1
    finally:
        os.close(started_fd)
        os.close(release_fd)


def test_unwritable_lock_location_is_unknown(tmp_path: Path) -> None:
    """A lock file that cannot be opened is UNKNOWN (the run cannot be made exclusive)."""
    fake = make_fake_agent(tmp_path / "bin", {"read": Mode(PASSING_READ, "", 0)})
    env = script_env(tmp_path, agent_dir=fake.path.parent)
    res = run_script([], env, lock=tmp_path / "no-such-dir" / "x.lock")
    assert res.returncode == UNKNOWN
    assert res.stdout.startswith("UNKNOWN felhom-agent-selftest: cannot open lock file ")
    assert fake.argv_lines() == []
