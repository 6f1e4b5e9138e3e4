"""systemd's notify protocol, hand-written (no dependency, no C extension in a root daemon).

The protocol is stable and tiny: newline-separated ``KEY=VALUE`` datagrams sent to the
``AF_UNIX`` socket named by ``$NOTIFY_SOCKET`` (a path, or ``@name`` for the abstract
namespace). ``READY=1`` ends start-up, ``STATUS=`` is the line ``systemctl status`` shows,
``STOPPING=1`` announces a drain, ``WATCHDOG=1`` is the keep-alive. Without the variable
every call is a no-op, so a terminal run behaves like a plain program. Send errors are logged
once at debug and otherwise ignored, as sd_notify(3) recommends.

The watchdog ping must come from the main loop after real progress, never from a dedicated
"alive" thread: a deadlocked loop must stop the pings so systemd can restart the agent.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

__all__ = ["Notifier", "child_environment"]

_NOTIFY_VARS = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


def child_environment(env: Mapping[str, str]) -> dict[str, str]:
    """A copy of ``env`` without the notify/watchdog variables, for subprocesses (``pct`` …)."""
    return {k: v for k, v in env.items() if k not in _NOTIFY_VARS}


class Notifier:
    """Sends sd_notify datagrams when ``$NOTIFY_SOCKET`` is set; otherwise does nothing.

    Args:
        env: the environment to read ``NOTIFY_SOCKET``/``WATCHDOG_USEC``/``WATCHDOG_PID`` from.
        pid: this process's pid (for the ``WATCHDOG_PID`` check), injectable for tests.
        logger: where the one debug line about a failed send goes.
    """

    def __init__(self, env: Mapping[str, str], *, pid: int | None = None,
                 logger: logging.Logger | None = None) -> None:
        self._log = logger or logging.getLogger("felhom_agent.daemon.sdnotify")
        self._address = self._parse_address(env.get("NOTIFY_SOCKET", ""))
        self._watchdog_s = self._parse_watchdog(env, os.getpid() if pid is None else pid)
        self._warned = False

    @staticmethod
    def _parse_address(value: str) -> str | None:
        if value.startswith("/"):
            return value
        if value.startswith("@") and len(value) > 1:
            return "\0" + value[1:]
        return None

    @staticmethod
    def _parse_watchdog(env: Mapping[str, str], pid: int) -> float | None:
        usec = env.get("WATCHDOG_USEC", "")
        owner = env.get("WATCHDOG_PID", "")
        if not usec.isdigit() or int(usec) == 0:
            return None
        if owner and (not owner.isdigit() or int(owner) != pid):
            return None
        return int(usec) / 1e6

    @property
    def enabled(self) -> bool:
        """Whether a notify socket is configured."""
        return self._address is not None

    @property
    def watchdog_interval_s(self) -> float | None:
        """How often to ping: half of ``WATCHDOG_USEC`` (sd_watchdog_enabled(3)), or None."""
        return None if self._watchdog_s is None else self._watchdog_s / 2

    def send(self, **fields: str) -> bool:
        """Send one datagram with ``KEY=VALUE`` lines; True when it was sent."""
        if self._address is None:
            return False
        lines = []
        for key, value in fields.items():
            # STATUS is one line; a newline would start a bogus assignment.
            lines.append(f"{key}={value.replace(chr(10), ' ')}")
        payload = "\n".join(lines).encode("utf-8")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.settimeout(1.0)
                sock.sendto(payload, self._address)
        except OSError as err:
            if not self._warned:
                self._log.debug("sd_notify send failed: %s", err)
                self._warned = True
            return False
        return True

    def ready(self, status: str) -> bool:
        """Start-up done: ``READY=1`` with a status line."""
        return self.send(READY="1", STATUS=status)

    def status(self, status: str) -> bool:
        """Update the status line."""
        return self.send(STATUS=status)

    def stopping(self, status: str) -> bool:
        """A drain began (SIGTERM)."""
        return self.send(STOPPING="1", STATUS=status)

    def reloading(self) -> bool:
        """A config reload began (SIGHUP); follow with :meth:`ready`."""
        return self.send(RELOADING="1")

    def watchdog(self) -> bool:
        """Keep-alive; call from the main loop after real progress."""
        return self.send(WATCHDOG="1")
