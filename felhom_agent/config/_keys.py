"""The one table of configuration keys (``docs/architecture.md``, "Configuration").

Every key the agent understands is a :class:`Key` row here: its dotted path, its type, its
default and its constraints. The JSON loader, the ``FELHOM_AGENT_*`` environment overlay,
``--print-config`` and the README reference all derive from this table, so a key cannot be
known to one of them and unknown to another.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

import attrs

from felhom_agent.vmids import VMID_MAX, VMID_MIN

__all__ = ["ENV_PREFIX", "KEYS", "KEYS_BY_ENV", "KEYS_BY_PATH", "Key", "Kind", "env_name"]

ENV_PREFIX = "FELHOM_AGENT_"


class Kind(enum.Enum):
    """How a raw value is typed; drives JSON type checks and env-string parsing."""

    STR = "string"
    INT = "integer"
    NUMBER = "number"
    ENUM = "one of"
    SECRET = "secret string"  # noqa: S105 - a type label, not a password
    PATH = "absolute path"
    BOOL = "boolean"
    LIST = "JSON array"


@attrs.frozen
class Key:
    """One configuration key.

    Attributes:
        path: the dotted path split into parts, e.g. ``("proxmox", "timeout_s")``.
        kind: the value type.
        default: the value when absent (``None`` means "unset").
        required: absent and without default is an error (secrets may come from elsewhere).
        nullable: ``null`` is an accepted value.
        choices: the allowed values of an ``ENUM`` key.
        minimum / maximum: inclusive bounds of numeric keys; ``exclusive_min`` makes the lower
            bound strict (``timeout_s`` must exceed PVE's 10 s lock wait).
        doc: one line for ``--help``-style references and error messages.
    """

    path: tuple[str, ...]
    kind: Kind
    default: object = None
    required: bool = False
    nullable: bool = False
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    exclusive_min: bool = False
    doc: str = ""

    @property
    def dotted(self) -> str:
        """The key as operators write it: ``proxmox.timeout_s``."""
        return ".".join(self.path)

    @property
    def env(self) -> str:
        """The environment variable that overrides it."""
        return env_name(self.path)

    @property
    def secret(self) -> bool:
        """Whether the value must never be shown."""
        return self.kind is Kind.SECRET

    def allowed(self) -> str:
        """A phrase saying what values are allowed, for error messages."""
        if self.kind is Kind.ENUM:
            text = "one of " + ", ".join(self.choices)
        elif self.kind is Kind.BOOL:
            text = "true or false"
        elif self.kind in (Kind.INT, Kind.NUMBER):
            text = "an integer" if self.kind is Kind.INT else "a number"
            if self.minimum is not None:
                rel = ">" if self.exclusive_min else ">="
                text += f" {rel} {_num(self.minimum)}"
            if self.maximum is not None:
                text += f" and <= {_num(self.maximum)}"
        else:
            article = "an" if self.kind.value[0] in "aeiou" else "a"
            text = f"{article} {self.kind.value}"
        if self.nullable:
            text += " or null"
        return text


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def env_name(path: tuple[str, ...]) -> str:
    """``("hub", "interval_s")`` -> ``FELHOM_AGENT_HUB_INTERVAL_S``."""
    return ENV_PREFIX + "_".join(part.upper() for part in path)


def _k(dotted: str, kind: Kind, **kw: object) -> Key:
    return Key(tuple(dotted.split(".")), kind, **kw)  # type: ignore[arg-type]


KEYS: tuple[Key, ...] = (
    _k("host_id", Kind.STR, required=True, doc="how the hub knows this host"),
    _k("state_dir", Kind.PATH, default="/var/lib/felhom-agent",
       doc="journal, nonce store and audit log"),
    _k("log.level", Kind.ENUM, default="info", choices=("debug", "info", "warning", "error")),
    _k("log.format", Kind.ENUM, default="text", choices=("text", "json")),
    _k("proxmox.api_url", Kind.STR, required=True, doc="https://HOST:8006 of the PVE API"),
    _k("proxmox.node", Kind.STR, required=True, doc="the PVE node this agent manages"),
    _k("proxmox.token_id", Kind.STR, required=True, doc="USER@REALM!TOKENID"),
    _k("proxmox.token_secret", Kind.SECRET, nullable=True,
       doc="API token secret (or token_secret_file, or the credential proxmox_token_secret)"),
    _k("proxmox.token_secret_file", Kind.PATH, nullable=True),
    _k("proxmox.tls_fingerprint", Kind.STR, nullable=True,
       doc="SHA-256 of the PVE leaf certificate, as `pvenode cert info` shows it"),
    _k("proxmox.ca_file", Kind.PATH, nullable=True),
    _k("proxmox.timeout_s", Kind.NUMBER, default=30, minimum=10, exclusive_min=True,
       maximum=600, doc="HTTP timeout; must exceed PVE's 10 s guest lock wait"),
    _k("proxmox.task_timeout_s", Kind.NUMBER, default=900, minimum=1, maximum=86400),
    _k("proxmox.max_connections", Kind.INT, default=4, minimum=1, maximum=32,
       doc="bounds concurrent API calls; pveproxy has few workers"),
    _k("proxmox.privileged.mode", Kind.ENUM, default="local", choices=("local", "ssh", "off")),
    _k("proxmox.privileged.ssh_host", Kind.STR, nullable=True),
    _k("proxmox.privileged.ssh_port", Kind.INT, default=22, minimum=1, maximum=65535),
    _k("proxmox.privileged.ssh_user", Kind.STR, default="root"),
    _k("proxmox.privileged.ssh_key_file", Kind.PATH, nullable=True),
    _k("proxmox.privileged.ssh_known_hosts", Kind.PATH, nullable=True),
    _k("proxmox.privileged.fstab_path", Kind.PATH, default="/etc/fstab",
       doc="the fstab a USB backup disk's line is written to (a scratch file in tests)"),
    _k("proxmox.privileged.mount_root", Kind.PATH, default="/mnt/felhom",
       doc="USB backup disks are mounted at <mount_root>/<name>"),
    _k("hub.url", Kind.STR, nullable=True,
       doc="null: reconcile from reconcile.desired_file without a hub"),
    _k("hub.token", Kind.SECRET, nullable=True, doc="Bearer token (or token_file, or the "
       "credential hub_token)"),
    _k("hub.token_file", Kind.PATH, nullable=True),
    _k("hub.tls_fingerprint", Kind.STR, nullable=True),
    _k("hub.ca_file", Kind.PATH, nullable=True),
    _k("hub.interval_s", Kind.NUMBER, default=30, minimum=1, maximum=3600),
    _k("reconcile.workers", Kind.INT, default=8, minimum=1, maximum=64),
    _k("reconcile.interval_s", Kind.NUMBER, default=30, minimum=1, maximum=86400),
    _k("reconcile.desired_file", Kind.PATH, nullable=True),
    _k("authz.allowed_signers", Kind.PATH, default="/etc/felhom-agent/allowed_signers"),
    _k("authz.namespace", Kind.STR, default="felhom-op"),
    _k("authz.max_clock_skew_s", Kind.INT, default=120, minimum=0, maximum=3600),
    _k("authz.max_op_lifetime_s", Kind.INT, default=900, minimum=1, maximum=86400),
    _k("backup.min_keep", Kind.INT, default=3, minimum=1,
       doc="local floor of keep.last when pruning after a policy backup"),
    _k("backup.max_concurrent", Kind.INT, default=1, minimum=1,
       doc="agent backups running at once on this node"),
    _k("backup.safety_storage", Kind.STR, nullable=True,
       doc="storage for the safety backup taken before a restore"),
    _k("backup.space_margin_pct", Kind.INT, default=20, minimum=0, maximum=1000,
       doc="free space required beyond the size of the guest's newest backup"),
    _k("backup.stale_lock_s", Kind.INT, default=60, minimum=1,
       doc="a backup lock without a running vzdump for this long is reported"),
    _k("guestapi.enabled", Kind.BOOL, default=False,
       doc="serve the per-guest local API (each guest also needs \"guestapi\": true)"),
    _k("guestapi.socket_dir", Kind.PATH, default="/run/felhom-agent/guests",
       doc="the agent's own runtime directory for the guest API"),
    _k("guestapi.container_path", Kind.PATH, default="/run/felhom/agent.sock",
       doc="where a container finds its socket (inside the container)"),
    _k("guestapi.rate_per_s", Kind.NUMBER, default=5, minimum=0.1, maximum=1000,
       doc="requests per second per guest (token bucket refill)"),
    _k("guestapi.burst", Kind.INT, default=10, minimum=1, maximum=10000,
       doc="token bucket size per guest"),
    _k("guestapi.backup_min_interval_s", Kind.INT, default=3600, minimum=0, maximum=604800,
       doc="between two backups a guest requests"),
    _k("guestapi.backups_per_day", Kind.INT, default=4, minimum=0, maximum=96,
       doc="backups a guest may request in 24 hours"),
    _k("guestapi.allow_restart", Kind.BOOL, default=False,
       doc="serve POST /1.0/restart (a guest rebooting itself)"),
    _k("guestapi.serial_dir", Kind.PATH, default="/var/run/qemu-server",
       doc="where PVE puts a VM's serial sockets (<vmid>.serial1)"),
    _k("storage.warn_pct", Kind.INT, default=85, minimum=1, maximum=100,
       doc="a storage this full (used/total, percent) is reported with alert warn"),
    _k("storage.crit_pct", Kind.INT, default=95, minimum=1, maximum=100,
       doc="a storage this full is reported with alert crit"),
    _k("storage.smart_interval_s", Kind.NUMBER, default=3600, minimum=10, maximum=86400,
       doc="seconds between two readings of disks, SMART and sensors"),
    _k("provision.vmid_min", Kind.INT, default=1000, minimum=VMID_MIN, maximum=VMID_MAX,
       doc="lowest vmid the desired state may provision"),
    _k("provision.vmid_max", Kind.INT, default=1999, minimum=VMID_MIN, maximum=VMID_MAX,
       doc="highest vmid the desired state may provision"),
    _k("provision.max_guests", Kind.INT, default=20, minimum=0,
       doc="desired state provisions only while the node holds fewer guests in the range"),
    _k("provision.allowed_sources", Kind.LIST, default=(),
       doc='sources the desired state may provision from: {"template": VMID} or '
       '{"archive": "GLOB"}'),
    _k("provision.pool", Kind.STR, nullable=True,
       doc="pool a provisioned guest joins when its provision block names none"),
)

KEYS_BY_PATH: Mapping[tuple[str, ...], Key] = {key.path: key for key in KEYS}
KEYS_BY_ENV: Mapping[str, Key] = {key.env: key for key in KEYS}
SECTIONS: frozenset[tuple[str, ...]] = frozenset(
    key.path[:i] for key in KEYS for i in range(1, len(key.path))
)
