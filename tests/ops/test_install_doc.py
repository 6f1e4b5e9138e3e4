"""The README's install guide stays true to the code: privileges, privsep grants, config, paths.

The guide is for an operator who has never seen the project, so drift between it and the
code is a bug: a missing privilege means 403s on day one, a config example that does not load
means exit 2 at the first selftest.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from felhom_agent.config import load_config
from felhom_agent.config._load import CREDENTIAL_NAMES
from felhom_agent.proxmox.selftest import OPTIONAL_PRIVILEGES, REQUIRED_PRIVILEGES
from tests.ops.conftest import PACKAGING, REPO
from tests.ops.unitfile import parse_unit

GUIDE = REPO / "README.md"
_README = GUIDE.read_text(encoding="utf-8")
# The guide is the README section "Installing on a PVE host", up to the next level-2 heading.
TEXT = _README.split("## Installing on a PVE host", 1)[1].split("\n## ", 1)[0]


def _shell_blocks() -> list[str]:
    return re.findall(r"```sh\n(.*?)```", TEXT, re.S)


def _commands() -> list[list[str]]:
    """Every shell command line of the guide, continuation lines joined, as argv lists."""
    out: list[list[str]] = []
    for block in _shell_blocks():
        for raw in block.replace("\\\n", " ").splitlines():
            line = raw.split("  #", 1)[0].strip()
            if line:
                out.append(shlex.split(line, comments=True))
    return out


def _roles() -> dict[str, set[str]]:
    roles: dict[str, set[str]] = {}
    for argv in _commands():
        if argv[:3] == ["pveum", "role", "add"]:
            privs = argv[argv.index("--privs") + 1]
            roles[argv[3]] = set(re.split(r"[,\s]+", privs))
    return roles


def _grants(kind: str) -> set[tuple[str, str, str]]:
    """(path, subject, role) for every `pveum acl modify PATH --KIND SUBJECT --roles ROLE`."""
    found = set()
    for argv in _commands():
        if argv[:3] == ["pveum", "acl", "modify"] and f"--{kind}" in argv:
            role = argv[argv.index("--roles") + 1]
            subject = argv[argv.index(f"--{kind}") + 1]
            found.add((argv[3], subject, role))
    return found


def test_guide_is_at_most_200_lines() -> None:
    """The install guide stays short enough to paste into the README (<= 200 lines)."""
    assert len(TEXT.splitlines()) <= 200


def test_roles_grant_exactly_the_privileges_the_selftest_checks() -> None:
    """The roles hold every required and optional privilege of proxmox/selftest.py, no more."""
    roles = _roles()
    wanted = {p.privilege for p in REQUIRED_PRIVILEGES + OPTIONAL_PRIVILEGES}
    assert set().union(*roles.values()) == wanted
    assert {p.privilege for p in REQUIRED_PRIVILEGES} <= roles["FelhomAgent"]
    for priv in wanted:
        assert priv in TEXT.split("**The privsep rule.**")[0], f"{priv} missing from the table"


def test_required_privileges_are_granted_on_their_paths() -> None:
    """Each required privilege's role is granted on its ACL path (or a parent that propagates)."""
    loop = next(line for block in _shell_blocks() for line in block.splitlines()
                if line.startswith("for path in "))
    loop_paths = set(shlex.split(loop.removeprefix("for path in ").split(";")[0]))
    for req in REQUIRED_PRIVILEGES:
        assert req.path.replace("{node}", "$NODE") in loop_paths, req


def test_privsep_rule_role_granted_to_user_and_token() -> None:
    """Every role granted to the user is granted to the token on the same path, and back."""
    users = {(path, role) for path, _, role in _grants("users")}
    tokens = {(path, role) for path, _, role in _grants("tokens")}
    assert users and users == tokens
    assert {subj for _, subj, _ in _grants("tokens")} == {"felhom@pve!agent"}
    assert {subj for _, subj, _ in _grants("users")} == {"felhom@pve"}
    created = re.findall(r"pveum user token add (\S+) (\S+) --privsep 1", TEXT)
    assert created == [("felhom@pve", "agent")]


def test_config_example_loads_with_credentials(tmp_path: Path) -> None:
    """The guide's config.json, with its placeholder filled in, passes the real config loader."""
    block = re.search(r"```json\n(.*?)```", TEXT, re.S)
    assert block
    fingerprint = ":".join(["AB"] * 32)
    doc = json.loads(block.group(1).replace("PASTE:THE:FINGERPRINT:FROM:ABOVE", fingerprint))
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps(doc))
    config_path.chmod(0o600)
    creds = tmp_path / "creds"
    creds.mkdir(mode=0o700)
    for name in CREDENTIAL_NAMES.values():
        (creds / name).write_text(f"secret-for-{name}-0123456789\n")
        (creds / name).chmod(0o400)
    config = load_config(config_path, env={"CREDENTIALS_DIRECTORY": str(creds)})
    assert config.proxmox.token_id == "felhom@pve!agent"
    assert config.proxmox.token_secret is not None
    assert config.hub.token is not None


def test_credentials_are_stored_where_the_units_load_them() -> None:
    """Each credential is written to /etc/credstore/NAME, where LoadCredential=NAME finds it."""
    for name in CREDENTIAL_NAMES.values():
        assert f"> /etc/credstore/{name}" in TEXT, name


def test_paths_match_the_units() -> None:
    """The venv, script and agent paths in the guide are the ones the units run."""
    agent = parse_unit(PACKAGING / "felhom-agent.service")
    selftest = parse_unit(PACKAGING / "felhom-agent-selftest.service")
    python = agent.get("Service", "ExecStart").split()[0]
    assert python == "/opt/felhom-agent/venv/bin/python"
    assert "python3 -m venv /opt/felhom-agent/venv" in TEXT
    script = selftest.get("Service", "ExecStart").split()[0]
    assert f"install -m 0755 scripts/felhom-agent-selftest {Path(script).parent}/" in TEXT
    bin_env = selftest.get("Service", "Environment")
    assert bin_env in TEXT  # the cron file sets the same FELHOM_AGENT_BIN


@pytest.mark.parametrize("ref", sorted(set(re.findall(r"\b(?:packaging|scripts)/[\w.*-]+", TEXT))))
def test_referenced_repo_files_exist(ref: str) -> None:
    """Every packaging/ or scripts/ file the guide installs exists in the release tree."""
    assert list(REPO.glob(ref)), ref
