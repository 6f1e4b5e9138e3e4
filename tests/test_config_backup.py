"""The ``backup.*`` configuration section: defaults, file, env overlay, bounds, the view."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from felhom_agent.authz.delivered import DeliveredOp as SignedOp
from felhom_agent.authz.verifier import VerifyPolicy
from felhom_agent.config import BackupConfig, load_config, redacted_view
from felhom_agent.daemon.reload import apply_reload
from felhom_agent.errors import ConfigError
from felhom_agent.execution.status import OpResult
from tests.configfiles import base_config, write_config


def _load(tmp_path: Path, backup: Any = None, env: dict[str, str] | None = None) -> Any:
    data = base_config(tmp_path)
    if backup is not None:
        data["backup"] = backup
    return load_config(write_config(tmp_path, data), env=env or {})


def _error(tmp_path: Path, backup: Any = None, env: dict[str, str] | None = None
           ) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, backup, env)
    return info.value


def test_defaults_when_the_section_is_absent(tmp_path: Path) -> None:
    """Without a backup section every key has its documented default."""
    config = _load(tmp_path)
    assert config.backup == BackupConfig(min_keep=3, max_concurrent=1, safety_storage=None,
                                         space_margin_pct=20, stale_lock_s=60)
    assert redacted_view(config)["backup"] == {
        "min_keep": 3, "max_concurrent": 1, "safety_storage": None,
        "space_margin_pct": 20, "stale_lock_s": 60,
    }


def test_file_values_are_taken(tmp_path: Path) -> None:
    """Every key set in the file reaches the model and the --print-config view."""
    section: dict[str, Any] = {"min_keep": 5, "max_concurrent": 2, "safety_storage": "pbs1",
                               "space_margin_pct": 0, "stale_lock_s": 300}
    config = _load(tmp_path, section)
    assert config.backup == BackupConfig(**section)
    assert json.loads(json.dumps(redacted_view(config)))["backup"] == section


def test_env_overlay_sets_and_unsets(tmp_path: Path) -> None:
    """Each key has its FELHOM_AGENT_BACKUP_* variable; ``null`` unsets the nullable one."""
    env = {"FELHOM_AGENT_BACKUP_MIN_KEEP": "7", "FELHOM_AGENT_BACKUP_MAX_CONCURRENT": "3",
           "FELHOM_AGENT_BACKUP_SPACE_MARGIN_PCT": "1000",
           "FELHOM_AGENT_BACKUP_STALE_LOCK_S": "1",
           "FELHOM_AGENT_BACKUP_SAFETY_STORAGE": "null"}
    config = _load(tmp_path, {"safety_storage": "local"}, env)
    assert config.backup == BackupConfig(min_keep=7, max_concurrent=3, safety_storage=None,
                                         space_margin_pct=1000, stale_lock_s=1)
    env2 = {"FELHOM_AGENT_BACKUP_SAFETY_STORAGE": "backup-nfs.2"}
    assert _load(tmp_path, None, env2).backup.safety_storage == "backup-nfs.2"


@pytest.mark.parametrize(
    ("section", "key", "fragment"),
    [
        ({"min_keep": 0}, "backup.min_keep", "an integer >= 1"),
        ({"min_keep": 2.5}, "backup.min_keep", "an integer"),
        ({"min_keep": True}, "backup.min_keep", "a boolean"),
        ({"min_keep": None}, "backup.min_keep", "null is not allowed"),
        ({"max_concurrent": 0}, "backup.max_concurrent", ">= 1"),
        ({"space_margin_pct": -1}, "backup.space_margin_pct", ">= 0 and <= 1000"),
        ({"space_margin_pct": 1001}, "backup.space_margin_pct", "1001 is not allowed"),
        ({"stale_lock_s": 0}, "backup.stale_lock_s", ">= 1"),
        ({"stale_lock_s": "60"}, "backup.stale_lock_s", "a string"),
        ({"safety_storage": 5}, "backup.safety_storage", "a string or null"),
        ({"safety_storage": "1local"}, "backup.safety_storage", "a PVE storage id"),
        ({"safety_storage": "a"}, "backup.safety_storage", "2 to 64 characters"),
        ({"safety_storage": "a" * 65}, "backup.safety_storage", "a PVE storage id"),
        ({"safety_storage": "nfs-"}, "backup.safety_storage", "'nfs-' is not allowed"),
        ({"safety_storage": "pbs:1"}, "backup.safety_storage", "'pbs:1' is not allowed"),
        ({"min_kepe": 3}, "backup.min_kepe", "did you mean 'backup.min_keep'"),
        ("on", "backup", "must be a JSON object"),
    ],
)
def test_wrong_values_name_the_key_and_what_is_allowed(
    tmp_path: Path, section: Any, key: str, fragment: str
) -> None:
    """A wrong type, bound or unknown key names the dotted key and the allowed values."""
    error = _error(tmp_path, section)
    assert error.key == key
    assert key in str(error)
    assert fragment in str(error)


def test_env_value_of_wrong_type_names_the_variable(tmp_path: Path) -> None:
    """A non-integer env value is refused with the variable's name."""
    error = _error(tmp_path, None, {"FELHOM_AGENT_BACKUP_MIN_KEEP": "three"})
    assert error.key == "FELHOM_AGENT_BACKUP_MIN_KEEP"
    assert "an integer >= 1" in str(error)
    error = _error(tmp_path, None, {"FELHOM_AGENT_BACKUP_MIN_KEEP": "0"})
    assert error.key == "backup.min_keep"


class _Sink:
    """A signed-op sink that only records reconfigure calls (reload needs one)."""

    def __init__(self) -> None:
        self.reconfigured = 0

    def handle(self, ops: Sequence[SignedOp]) -> None:
        del ops

    def results(self) -> Sequence[OpResult]:
        return ()

    def reconfigure(self, *, allowed_signers: Path, policy: VerifyPolicy) -> None:
        del allowed_signers, policy
        self.reconfigured += 1

    def close(self) -> None:
        return None


def test_sighup_reports_a_backup_change_as_restart_only(tmp_path: Path) -> None:
    """A changed ``backup.*`` on SIGHUP is logged as needing a restart; the old value stays."""
    old = _load(tmp_path)
    new = _load(tmp_path, {"min_keep": 9})
    result = apply_reload(old, lambda: new, logger=logging.getLogger("test.reload"),
                          reconfigure_logging=None, sink=_Sink())
    assert result.applied
    assert result.restart_needed == ("backup",)
    assert result.config.backup.min_keep == 3
