"""Where desired state comes from: one seam, three providers.

See ``docs/architecture.md`` ("Desired state and the plan").

The reconciler asks a :class:`DesiredStateProvider` for :meth:`~DesiredStateProvider.current`
on every pass and subscribes to its change signal, so new desired state wakes it without
waiting for the interval:

* :class:`EmptyProvider` — nothing is desired, so the plan is empty and nothing is mutated
  (the safe default when neither a hub nor ``reconcile.desired_file`` is configured);
* :class:`FileProvider` — ``reconcile.desired_file``, re-read when its identity (device, inode,
  size, mtime, ctime) changes. A bad or missing file is logged once (per change of the file)
  and the **last good state is kept**: a half-edited file must not turn into "nothing desired"
  or into a partial state. Change detection happens when :meth:`FileProvider.current` or
  :meth:`FileProvider.refresh` is called (the reconciler's interval tick does);
* :class:`HubProvider` — holds the latest state the hub loop pushed with
  :meth:`HubProvider.update`; an identical re-delivery (every poll) is not a change.

Listeners are called on the thread that observed the change, outside the provider's lock;
they should be cheap (set an ``Event``). A listener that raises is logged and skipped.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Final, Protocol

from felhom_agent.core.desired import DesiredState, DesiredStateError, loads_desired

__all__ = [
    "DesiredStateProvider",
    "EmptyProvider",
    "FileProvider",
    "HubProvider",
    "Listener",
    "Unsubscribe",
]

Listener = Callable[[], None]
Unsubscribe = Callable[[], None]

_LOG = logging.getLogger(__name__)
#: A desired-state file larger than this is refused (it would be a mistake, not a plan).
DEFAULT_MAX_BYTES: Final = 16 * 1024 * 1024


class DesiredStateProvider(Protocol):
    """The seam between desired-state sources and the reconciler."""

    def current(self) -> DesiredState | None:
        """The latest good desired state, or ``None`` when nothing is desired (yet)."""
        ...

    def subscribe(self, listener: Listener) -> Unsubscribe:
        """Call ``listener()`` whenever :meth:`current` changes; returns the unsubscribe."""
        ...


class _Listeners:
    """A thread-safe listener list shared by the providers."""

    def __init__(self, log: logging.Logger) -> None:
        self._lock = threading.Lock()
        self._items: list[Listener] = []
        self._log = log

    def add(self, listener: Listener) -> Unsubscribe:
        with self._lock:
            self._items.append(listener)

        def unsubscribe() -> None:
            with self._lock:
                if listener in self._items:
                    self._items.remove(listener)

        return unsubscribe

    def notify(self) -> None:
        with self._lock:
            items = list(self._items)
        for listener in items:
            try:
                listener()
            except Exception:
                self._log.exception("desired-state listener %r failed", listener)


class EmptyProvider:
    """Nothing is desired: zero mutations."""

    def current(self) -> DesiredState | None:
        """Always ``None``."""
        return None

    def subscribe(self, listener: Listener) -> Unsubscribe:
        """Never changes, so the listener is never called."""
        return _noop


def _noop() -> None:
    return None


_Signature = tuple[int, int, int, int, int]
_MISSING: Final[_Signature] = (-1, -1, -1, -1, -1)
_UNSTATABLE: Final[_Signature] = (-2, -2, -2, -2, -2)


def _signature(st: os.stat_result) -> _Signature:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class FileProvider:
    """Desired state from a JSON file, re-read when the file changes.

    Args:
        path: the file (``reconcile.desired_file``).
        logger: where load errors go (default: this module's logger).
        max_bytes: refuse files larger than this.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        logger: logging.Logger | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        self._path = Path(path)
        self._log = logger or _LOG
        self._max_bytes = max_bytes
        self._lock = threading.Lock()
        self._listeners = _Listeners(self._log)
        self._signature: _Signature | None = None
        self._state: DesiredState | None = None
        self._error: str | None = None

    @property
    def path(self) -> Path:
        """The file read."""
        return self._path

    @property
    def last_error(self) -> str | None:
        """Why the file's current content is not in use, or ``None`` when it is."""
        with self._lock:
            return self._error

    def current(self) -> DesiredState | None:
        """Re-read the file if it changed, then return the last good state."""
        self.refresh()
        with self._lock:
            return self._state

    def subscribe(self, listener: Listener) -> Unsubscribe:
        """Call ``listener()`` when a changed file yields a different good state."""
        return self._listeners.add(listener)

    def refresh(self) -> bool:
        """Check the file now; returns True when a new, different good state was loaded."""
        with self._lock:
            changed = self._refresh_locked()
        if changed:
            self._listeners.notify()
        return changed

    def _refresh_locked(self) -> bool:
        try:
            sig = _signature(os.stat(self._path))
        except FileNotFoundError:
            if self._signature != _MISSING:
                self._signature = _MISSING
                self._fail("file does not exist")
            return False
        except OSError as err:
            if self._signature == _UNSTATABLE:
                return False
            return self._fail_once(_UNSTATABLE, f"cannot stat: {err.strerror or err}")
        if sig == self._signature:
            return False
        try:
            with open(self._path, "rb") as fh:
                before = _signature(os.fstat(fh.fileno()))
                data = fh.read(self._max_bytes + 1)
                after = _signature(os.fstat(fh.fileno()))
        except OSError as err:
            return self._fail_once(sig, f"cannot read: {err.strerror or err}")
        if before != after:
            # Being rewritten in place right now: try again on the next check.
            return False
        if len(data) > self._max_bytes:
            return self._fail_once(before, f"larger than {self._max_bytes} bytes")
        try:
            state = loads_desired(data)
        except DesiredStateError as err:
            return self._fail_once(before, str(err))
        self._signature = before
        self._error = None
        if state == self._state:
            return False
        self._state = state
        self._log.info(
            "loaded desired state generation %d (%d guests) from %s",
            state.generation, len(state.guests), self._path,
        )
        return True

    def _fail_once(self, sig: _Signature, message: str) -> bool:
        self._signature = sig
        self._fail(message)
        return False

    def _fail(self, message: str) -> None:
        self._error = f"{self._path}: {message}"
        kept = (
            f"keeping generation {self._state.generation}"
            if self._state is not None
            else "nothing desired until it is fixed"
        )
        self._log.error("desired state file %s unusable: %s; %s", self._path, message, kept)


class HubProvider:
    """Desired state pushed by the hub poll loop (the envelope's ``desired`` member).

    Args:
        logger: where changes are logged (default: this module's logger).
    """

    def __init__(self, *, logger: logging.Logger | None = None) -> None:
        self._log = logger or _LOG
        self._lock = threading.Lock()
        self._listeners = _Listeners(self._log)
        self._state: DesiredState | None = None

    def current(self) -> DesiredState | None:
        """The latest state pushed, or ``None`` before the first one."""
        with self._lock:
            return self._state

    def subscribe(self, listener: Listener) -> Unsubscribe:
        """Call ``listener()`` when :meth:`update` brings a different state."""
        return self._listeners.add(listener)

    def update(self, state: DesiredState) -> bool:
        """Hold ``state``; returns True (and signals) when it differs from the previous one.

        A lower generation is accepted (the hub is the authority, e.g. after a hub restore)
        but logged, because it usually means something upstream went backwards.
        """
        with self._lock:
            old = self._state
            if state == old:
                return False
            self._state = state
        if old is not None and state.generation < old.generation:
            self._log.warning(
                "hub desired state went back from generation %d to %d",
                old.generation, state.generation,
            )
        self._listeners.notify()
        return True
