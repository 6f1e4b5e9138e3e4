"""Configuration loading, the env overlay and validation.

See ``docs/architecture.md`` ("Configuration").
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from felhom_agent.config import KEYS, env_name, load_config, redacted_view
from felhom_agent.config._keys import SECTIONS
from felhom_agent.errors import AgentError, ConfigError
from felhom_agent.secret import Secret
from tests.configfiles import FINGERPRINT, HUB_TOKEN, PROXMOX_SECRET, base_config, write_config


def _load(tmp_path: Path, data: Any, env: dict[str, str] | None = None, mode: int = 0o600
          ) -> Any:
    return load_config(write_config(tmp_path, data, mode=mode), env=env or {})


def _error(tmp_path: Path, data: Any, env: dict[str, str] | None = None, mode: int = 0o600
           ) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, data, env, mode)
    return info.value


def test_minimal_config_gets_defaults(tmp_path: Path) -> None:
    """A minimal file yields the documented defaults for every optional key."""
    config = _load(tmp_path, base_config(tmp_path))
    assert config.host_id == "pve1"
    assert config.proxmox.timeout_s == 30
    assert config.proxmox.max_connections == 4
    assert config.proxmox.privileged.mode == "local"
    assert config.hub.url is None
    assert config.reconcile.workers == 8
    assert config.authz.namespace == "felhom-op"
    assert config.proxmox.tls_fingerprint == FINGERPRINT
    assert config.proxmox.token_secret.reveal() == PROXMOX_SECRET
    assert config.proxmox.privileged.fstab_path == Path("/etc/fstab")
    assert config.proxmox.privileged.mount_root == Path("/mnt/felhom")
    assert (config.storage.warn_pct, config.storage.crit_pct) == (85, 95)
    assert config.storage.smart_interval_s == 3600


def test_no_two_keys_flatten_to_one_env_name() -> None:
    """Every key has its own FELHOM_AGENT_* name, and no env name is also a section's."""
    names = [env_name(key.path) for key in KEYS]
    assert len(names) == len(set(names))
    section_names = {env_name(section) for section in SECTIONS}
    assert not section_names & set(names)


def test_env_overlay_types_values(tmp_path: Path) -> None:
    """Env values are parsed to the key's type and override the file."""
    env = {
        "FELHOM_AGENT_HUB_INTERVAL_S": "5",
        "FELHOM_AGENT_RECONCILE_WORKERS": "3",
        "FELHOM_AGENT_HOST_ID": "pve9",
        "FELHOM_AGENT_PROXMOX_PRIVILEGED_MODE": "off",
    }
    config = _load(tmp_path, base_config(tmp_path), env)
    assert config.hub.interval_s == 5
    assert config.reconcile.workers == 3
    assert config.host_id == "pve9"
    assert config.proxmox.privileged.mode == "off"
    assert redacted_view(config)["hub"]["interval_s"] == 5


def test_env_secret_overrides_and_stays_secret(tmp_path: Path) -> None:
    """A secret from the environment is wrapped as Secret and redacted in the view."""
    env = {"FELHOM_AGENT_PROXMOX_TOKEN_SECRET": "env-secret-value-123"}
    config = _load(tmp_path, base_config(tmp_path), env)
    assert config.proxmox.token_secret == Secret("env-secret-value-123")
    assert "env-secret-value-123" not in json.dumps(redacted_view(config))


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("FELHOM_AGENT_PROXMOX_TOKN_SECRET", "FELHOM_AGENT_PROXMOX_TOKEN_SECRET"),
        ("FELHOM_AGENT_NOPE", "unknown environment variable FELHOM_AGENT_NOPE"),
        ("FELHOM_AGENT_PROXMOX", "unknown environment variable"),
    ],
)
def test_unknown_env_variable_is_an_error(tmp_path: Path, name: str, fragment: str) -> None:
    """An unknown FELHOM_AGENT_* variable is refused (with a suggestion when close)."""
    error = _error(tmp_path, base_config(tmp_path), {name: "x"})
    assert fragment in str(error)
    assert error.key == name


def test_env_value_of_wrong_type(tmp_path: Path) -> None:
    """A non-numeric env value for a numeric key names the variable and what is allowed."""
    error = _error(tmp_path, base_config(tmp_path), {"FELHOM_AGENT_HUB_INTERVAL_S": "soon"})
    assert "FELHOM_AGENT_HUB_INTERVAL_S" in str(error)
    assert "'soon'" in str(error)
    assert "a number" in str(error)


def test_malformed_json_names_line_and_column(tmp_path: Path) -> None:
    """Malformed JSON reports the line and column."""
    error = _error(tmp_path, '{\n  "host_id": "pve1",\n  "state_dir" "x"\n}')
    assert "line 3, column 15" in str(error)


def test_duplicate_key_is_an_error(tmp_path: Path) -> None:
    """A key given twice in one object is refused rather than last-one-wins."""
    error = _error(tmp_path, '{"host_id": "a", "host_id": "b"}')
    assert "appears twice" in str(error)


def test_non_finite_numbers_are_refused(tmp_path: Path) -> None:
    """NaN/Infinity are not JSON: refused like a syntax error, not read as a number."""
    error = _error(tmp_path, '{"host_id": "a", "reconcile": {"interval_s": NaN}}')
    assert error.key == "--config" and "NaN is not valid JSON" in str(error)


def test_top_level_must_be_object(tmp_path: Path) -> None:
    """A JSON array at the top level is refused."""
    assert "top level must be a JSON object" in str(_error(tmp_path, "[1, 2]"))


@pytest.mark.parametrize(
    ("patch", "key", "fragment"),
    [
        ({"host_id": 7}, "host_id", "must be a string"),
        ({"proxmox": {"timeout_s": "30"}}, "proxmox.timeout_s", "must be a number > 10"),
        ({"proxmox": {"timeout_s": 5}}, "proxmox.timeout_s", "5 is not allowed"),
        ({"proxmox": {"max_connections": 2.5}}, "proxmox.max_connections", "an integer"),
        ({"proxmox": {"max_connections": True}}, "proxmox.max_connections", "a boolean"),
        ({"reconcile": {"workers": 0}}, "reconcile.workers", ">= 1"),
        ({"log": {"level": "loud"}}, "log.level", "one of debug, info, warning, error"),
        ({"log": "debug"}, "log", "must be a JSON object"),
        ({"state_dir": "relative/dir"}, "state_dir", "absolute path"),
        ({"host_id": "has space"}, "host_id", "'has space' is not allowed"),
        ({"proxmox": {"token_id": "agent"}}, "proxmox.token_id", "USER@REALM!TOKENID"),
        ({"proxmox": {"node": None}}, "proxmox.node", "null is not allowed"),
        ({"storage": {"warn_pct": 0}}, "storage.warn_pct", "an integer >= 1 and <= 100"),
        ({"storage": {"crit_pct": 101}}, "storage.crit_pct", "101 is not allowed"),
        ({"storage": {"warn_pct": 90, "crit_pct": 80}}, "storage.crit_pct",
         "below storage.warn_pct"),
        ({"storage": {"crit_pct": 50}}, "storage.crit_pct", "below storage.warn_pct (85)"),
        ({"storage": {"smart_interval_s": 1}}, "storage.smart_interval_s", ">= 10"),
        ({"proxmox": {"privileged": {"mount_root": "mnt/felhom"}}},
         "proxmox.privileged.mount_root", "absolute path"),
        ({"proxmox": {"privileged": {"mount_root": "/mnt/felhom/"}}},
         "proxmox.privileged.mount_root", "without a trailing slash"),
        ({"proxmox": {"privileged": {"mount_root": "/mnt/../etc"}}},
         "proxmox.privileged.mount_root", "plain components"),
        ({"proxmox": {"privileged": {"mount_root": "/mnt/a b"}}},
         "proxmox.privileged.mount_root", "plain components"),
        ({"proxmox": {"privileged": {"fstab_path": "etc/fstab"}}},
         "proxmox.privileged.fstab_path", "absolute path"),
    ],
)
def test_wrong_values_name_key_value_and_allowed(
    tmp_path: Path, patch: dict[str, Any], key: str, fragment: str
) -> None:
    """Each wrong type or value names the key and what is allowed."""
    data = base_config(tmp_path)
    for section, value in patch.items():
        if isinstance(value, dict) and isinstance(data.get(section), dict):
            data[section].update(value)
        else:
            data[section] = value
    error = _error(tmp_path, data)
    assert error.key == key
    assert key in str(error)
    assert fragment in str(error)


def test_unknown_key_is_an_error_with_suggestion(tmp_path: Path) -> None:
    """An unknown key is refused, and a near miss gets a suggestion."""
    data = base_config(tmp_path)
    data["proxmox"]["timeout"] = 30
    error = _error(tmp_path, data)
    assert "unknown key 'proxmox.timeout'" in str(error)
    assert "proxmox.timeout_s" in str(error)


@pytest.mark.parametrize("missing", ["host_id", "proxmox.api_url", "proxmox.node",
                                     "proxmox.token_id", "proxmox.token_secret"])
def test_missing_required_key(tmp_path: Path, missing: str) -> None:
    """A missing required key is named."""
    data = base_config(tmp_path)
    section, _, leaf = missing.rpartition(".")
    del (data[section] if section else data)[leaf]
    error = _error(tmp_path, data)
    assert error.key == missing
    assert "required" in str(error)


def test_https_proxmox_needs_fingerprint_or_ca(tmp_path: Path) -> None:
    """An https Proxmox URL with neither fingerprint nor CA file is refused: no insecure default."""
    data = base_config(tmp_path)
    del data["proxmox"]["tls_fingerprint"]
    error = _error(tmp_path, data)
    assert error.key == "proxmox.tls_fingerprint"
    assert "no insecure default" in str(error)


def test_http_proxmox_refused(tmp_path: Path) -> None:
    """The PVE API is https only; an http URL is refused."""
    data = base_config(tmp_path)
    data["proxmox"]["api_url"] = "http://127.0.0.1:8006"
    assert "only over https" in str(_error(tmp_path, data))


@pytest.mark.parametrize("fingerprint", ["AB:CD", "ZZ" * 32, ":".join(["AB"] * 31), "sha256"])
def test_malformed_fingerprint(tmp_path: Path, fingerprint: str) -> None:
    """A malformed fingerprint is refused, naming the accepted forms."""
    data = base_config(tmp_path)
    data["proxmox"]["tls_fingerprint"] = fingerprint
    error = _error(tmp_path, data)
    assert error.key == "proxmox.tls_fingerprint"
    assert "32 colon-separated hex pairs" in str(error)


def test_fingerprint_forms_normalised(tmp_path: Path) -> None:
    """Lower-case and colon-less fingerprints normalise to PVE's upper-case colon form."""
    data = base_config(tmp_path)
    data["proxmox"]["tls_fingerprint"] = "ab" * 32
    assert _load(tmp_path, data).proxmox.tls_fingerprint == FINGERPRINT


@pytest.mark.parametrize("url", ["http://hub.example.com", "http://10.0.0.5:8080",
                                 "http://0.0.0.0:80", "http://localhost:9000"])
def test_http_hub_only_on_loopback(tmp_path: Path, url: str) -> None:
    """The Bearer token never travels in clear: http:// only for a loopback hub."""
    data = base_config(tmp_path)
    data["hub"] = {"url": url, "token": HUB_TOKEN}
    error = _error(tmp_path, data)
    assert error.key == "hub.url"
    assert "loopback" in str(error)
    assert HUB_TOKEN not in str(error)


@pytest.mark.parametrize("url", ["http://127.0.0.1:9000", "http://127.1.2.3:1", "http://[::1]:8"])
def test_http_hub_on_loopback_accepted(tmp_path: Path, url: str) -> None:
    """Loopback http hubs (the simulators) are accepted."""
    data = base_config(tmp_path)
    data["hub"] = {"url": url, "token": HUB_TOKEN}
    assert _load(tmp_path, data).hub.url == url


def test_hub_needs_token(tmp_path: Path) -> None:
    """A hub URL without any token source is refused."""
    data = base_config(tmp_path)
    data["hub"] = {"url": "https://hub.example.com"}
    assert _error(tmp_path, data).key == "hub.token"


def test_world_readable_config_with_secret_refused(tmp_path: Path) -> None:
    """A group/other-readable file holding a secret is refused with the chmod fix."""
    error = _error(tmp_path, base_config(tmp_path), mode=0o644)
    assert "chmod 600" in str(error)
    assert PROXMOX_SECRET not in str(error)


def test_world_readable_config_without_secret_accepted(tmp_path: Path) -> None:
    """A readable config is fine when its secrets live in owner-only files."""
    secret_file = tmp_path / "token"
    secret_file.write_text(PROXMOX_SECRET + "\n")
    os.chmod(secret_file, 0o600)
    data = base_config(tmp_path)
    del data["proxmox"]["token_secret"]
    data["proxmox"]["token_secret_file"] = str(secret_file)
    config = _load(tmp_path, data, mode=0o644)
    assert config.proxmox.token_secret.reveal() == PROXMOX_SECRET


def test_unreadable_secret_file(tmp_path: Path) -> None:
    """A missing secret file is named with the OS reason."""
    data = base_config(tmp_path)
    del data["proxmox"]["token_secret"]
    data["proxmox"]["token_secret_file"] = str(tmp_path / "absent")
    error = _error(tmp_path, data)
    assert error.key == "proxmox.token_secret_file"
    assert "No such file" in str(error)


def test_group_readable_secret_file_refused(tmp_path: Path) -> None:
    """A secret file readable by group/other is refused like the config file."""
    secret_file = tmp_path / "token"
    secret_file.write_text(PROXMOX_SECRET)
    os.chmod(secret_file, 0o640)
    data = base_config(tmp_path)
    del data["proxmox"]["token_secret"]
    data["proxmox"]["token_secret_file"] = str(secret_file)
    assert "chmod 600" in str(_error(tmp_path, data))


def test_secret_and_secret_file_conflict(tmp_path: Path) -> None:
    """Setting a secret both inline and by file is ambiguous and refused."""
    data = base_config(tmp_path)
    data["proxmox"]["token_secret_file"] = str(tmp_path / "token")
    assert "both set" in str(_error(tmp_path, data))


def test_credentials_directory(tmp_path: Path) -> None:
    """systemd credentials supply secrets that the file does not set."""
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "proxmox_token_secret").write_text(PROXMOX_SECRET)
    (creds / "hub_token").write_text(HUB_TOKEN)
    for f in creds.iterdir():
        os.chmod(f, 0o400)
    data = base_config(tmp_path)
    del data["proxmox"]["token_secret"]
    data["hub"] = {"url": "https://hub.example.com"}
    config = _load(tmp_path, data, {"CREDENTIALS_DIRECTORY": str(creds)}, mode=0o644)
    assert config.proxmox.token_secret.reveal() == PROXMOX_SECRET
    assert config.hub.token is not None
    assert config.hub.token.reveal() == HUB_TOKEN


def test_secret_with_newline_refused_without_echo(tmp_path: Path) -> None:
    """A secret with whitespace inside (header injection) is refused and not echoed."""
    data = base_config(tmp_path)
    data["proxmox"]["token_secret"] = "abcdefgh\r\nX-Evil: 1"
    error = _error(tmp_path, data)
    assert "abcdefgh" not in str(error)
    assert "***" in str(error)


def test_missing_config_file(tmp_path: Path) -> None:
    """A missing config file says how to point at one."""
    with pytest.raises(ConfigError, match="--config PATH"):
        load_config(tmp_path / "nope.json", env={})


def test_ssh_mode_requires_ssh_keys(tmp_path: Path) -> None:
    """privileged.mode=ssh requires host, key file and known_hosts."""
    data = base_config(tmp_path)
    data["proxmox"]["privileged"] = {"mode": "ssh", "ssh_host": "pve1.lan"}
    assert _error(tmp_path, data).key == "proxmox.privileged.ssh_key_file"


def test_config_error_is_agent_error_and_value_error() -> None:
    """ConfigError is catchable both as AgentError and as ValueError."""
    assert issubclass(ConfigError, AgentError)
    assert issubclass(ConfigError, ValueError)


def test_secrets_never_in_repr_or_view(tmp_path: Path) -> None:
    """repr(config), str(config) and the redacted view never contain a secret value."""
    data = base_config(tmp_path)
    data["hub"] = {"url": "https://hub.example.com", "token": HUB_TOKEN}
    config = _load(tmp_path, data)
    for text in (repr(config), str(config), json.dumps(redacted_view(config)),
                 repr(config.proxmox), repr(config.hub), repr(config.proxmox.token_secret),
                 f"{config.proxmox.token_secret}"):
        assert PROXMOX_SECRET not in text
        assert HUB_TOKEN not in text
    view = redacted_view(config)
    assert view["proxmox"]["token_secret"] == "***"
    assert view["hub"]["token"] == "***"


def test_readme_documents_every_key_and_env_name() -> None:
    """The README's configuration reference names every key and its env variable."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    for key in KEYS:
        assert f"`{key.dotted}`" in readme, key.dotted
        assert f"`{key.env}`" in readme, key.env
