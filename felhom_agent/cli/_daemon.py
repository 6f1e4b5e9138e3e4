"""The no-mode invocation: run the daemon (``docs/architecture.md``, "Threads").

``felhom-agent --config PATH`` with no mode flag runs until SIGTERM/SIGINT (exit 0), a
durability failure (exit 1) or a start-up failure that retrying cannot fix (exit 1/2). SIGHUP
reloads the file named by ``config.source`` with the same environment; log settings from the
reloaded file are applied with :func:`felhom_agent.log.configure_logging` on stderr, except
where the command line overrode them.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping

from felhom_agent.config import Config, load_config
from felhom_agent.daemon.runner import DEFAULT_GRACE_S, Daemon
from felhom_agent.log import configure_logging

__all__ = ["daemon_command"]


def daemon_command(
    config: Config,
    *,
    env: Mapping[str, str],
    stop_event: threading.Event | None = None,
    grace_s: float = DEFAULT_GRACE_S,
    log_level: str | None = None,
    log_format: str | None = None,
) -> int:
    """Run the daemon with ``config``; return the exit status.

    Args:
        config: the loaded configuration (logging already configured by the caller).
        env: the environment (sd_notify variables, the reload's env overlay).
        stop_event: set it to stop an in-process daemon (tests, ``--demo``); signals set it too.
        grace_s: how long running jobs may take to finish at stop.
        log_level, log_format: command-line overrides (``--log-level``/``--log-format``); they
            keep winning over the file after a SIGHUP reload, as they did at start.
    """
    source = config.source

    def reload_config() -> Config:
        return load_config(source, env=env)

    def reconfigure_logging(new: Config) -> None:
        configure_logging(level=log_level or new.log.level, fmt=log_format or new.log.format,
                          secrets=new.secrets(), env=env)

    daemon = Daemon(
        config,
        env=env,
        stop_event=stop_event,
        reload_config=reload_config if source is not None else None,
        reconfigure_logging=reconfigure_logging,
        grace_s=grace_s,
    )
    return daemon.run()
