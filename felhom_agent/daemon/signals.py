"""POSIX signals for the daemon: SIGTERM/SIGINT stop it, SIGHUP asks for a config reload.

The handlers only set flags and wake the main loop (an ``Event``); all real work -- draining,
reloading, logging -- happens on the main thread outside the handler, so a handler never runs
on top of a lock the interrupted code holds. Handlers can only be installed from the main
thread; an in-process daemon on another thread (``--demo``, tests) is stopped through its
``stop_event`` instead.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

__all__ = ["SignalRouter"]

_Handler = Callable[[int, FrameType | None], Any] | int | None


class SignalRouter:
    """Installs the daemon's handlers and restores the previous ones on :meth:`restore`.

    Args:
        on_stop: called (from the handler) for SIGTERM and SIGINT.
        on_reload: called (from the handler) for SIGHUP.
    """

    def __init__(self, *, on_stop: Callable[[], None], on_reload: Callable[[], None]) -> None:
        self._on_stop = on_stop
        self._on_reload = on_reload
        self._previous: dict[int, _Handler] = {}

    @staticmethod
    def can_install() -> bool:
        """Whether this thread may install handlers (only the main thread can)."""
        return threading.current_thread() is threading.main_thread()

    def install(self) -> None:
        """Install the handlers (main thread only)."""
        for signum in (signal.SIGTERM, signal.SIGINT):
            self._previous[signum] = signal.signal(signum, self._stop)
        self._previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, self._reload)

    def restore(self) -> None:
        """Put the previous handlers back; idempotent."""
        for signum, handler in self._previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._previous.clear()

    def _stop(self, _signum: int, _frame: FrameType | None) -> None:
        self._on_stop()

    def _reload(self, _signum: int, _frame: FrameType | None) -> None:
        self._on_reload()
