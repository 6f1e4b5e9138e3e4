"""The daemon: wiring of the hub loop, the reconciler thread and the worker pool (design §2).

* :class:`Daemon` (:mod:`.runner`) -- start-up, the main loop, signals, drain, reload;
* :mod:`.parts` -- building journal, audit log, clients, queue, provider and engine;
* :class:`SignedOpSink` (:mod:`.signed_ops`) -- the seam where signed ops leave the hub loop
  for the verifying consumer (:mod:`felhom_agent.signedops.consumer`);
* :mod:`.durability` -- a journal/audit durability failure anywhere stops the daemon (exit 1);
* :mod:`.sdnotify` -- systemd's notify protocol.
"""

from __future__ import annotations

from felhom_agent.daemon.runner import DEFAULT_GRACE_S, Daemon
from felhom_agent.daemon.signed_ops import SignedOpSink

__all__ = ["DEFAULT_GRACE_S", "Daemon", "SignedOpSink"]
