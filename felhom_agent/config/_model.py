"""The typed, validated configuration: frozen attrs classes, secrets as :class:`Secret`.

Instances are built only by :func:`felhom_agent.config.load_config`, after every rule of
``docs/architecture.md`` ("Configuration") has been checked, so code that receives a :class:`Config`
may rely on it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import attrs

from felhom_agent.secret import Secret

__all__ = [
    "AllowedSource",
    "AuthzConfig",
    "BackupConfig",
    "Config",
    "GuestApiConfig",
    "HubConfig",
    "LogConfig",
    "PrivilegedConfig",
    "ProvisionConfig",
    "ProxmoxConfig",
    "ReconcileConfig",
    "StorageConfig",
]


@attrs.frozen
class LogConfig:
    """``log.*``: level and line format (text for humans, json for machines)."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["text", "json"] = "text"


@attrs.frozen
class PrivilegedConfig:
    """``proxmox.privileged.*``: how the fenced root-CLI operations are run.

    ``fstab_path`` and ``mount_root`` are where a USB backup disk's fstab line and mount point
    go; tests (and a cautious operator's dry run) point them at scratch locations.
    """

    mode: Literal["local", "ssh", "off"] = "local"
    ssh_host: str | None = None
    ssh_port: int = 22
    ssh_user: str = "root"
    ssh_key_file: Path | None = None
    ssh_known_hosts: Path | None = None
    fstab_path: Path = Path("/etc/fstab")
    mount_root: Path = Path("/mnt/felhom")


@attrs.frozen
class ProxmoxConfig:
    """``proxmox.*``: the PVE API endpoint, the token and the pin."""

    api_url: str
    node: str
    token_id: str
    token_secret: Secret = attrs.field(repr=False)
    tls_fingerprint: str | None = None
    ca_file: Path | None = None
    timeout_s: float = 30.0
    task_timeout_s: float = 900.0
    max_connections: int = 4
    privileged: PrivilegedConfig = PrivilegedConfig()
    token_secret_file: Path | None = None


@attrs.frozen
class HubConfig:
    """``hub.*``: where reports go; ``url`` None means no hub (desired state from a file)."""

    url: str | None = None
    token: Secret | None = attrs.field(default=None, repr=False)
    token_file: Path | None = None
    tls_fingerprint: str | None = None
    ca_file: Path | None = None
    interval_s: float = 30.0


@attrs.frozen
class ReconcileConfig:
    """``reconcile.*``: worker pool size, pass interval, optional desired-state file."""

    workers: int = 8
    interval_s: float = 30.0
    desired_file: Path | None = None


@attrs.frozen
class AuthzConfig:
    """``authz.*``: who may sign operations and the envelope's time rules."""

    allowed_signers: Path = Path("/etc/felhom-agent/allowed_signers")
    namespace: str = "felhom-op"
    max_clock_skew_s: int = 120
    max_op_lifetime_s: int = 900


@attrs.frozen
class BackupConfig:
    """``backup.*``: the local rules around policy backups that the hub cannot change.

    Attributes:
        min_keep: pruning after a policy backup keeps at least this many of the newest
            unprotected backups (the policy's ``keep.last`` is raised to it).
        max_concurrent: agent backups that may run at once on the node.
        safety_storage: where the safety backup before a restore goes (None: none).
        space_margin_pct: a backup starts only when the storage's free space is at least the
            guest's newest backup there plus this percentage.
        stale_lock_s: how long a ``backup`` lock may exist without a running vzdump task
            before it is reported as stale.
    """

    min_keep: int = 3
    max_concurrent: int = 1
    safety_storage: str | None = None
    space_margin_pct: int = 20
    stale_lock_s: int = 60


@attrs.frozen
class GuestApiConfig:
    """``guestapi.*``: the per-guest local API (``docs/architecture.md``, "The per-guest local
    API").

    Attributes:
        enabled: serve it at all (each guest also needs ``"guestapi": true`` in its desired
            state).
        socket_dir: the agent's runtime directory for it (the record of placed sockets).
        container_path: where a container finds its socket, inside the container.
        rate_per_s / burst: each guest's token bucket.
        backup_min_interval_s / backups_per_day: the limits of guest-requested backups.
        allow_restart: serve ``POST /1.0/restart``.
        serial_dir: where PVE puts a VM's serial sockets (``<vmid>.serial1``).
    """

    enabled: bool = False
    socket_dir: Path = Path("/run/felhom-agent/guests")
    container_path: str = "/run/felhom/agent.sock"
    rate_per_s: float = 5.0
    burst: int = 10
    backup_min_interval_s: int = 3600
    backups_per_day: int = 4
    allow_restart: bool = False
    serial_dir: Path = Path("/var/run/qemu-server")


@attrs.frozen
class StorageConfig:
    """``storage.*``: usage alerts and how often disks, SMART and sensors are read.

    Attributes:
        warn_pct: a storage at least this full (used/total, percent) is ``alert: warn``.
        crit_pct: at least this full is ``alert: crit`` (never below ``warn_pct``).
        smart_interval_s: seconds between two readings of disks, SMART and sensors.
    """

    warn_pct: int = 85
    crit_pct: int = 95
    smart_interval_s: float = 3600.0


@attrs.frozen
class AllowedSource:
    """One entry of ``provision.allowed_sources``: a template vmid, or a backup volid glob."""

    template: int | None = None
    archive: str | None = None

    def to_json(self) -> dict[str, object]:
        """The entry as written in the config file."""
        return {"template": self.template} if self.template is not None else {
            "archive": self.archive}


@attrs.frozen
class ProvisionConfig:
    """``provision.*``: the local limits on guests the unsigned desired state may create.

    Attributes:
        vmid_min / vmid_max: the inclusive vmid range provisioning may use.
        max_guests: provisioning from desired state stops once the node holds this many
            guests in the range.
        allowed_sources: the templates and backup globs desired state may provision from.
        pool: the pool a new guest joins when its provision block names none.
    """

    vmid_min: int = 1000
    vmid_max: int = 1999
    max_guests: int = 20
    allowed_sources: tuple[AllowedSource, ...] = ()
    pool: str | None = None


@attrs.frozen
class Config:
    """The whole effective configuration of one agent."""

    host_id: str
    proxmox: ProxmoxConfig
    state_dir: Path = Path("/var/lib/felhom-agent")
    log: LogConfig = LogConfig()
    hub: HubConfig = HubConfig()
    reconcile: ReconcileConfig = ReconcileConfig()
    authz: AuthzConfig = AuthzConfig()
    backup: BackupConfig = BackupConfig()
    guestapi: GuestApiConfig = GuestApiConfig()
    storage: StorageConfig = StorageConfig()
    provision: ProvisionConfig = ProvisionConfig()
    source: Path | None = attrs.field(default=None, eq=False)

    def secrets(self) -> tuple[Secret, ...]:
        """Every secret value this config holds (for the log redaction filter)."""
        found = [self.proxmox.token_secret]
        if self.hub.token is not None:
            found.append(self.hub.token)
        return tuple(s for s in found if s)
