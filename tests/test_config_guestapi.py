"""The ``guestapi.*`` configuration section: defaults, booleans, the env overlay, bounds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from felhom_agent.config import GuestApiConfig, load_config, redacted_view
from felhom_agent.errors import ConfigError
from tests.configfiles import base_config, write_config


def _load(tmp_path: Path, section: Any = None, env: dict[str, str] | None = None) -> Any:
    data = base_config(tmp_path)
    if section is not None:
        data["guestapi"] = section
    return load_config(write_config(tmp_path, data), env=env or {})


def _error(tmp_path: Path, section: Any = None, env: dict[str, str] | None = None
           ) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, section, env)
    return info.value


def test_defaults_off(tmp_path: Path) -> None:
    """Absent section: off, and every documented default."""
    config = _load(tmp_path)
    assert config.guestapi == GuestApiConfig()
    assert redacted_view(config)["guestapi"] == {
        "enabled": False, "socket_dir": "/run/felhom-agent/guests",
        "container_path": "/run/felhom/agent.sock", "rate_per_s": 5, "burst": 10,
        "backup_min_interval_s": 3600, "backups_per_day": 4, "allow_restart": False,
        "serial_dir": "/var/run/qemu-server"}


def test_file_values_are_taken(tmp_path: Path) -> None:
    """Every key of the file reaches the model and the --print-config view."""
    section: dict[str, Any] = {
        "enabled": True, "socket_dir": "/run/x", "container_path": "/dev/felhom/sock",
        "rate_per_s": 2.5, "burst": 3, "backup_min_interval_s": 60, "backups_per_day": 1,
        "allow_restart": True, "serial_dir": "/tmp/serial"}
    config = _load(tmp_path, section)
    assert config.guestapi == GuestApiConfig(
        enabled=True, socket_dir=Path("/run/x"), container_path="/dev/felhom/sock",
        rate_per_s=2.5, burst=3, backup_min_interval_s=60, backups_per_day=1,
        allow_restart=True, serial_dir=Path("/tmp/serial"))
    assert json.loads(json.dumps(redacted_view(config)))["guestapi"] == section


@pytest.mark.parametrize(("text", "value"), [("true", True), ("1", True), ("on", True),
                                             ("false", False), ("0", False), ("No", False)])
def test_env_booleans(tmp_path: Path, text: str, value: bool) -> None:
    """FELHOM_AGENT_GUESTAPI_ENABLED accepts the usual spellings of a boolean."""
    config = _load(tmp_path, env={"FELHOM_AGENT_GUESTAPI_ENABLED": text,
                                  "FELHOM_AGENT_GUESTAPI_ALLOW_RESTART": text})
    assert config.guestapi.enabled is value and config.guestapi.allow_restart is value


@pytest.mark.parametrize(("section", "env", "key"), [
    ({"enabled": "true"}, None, "guestapi.enabled"),
    ({"enabled": 1}, None, "guestapi.enabled"),
    (None, {"FELHOM_AGENT_GUESTAPI_ENABLED": "maybe"}, "FELHOM_AGENT_GUESTAPI_ENABLED"),
    ({"container_path": "/agent.sock"}, None, "guestapi.container_path"),
    ({"container_path": "/run/../etc/x"}, None, "guestapi.container_path"),
    ({"container_path": "/run/" + "x" * 100}, None, "guestapi.container_path"),
    ({"container_path": "run/felhom"}, None, "guestapi.container_path"),
    ({"rate_per_s": 0}, None, "guestapi.rate_per_s"),
    ({"burst": 0}, None, "guestapi.burst"),
    ({"backups_per_day": 97}, None, "guestapi.backups_per_day"),
    ({"socket_dir": "relative"}, None, "guestapi.socket_dir"),
    ({"port": 80}, None, "guestapi.port"),
])
def test_wrong_values_are_refused_naming_the_key(tmp_path: Path, section: Any,
                                                 env: dict[str, str] | None, key: str) -> None:
    """A string for a boolean, a path a socket cannot have, out-of-range numbers, unknown keys."""
    assert _error(tmp_path, section, env).key == key
