"""The backup policy layer: pure decisions about policy backups (no I/O, no clock, no config).

Everything here takes plain values -- a guest's ``BackupPolicy`` (the value model lives in
:mod:`felhom_agent.core.backup_policy`, beside the desired state that carries it), the
storage's content listing as the client's own
:class:`~felhom_agent.proxmox.backup_models.BackupVolume` values, the node's storages as its
:class:`~felhom_agent.proxmox.models.StorageInfo`, ``now`` in POSIX seconds and the node's
time zone as a ``tzinfo`` -- and returns frozen results whose ``reason`` says, in one line, why.
The planner, the executor and the report call it; they own the PVE calls and the clock.

Modules:
    :mod:`.window`  the daily window: ``inside``, ``next_open`` (midnight wrap, DST).
    :mod:`.due`     due / overdue / next due from the content listing.
    :mod:`.space`   the free-space check before a vzdump call.
    :mod:`.prune`   effective keep (``backup.min_keep`` floor), the ``prune-backups`` string,
                    PVE's keep marking, the review of a prune dry run.
    :mod:`.notes`   the ``felhom op=<id>`` notes template and finding an op's volume.
    :mod:`.policy`  a policy against the node's storages (unknown, no backup content, ...).
"""
