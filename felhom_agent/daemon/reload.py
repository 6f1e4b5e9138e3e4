"""SIGHUP: load the configuration again and apply what can change without a restart.

Applied live: ``log.level``/``log.format`` (and the redaction set), ``authz.*`` (handed to the
signed-op sink on every reload, which re-reads the ``allowed_signers`` file -- a new path or
new contents at the same path) and ``hub.interval_s`` (the hub loop is
rebuilt with the new default). Everything else -- the PVE endpoint and token, the hub URL and
token, ``state_dir``, ``reconcile.*``, ``backup.*`` -- is wired into running threads and open
files; a change there is logged as "takes effect after a restart" and the running value is
kept, so a reload can never leave the daemon half on the old and half on the new settings.

A new file that fails to load or validate is logged at ERROR and the old config stays in
force entirely (the daemon keeps running).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import attrs

from felhom_agent.compose.root import verify_policy
from felhom_agent.config import Config
from felhom_agent.daemon.signed_ops import SignedOpSink
from felhom_agent.errors import AgentError

__all__ = ["ReloadResult", "apply_reload"]

_RESTART_ONLY = ("host_id", "state_dir", "proxmox", "hub.url", "hub.token", "hub.token_file",
                 "hub.tls_fingerprint", "hub.ca_file", "reconcile", "backup")


@attrs.frozen
class ReloadResult:
    """The config in force after a reload attempt and what changed live."""

    config: Config
    applied: bool
    hub_interval_changed: bool = False
    restart_needed: tuple[str, ...] = ()


def _get(config: Config, dotted: str) -> object:
    value: object = config
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


def apply_reload(
    old: Config,
    load: Callable[[], Config] | None,
    *,
    logger: logging.Logger,
    reconfigure_logging: Callable[[Config], None] | None,
    sink: SignedOpSink,
) -> ReloadResult:
    """Load the new config and apply its live parts; keep ``old`` when loading fails.

    Args:
        old: the config in force.
        load: loads the configuration file again (None: reload unsupported, logged).
        logger: where the outcome is logged.
        reconfigure_logging: applies the log settings of a config.
        sink: the signed-op sink, told about the new ``authz`` settings.
    """
    if load is None:
        logger.warning("SIGHUP: reload is not available in this run; config unchanged")
        return ReloadResult(config=old, applied=False)
    try:
        new = load()
    except AgentError as err:
        logger.error("SIGHUP: new configuration rejected, keeping the old one: %s", err)
        return ReloadResult(config=old, applied=False)
    restart = tuple(k for k in _RESTART_ONLY if _get(old, k) != _get(new, k))
    if restart:
        logger.warning("SIGHUP: %s changed; takes effect after a restart (old value kept)",
                       ", ".join(restart))
    interval_changed = new.hub.interval_s != old.hub.interval_s
    # Keep the restart-only parts of the old config so the running wiring and the config
    # object always agree (and the secrets in use stay in the log redaction set).
    merged = attrs.evolve(
        old,
        log=new.log,
        authz=new.authz,
        hub=attrs.evolve(old.hub, interval_s=new.hub.interval_s),
    )
    if reconfigure_logging is not None:
        reconfigure_logging(merged)
    # Always: the allowed_signers file is re-read even when its path is unchanged -- adding
    # or removing a key means editing that file and reloading.
    sink.reconfigure(allowed_signers=merged.authz.allowed_signers,
                     policy=verify_policy(merged))
    logger.info("SIGHUP: configuration reloaded (log level %s, hub interval %g s)",
                merged.log.level, merged.hub.interval_s)
    return ReloadResult(config=merged, applied=True, hub_interval_changed=interval_changed,
                        restart_needed=restart)
