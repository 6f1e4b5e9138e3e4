"""The exception hierarchy: one root, context-carrying mid levels, builtin-flavoured leaves.

Every error the agent raises derives from :class:`AgentError`, so a caller at a boundary
(the command line, a worker thread, the hub loop) can catch exactly "our" failures without
also swallowing programming errors. Mid-level classes carry the context an operator needs
(the config key, the HTTP status and path); leaves also subclass the closest builtin
(``ValueError``, ``TimeoutError``, ``PermissionError``) so generic callers can catch those.
Library exceptions (``requests``, ``paramiko``) never cross a module boundary: they are
wrapped with ``raise ... from err``.
"""

from __future__ import annotations

__all__ = ["AgentError", "ConfigError", "UsageError"]


class AgentError(Exception):
    """Root of every error felhom-agent raises on purpose."""


class ConfigError(AgentError, ValueError):
    """The configuration is unusable; the message names the key, the value and what is allowed.

    Args:
        message: the operator-readable explanation (never contains a secret value).
        key: the dotted config key (``proxmox.tls_fingerprint``) or env variable concerned.
    """

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild_config_error, (str(self), self.key))


def _rebuild_config_error(message: str, key: str | None) -> ConfigError:
    return ConfigError(message, key=key)


class UsageError(AgentError, ValueError):
    """The command line is wrong (a missing or conflicting flag); exit status 2."""
