"""Certificate pinning for ``requests``: the one adapter both HTTPS clients mount.

The PVE API and a pinned hub serve self-signed (or private-CA) leaf certificates; the agent trusts
them by the SHA-256 of the leaf, through urllib3's own ``assert_fingerprint``, never hand-written
socket code. Two traps (``docs/architecture.md``, "TLS pinning and HTTP") shape this adapter and its
callers:

* the pinned pools must also turn chain validation off (``cert_reqs="CERT_NONE"``,
  ``assert_hostname=False``): the pin *replaces* it, and without that a self-signed
  certificate fails before urllib3 even compares the fingerprint;
* the session must set ``trust_env=False`` and ``verify=False``, or a ``REQUESTS_CA_BUNDLE``
  in the environment silently re-enables chain validation (requests #3829).

A mismatch aborts the handshake, so no request — and no token — is ever sent.
"""

from __future__ import annotations

from typing import Any

import requests.adapters

__all__ = ["PinnedAdapter"]


class PinnedAdapter(requests.adapters.HTTPAdapter):
    """An adapter whose pools check the leaf's SHA-256 and skip CA-chain and hostname checks.

    Args:
        fingerprint_hex: the 64 lower-case hex digits of the leaf certificate's SHA-256.
        **kwargs: passed to :class:`requests.adapters.HTTPAdapter` (pool sizes, retries).
    """

    def __init__(self, fingerprint_hex: str, **kwargs: Any) -> None:
        self._fingerprint_hex = fingerprint_hex
        super().__init__(**kwargs)

    def init_poolmanager(
        self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any
    ) -> None:
        pool_kwargs.update(
            assert_fingerprint=self._fingerprint_hex,
            assert_hostname=False,
            cert_reqs="CERT_NONE",
        )
        super().init_poolmanager(connections, maxsize, block=block, **pool_kwargs)
