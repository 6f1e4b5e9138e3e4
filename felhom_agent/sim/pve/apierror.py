"""The errors a simulated API handler raises, shaped like PVE's answers.

PVE turns a ``PVE::Exception`` into its own status (400 parameter errors with a per-field
``errors`` object, 403 permission errors) and any plain ``die`` into a 500 whose message is
the die text; the first line becomes the HTTP reason phrase and, since
libpve-http-server-perl 5.2.0, the whole text (ending in ``\\n``) is also in the body's
``message``. The server module renders these exceptions; handlers only raise them.
"""

from __future__ import annotations

from collections.abc import Mapping

from felhom_agent.errors import AgentError

__all__ = ["ApiError", "param_error", "perm_error", "server_error"]


class ApiError(AgentError):
    """An API-level failure that becomes one HTTP error response.

    Args:
        status: the HTTP status (400, 403, 500, 501 ...).
        message: PVE's message text; its first line is the reason phrase.
        errors: per-parameter messages for 400 parameter errors.
        plain: render like PVE's ``error()`` path (plain-text body, no Content-Type),
            used for 501 answers.
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        errors: Mapping[str, str] | None = None,
        plain: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = dict(errors) if errors else None
        self.plain = plain


def param_error(errors: Mapping[str, str]) -> ApiError:
    """400 ``Parameter verification failed.`` with the given per-parameter texts."""
    return ApiError(400, "Parameter verification failed.\n", errors=errors)


def perm_error(path: str | None = None, privs: str | None = None) -> ApiError:
    """403 ``Permission check failed (<path>, <priv>)``; without detail just the bare text."""
    if path is None:
        return ApiError(403, "Permission check failed\n")
    if privs is None:
        return ApiError(403, f"Permission check failed ({path})\n")
    return ApiError(403, f"Permission check failed ({path}, {privs})\n")


def server_error(text: str) -> ApiError:
    """500 for a plain ``die`` in the handler (the usual shape of operational errors)."""
    return ApiError(500, text if text.endswith("\n") else text + "\n")
