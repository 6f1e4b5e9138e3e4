"""The command line's foundation modes and error contract.

See ``docs/architecture.md`` ("Command line").
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from felhom_agent import __version__
from felhom_agent.cli import main
from tests.configfiles import HUB_TOKEN, PROXMOX_SECRET, base_config, write_config
from tests.support.cli import run_cli

ROOT = Path(__file__).resolve().parents[1]


def test_version_in_process() -> None:
    """--version prints 'felhom-agent X.Y.Z' and exits 0."""
    out = io.StringIO()
    saved = sys.stdout
    sys.stdout = out  # argparse's version action writes to sys.stdout
    try:
        code = main(["--version"], env={})
    finally:
        sys.stdout = saved
    assert code == 0
    assert out.getvalue().strip() == f"felhom-agent {__version__}"


@pytest.mark.parametrize("command", [[sys.executable, "-m", "felhom_agent"],
                                     [str(Path(sys.executable).parent / "felhom-agent")]])
def test_module_and_script_are_the_same_program(command: list[str]) -> None:
    """python -m felhom_agent and the felhom-agent console script both print the version."""
    result = subprocess.run([*command, "--version"], capture_output=True, text=True,
                            timeout=60, check=False, cwd=ROOT)
    assert result.returncode == 0
    assert result.stdout.strip() == f"felhom-agent {__version__}"


def test_print_config_redacts_and_shows_overlay(tmp_path: Path) -> None:
    """--print-config shows the effective config with secrets as *** and env values applied."""
    data = base_config(tmp_path)
    data["hub"] = {"url": "http://127.0.0.1:9", "token": HUB_TOKEN}
    path = write_config(tmp_path, data)
    code, out, err = run_cli(["--config", str(path), "--print-config"],
                             {"FELHOM_AGENT_HUB_INTERVAL_S": "5"})
    assert code == 0, err
    view = json.loads(out)
    assert view["hub"]["interval_s"] == 5
    assert view["proxmox"]["token_secret"] == "***"
    assert view["hub"]["token"] == "***"
    assert PROXMOX_SECRET not in out + err
    assert HUB_TOKEN not in out + err


@pytest.mark.parametrize(
    ("content", "env", "mode", "fragment"),
    [
        ("{nope", {}, 0o600, "invalid JSON at line 1, column 2"),
        ('{"host_id": 1}', {}, 0o600, "host_id"),
        (None, {"FELHOM_AGENT_PROXMOX_TOKN_SECRET": "x"}, 0o600,
         "FELHOM_AGENT_PROXMOX_TOKN_SECRET"),
        (None, {}, 0o644, "chmod 600"),
        (None, {"FELHOM_AGENT_HUB_URL": "http://hub.example.com",
                "FELHOM_AGENT_HUB_TOKEN": HUB_TOKEN}, 0o600, "loopback"),
        (None, {"FELHOM_AGENT_PROXMOX_TLS_FINGERPRINT": "null"}, 0o600, "no insecure default"),
        (None, {"FELHOM_AGENT_PROXMOX_TLS_FINGERPRINT": "AB:CD"}, 0o600, "fingerprint"),
        (None, {"FELHOM_AGENT_PROXMOX_TOKEN_SECRET_FILE": "/nonexistent/token",
                "FELHOM_AGENT_PROXMOX_TOKEN_SECRET": "null"}, 0o600, "cannot read secret file"),
    ],
)
def test_bad_input_exits_2_with_one_clear_message(
    tmp_path: Path, content: str | None, env: dict[str, str], mode: int, fragment: str
) -> None:
    """Every bad input exits 2 with one message naming the problem, no traceback, no secret."""
    path = write_config(tmp_path, base_config(tmp_path) if content is None else content,
                        mode=mode)
    code, out, err = run_cli(["--config", str(path), "--print-config"], env)
    assert code == 2
    assert out == ""
    assert fragment in err
    assert "Traceback" not in err
    assert err.startswith("felhom-agent: config error: ")
    assert len(err.strip().splitlines()) == 1
    assert PROXMOX_SECRET not in err
    assert HUB_TOKEN not in err


def test_unknown_flag_exits_2() -> None:
    """An unknown flag is a usage error naming the flag."""
    code, _, err = run_cli(["--frobnicate"])
    assert code == 2
    assert "--frobnicate" in err


def test_two_modes_exit_2(tmp_path: Path) -> None:
    """Modes are mutually exclusive."""
    code, _, err = run_cli(["--print-config", "--version"])
    assert code == 2
    assert "not allowed with argument" in err


def test_help_lists_modes_and_exit_codes() -> None:
    """--help lists the working modes and the exit status contract."""
    out = io.StringIO()
    saved = sys.stdout
    sys.stdout = out
    try:
        assert main(["--help"], env={}) == 0
    finally:
        sys.stdout = saved
    text = out.getvalue()
    assert "--print-config" in text
    assert "exit status" in text


def test_subprocess_bad_config_no_traceback(tmp_path: Path) -> None:
    """As a real process, a broken config exits 2 with no traceback."""
    path = write_config(tmp_path, "[")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FELHOM_AGENT_")}
    result = subprocess.run([sys.executable, "-m", "felhom_agent", "--config", str(path),
                             "--print-config"], capture_output=True, text=True, timeout=60,
                            check=False, env=env, cwd=ROOT)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "invalid JSON" in result.stderr
