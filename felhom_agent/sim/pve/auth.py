"""API-token authentication exactly as pveproxy parses the ``Authorization`` header.

``extract_auth_value`` takes ``PVEAPIToken`` followed by ``=`` or a space and the value up to
the first ``;``, URI-unescaped; ``verify_token`` splits it at the **last** ``=`` into token id
and secret. Any failure is 401 ``Authentication failed!``; a request without credentials is
401 ``No ticket``. Both are delayed (3 s on PVE; the scenario's ``auth_failure_delay_s``).
"""

from __future__ import annotations

import hmac
import re
import urllib.parse
from collections.abc import Mapping

from felhom_agent.sim.pve.privileges import TOKEN_ID_RE, Principal
from felhom_agent.sim.pve.scenario import TokenSpec

__all__ = ["AUTH_FAILED", "NO_TICKET", "authenticate"]

AUTH_FAILED = "Authentication failed!"
NO_TICKET = "No ticket"
_HEADER_RE = re.compile(r"(?:^|\s)PVEAPIToken(?:=| )([^;]*)")


def authenticate(header: str | None, tokens: Mapping[str, TokenSpec]) -> Principal | str:
    """Return the authenticated principal, or the 401 reason phrase."""
    if not header:
        return NO_TICKET
    m = _HEADER_RE.search(header)
    if m is None:
        return NO_TICKET
    value = urllib.parse.unquote(m.group(1))
    token_id, sep, secret = value.rpartition("=")
    if not sep or not TOKEN_ID_RE.match(token_id):
        return AUTH_FAILED
    spec = tokens.get(token_id)
    if spec is None:
        return AUTH_FAILED
    if not hmac.compare_digest(secret.encode(), spec.secret.reveal().encode()):
        return AUTH_FAILED
    return Principal(token_id=spec.token_id, privsep=spec.privsep,
                     user_grants=spec.user_grants, token_grants=spec.token_grants)
