"""The daemon: the hub loop, the reconciler thread and the worker pool, run together.

* :class:`Daemon` (:mod:`.runner`) -- start-up, the main loop, signals, drain, reload;
* :class:`SignedOpSink` (:mod:`.signed_ops`) -- the seam where signed ops leave the hub loop
  for the verifying consumer (:mod:`felhom_agent.signedops.consumer`);
* :mod:`.sdnotify` -- systemd's notify protocol.

Its parts are built by the composition root (:mod:`felhom_agent.compose.root`); a durability
failure anywhere reaches it through the one fatal-error callback
(:mod:`felhom_agent.compose.fatal`). See ``docs/architecture.md`` ("Threads").
"""

from __future__ import annotations

from felhom_agent.daemon.runner import DEFAULT_GRACE_S, Daemon
from felhom_agent.daemon.signed_ops import SignedOpSink

__all__ = ["DEFAULT_GRACE_S", "Daemon", "SignedOpSink"]
