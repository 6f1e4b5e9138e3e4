"""Configuration: the key table, loading with the env overlay, validation, the redacted view.

See ``docs/architecture.md`` ("Configuration") and the README's configuration reference.
"""

from __future__ import annotations

from felhom_agent.config._keys import ENV_PREFIX, KEYS, Key, Kind, env_name
from felhom_agent.config._load import DEFAULT_CONFIG_PATH, load_config, read_secret_file
from felhom_agent.config._model import (
    AllowedSource,
    AuthzConfig,
    BackupConfig,
    Config,
    GuestApiConfig,
    HubConfig,
    LogConfig,
    PrivilegedConfig,
    ProvisionConfig,
    ProxmoxConfig,
    ReconcileConfig,
    StorageConfig,
)
from felhom_agent.config._view import redacted_view

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "ENV_PREFIX",
    "KEYS",
    "AllowedSource",
    "AuthzConfig",
    "BackupConfig",
    "Config",
    "GuestApiConfig",
    "HubConfig",
    "Key",
    "Kind",
    "LogConfig",
    "PrivilegedConfig",
    "ProvisionConfig",
    "ProxmoxConfig",
    "ReconcileConfig",
    "StorageConfig",
    "env_name",
    "load_config",
    "read_secret_file",
    "redacted_view",
]
