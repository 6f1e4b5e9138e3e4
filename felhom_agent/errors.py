"""The exception hierarchy: one root, context-carrying mid levels, builtin-flavoured leaves.

Every error the agent raises derives from :class:`AgentError`, so a caller at a boundary
(the command line, a worker thread, the hub loop) can catch exactly "our" failures without
also swallowing programming errors. Mid-level classes carry the context an operator needs
(the config key, the HTTP status and path); leaves also subclass the closest builtin
(``ValueError``, ``TimeoutError``, ``PermissionError``) so generic callers can catch those.
Library exceptions (``requests``, ``paramiko``) never cross a module boundary: they are
wrapped with ``raise ... from err``.

Pickling is generic: :meth:`AgentError.__reduce__` rebuilds any subclass from its ``args`` and
its attributes without calling ``__init__``, so a subclass with keyword-only context arguments
needs no pickling code of its own (errors cross thread and process boundaries in reports and
in the fault harness).
"""

from __future__ import annotations

from typing import Any

__all__ = ["AgentError", "ConfigError", "ReconcileError", "UsageError"]


def _rebuild(cls: type[AgentError], args: tuple[Any, ...], state: dict[str, Any]) -> AgentError:
    """Recreate an :class:`AgentError` from its ``args`` and ``__dict__``.

    The class's own ``__init__`` is skipped (its signature is the subclass's business); the
    builtin base's is run, so ``args`` -- and for ``OSError`` leaves ``errno``/``strerror`` --
    are set exactly as at construction.
    """
    err = cls.__new__(cls, *args)
    builtin: Any = next(c for c in cls.__mro__ if c.__module__ == "builtins")
    builtin.__init__(err, *args)
    err.__dict__.update(state)
    return err


class AgentError(Exception):
    """Root of every error felhom-agent raises on purpose."""

    def __reduce__(self) -> tuple[Any, ...]:
        # The default (``cls(*args)``) breaks on keyword-only context arguments; rebuilding
        # from ``args`` + attributes works for every subclass, whatever its constructor.
        return (_rebuild, (type(self), self.args, dict(self.__dict__)))


class ConfigError(AgentError, ValueError):
    """The configuration is unusable; the message names the key, the value and what is allowed.

    Args:
        message: the operator-readable explanation (never contains a secret value).
        key: the dotted config key (``proxmox.tls_fingerprint``) or env variable concerned.
    """

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


class UsageError(AgentError, ValueError):
    """The command line is wrong (a missing or conflicting flag); exit status 2."""


class ReconcileError(AgentError):
    """Root of the reconcile layer's errors: desired state, planning, queue, journal, gate, kinds.

    Callers that drive reconciliation catch this one class; the leaves keep their builtin
    flavour (``ValueError``, ``LookupError``...) and their own context attributes.
    """
