"""Per-key and cross-key validation, then construction of the frozen :class:`Config`.

Input is the flat ``{dotted key: raw value}`` mapping after the file and the environment have
been merged and type-checked; output is a :class:`Config` whose every field obeys the rules
of ``docs/architecture.md`` ("Configuration").
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast
from urllib.parse import SplitResult, urlsplit

from felhom_agent.config._keys import KEYS, KEYS_BY_PATH, Kind
from felhom_agent.config._model import (
    AllowedSource,
    AuthzConfig,
    BackupConfig,
    Config,
    GuestApiConfig,
    HubConfig,
    LogConfig,
    PrivilegedConfig,
    ProvisionConfig,
    ProxmoxConfig,
    ReconcileConfig,
    StorageConfig,
)
from felhom_agent.errors import ConfigError
from felhom_agent.fingerprint import pin_from_config
from felhom_agent.secret import Secret
from felhom_agent.storageids import STORAGE_ID_RULE, STORAGE_ID_TEXT
from felhom_agent.vmids import VMID_MAX, VMID_MIN, is_vmid

__all__ = ["build_config"]

_HOST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
_NODE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_TOKEN_ID = re.compile(r"[^\s:/@!]+@[A-Za-z][A-Za-z0-9._-]*![A-Za-z][A-Za-z0-9._-]*")
_NAMESPACE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
_SSH_USER = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
_SSH_HOST = re.compile(r"[A-Za-z0-9_.:\[\]][A-Za-z0-9_.:\[\]-]{0,252}")
_SECRET_OK = re.compile(r"[\x21-\x7e]{8,}")
#: A socket path inside a container: plain components, short enough for sun_path.
_CONTAINER_PATH = re.compile(r"(?:/[A-Za-z0-9][A-Za-z0-9._-]{0,63}){2,8}")
#: A mount root: absolute, 1-8 plain components, no trailing slash (it prefixes mount points).
_MOUNT_ROOT = re.compile(r"(?:/[A-Za-z0-9_][A-Za-z0-9._-]{0,63}){1,8}")
_POOL = re.compile(r"[A-Za-z0-9_-]{1,64}")
#: An archive glob: a storage id, ``:``, then printable characters without spaces.
_ARCHIVE_GLOB = re.compile(STORAGE_ID_TEXT.pattern + r":[\x21-\x7e]{1,255}")


def _fail(dotted: str, message: str) -> ConfigError:
    return ConfigError(f"{dotted}: {message}", key=dotted)


def _check_bounds(raw: Mapping[str, Any]) -> None:
    for key in KEYS:
        value = raw.get(key.dotted)
        if value is None:
            continue
        bad = False
        if key.kind in (Kind.INT, Kind.NUMBER):
            number = float(value)
            if key.kind is Kind.INT and not isinstance(value, int):
                bad = True
            if key.minimum is not None and (
                number < key.minimum or (key.exclusive_min and number == key.minimum)
            ):
                bad = True
            if key.maximum is not None and number > key.maximum:
                bad = True
        elif key.kind is Kind.ENUM:
            bad = value not in key.choices
        elif key.kind is Kind.PATH:
            bad = not str(value) or not os.path.isabs(str(value)) or "\x00" in str(value)
        elif key.kind is Kind.SECRET and not _SECRET_OK.fullmatch(cast(Secret, value).reveal()):
            raise _fail(
                key.dotted,
                "the value (***) is shorter than 8 characters or contains whitespace or "
                "control characters; must be the printable secret exactly as issued",
            )
        if bad:
            raise _fail(key.dotted, f"{value!r} is not allowed; must be {key.allowed()}")
    for key in KEYS:
        if key.required and raw.get(key.dotted) is None:
            raise _fail(key.dotted, f"is required ({key.doc or key.allowed()}) but not set")


def _url(dotted: str, value: str) -> SplitResult:
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as err:
        raise _fail(dotted, f"{value!r} is not a valid URL ({err})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _fail(dotted, f"{value!r} is not allowed; must be an https:// (or http://) URL")
    if parts.username is not None or parts.password is not None:
        raise _fail(dotted, "credentials in the URL are not allowed; use the token keys")
    if parts.query or parts.fragment:
        raise _fail(dotted, f"{value!r} must not carry a query or fragment")
    del port
    return parts


def _is_loopback(host: str) -> bool:
    # Only IP literals: a name such as "localhost" is resolved at connect time and could be
    # pointed elsewhere, taking the clear-text Bearer token with it.
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _pattern(raw: Mapping[str, Any], dotted: str, regex: re.Pattern[str], allowed: str) -> None:
    value = raw.get(dotted)
    if value is not None and not regex.fullmatch(value):
        raise _fail(dotted, f"{value!r} is not allowed; must be {allowed}")


def _existing_file(raw: Mapping[str, Any], dotted: str) -> Path | None:
    value = raw.get(dotted)
    if value is None:
        return None
    path = Path(value)
    if not path.is_file() or not os.access(path, os.R_OK):
        raise _fail(dotted, f"{value!r} is not a readable file")
    return path


def _check_proxmox(raw: dict[str, Any]) -> None:
    url = _url("proxmox.api_url", raw["proxmox.api_url"])
    if url.scheme != "https":
        raise _fail("proxmox.api_url", f"{raw['proxmox.api_url']!r} is not allowed; the PVE "
                    "API is served only over https (pveproxy, port 8006)")
    if url.path not in ("", "/"):
        raise _fail("proxmox.api_url", "must be the server root (https://HOST:8006), "
                    "without a path; /api2/json is added by the agent")
    fingerprint = raw.get("proxmox.tls_fingerprint")
    ca_file = _existing_file(raw, "proxmox.ca_file")
    if fingerprint is None and ca_file is None:
        raise _fail("proxmox.tls_fingerprint", "is required for an https api_url (or set "
                    "proxmox.ca_file); there is no insecure default. Read it on the host with "
                    "`pvenode cert info` (the SHA-256 line of pveproxy-ssl.pem or pve-ssl.pem)")
    if fingerprint is not None and ca_file is not None:
        raise _fail("proxmox.tls_fingerprint", "and proxmox.ca_file are both set; set one")
    if fingerprint is not None:
        # Stored in PVE's upper-case colon form, whichever accepted form was written.
        raw["proxmox.tls_fingerprint"] = pin_from_config(
            fingerprint, key="proxmox.tls_fingerprint").colon
    if raw.get("proxmox.token_secret") is None:
        raise _fail("proxmox.token_secret", "is required but not set; set it, or "
                    "proxmox.token_secret_file, or the systemd credential proxmox_token_secret")
    _pattern(raw, "proxmox.node", _NODE, "a PVE node name (letters, digits, '-')")
    _pattern(raw, "proxmox.token_id", _TOKEN_ID, "USER@REALM!TOKENID, e.g. felhom@pve!agent")
    _pattern(raw, "proxmox.privileged.ssh_user", _SSH_USER, "a POSIX user name")
    _pattern(raw, "proxmox.privileged.ssh_host", _SSH_HOST, "a host name or IP address")
    if raw.get("proxmox.privileged.mode") == "ssh":
        for name in ("ssh_host", "ssh_key_file", "ssh_known_hosts"):
            if raw.get(f"proxmox.privileged.{name}") is None:
                raise _fail(f"proxmox.privileged.{name}",
                            "is required when proxmox.privileged.mode is ssh")


def _check_storage(raw: Mapping[str, Any]) -> None:
    root = raw.get("proxmox.privileged.mount_root")
    if root is not None and (not _MOUNT_ROOT.fullmatch(str(root)) or "/../" in f"{root}/"
                             or "/./" in f"{root}/"):
        raise _fail("proxmox.privileged.mount_root",
                    f"{root!r} is not allowed; must be an absolute path of plain components "
                    "(letters, digits, '._-') without a trailing slash, e.g. /mnt/felhom")
    warn, crit = _value(raw, "storage.warn_pct"), _value(raw, "storage.crit_pct")
    if crit < warn:
        raise _fail("storage.crit_pct", f"{crit!r} is below storage.warn_pct ({warn!r}); "
                    "crit must be at least warn")


def _check_hub(raw: dict[str, Any]) -> None:
    value = raw.get("hub.url")
    if value is None:
        return
    url = _url("hub.url", value)
    fingerprint = raw.get("hub.tls_fingerprint")
    ca_file = _existing_file(raw, "hub.ca_file")
    if url.scheme == "http":
        if not _is_loopback(url.hostname or ""):
            raise _fail("hub.url", f"{value!r} is not allowed: the Bearer token never travels "
                        "in clear text, so http:// is accepted only for a loopback IP address "
                        "(127.0.0.1, ::1); "
                        "use https://")
        if fingerprint is not None or ca_file is not None:
            raise _fail("hub.url", "is http:// but hub.tls_fingerprint/hub.ca_file is set; "
                        "use https:// with them")
    if fingerprint is not None and ca_file is not None:
        raise _fail("hub.tls_fingerprint", "and hub.ca_file are both set; set one")
    if fingerprint is not None:
        raw["hub.tls_fingerprint"] = pin_from_config(fingerprint, key="hub.tls_fingerprint").colon
    if raw.get("hub.token") is None:
        raise _fail("hub.token", "is required when hub.url is set; set it, or hub.token_file, "
                    "or the systemd credential hub_token")


def _check_guestapi(raw: Mapping[str, Any]) -> None:
    path = raw.get("guestapi.container_path")
    if path is not None and (not _CONTAINER_PATH.fullmatch(path) or ".." in path
                             or len(path) > 100):
        raise _fail("guestapi.container_path", f"{path!r} is not allowed; must be an absolute "
                    "path of 2-8 plain components (letters, digits, '.', '_', '-'), at most "
                    "100 characters (a unix socket path)")
def _allowed_sources(raw: Mapping[str, Any]) -> tuple[AllowedSource, ...]:
    """``provision.allowed_sources``: objects ``{"template": VMID}`` or ``{"archive": GLOB}``."""
    dotted = "provision.allowed_sources"
    value = raw.get(dotted, ())
    out: list[AllowedSource] = []
    for n, entry in enumerate(value):
        where = f"{dotted}[{n}]"
        if not isinstance(entry, dict) or len(entry) != 1:
            raise _fail(where, 'must be an object with exactly one member: {"template": VMID} '
                        'or {"archive": "STORAGE:backup/GLOB"}')
        ((name, item),) = entry.items()
        if name == "template":
            if isinstance(item, bool) or not isinstance(item, int) or not is_vmid(item):
                raise _fail(f"{where}.template", f"{item!r} is not allowed; must be a vmid "
                            f"{VMID_MIN}..{VMID_MAX}")
            out.append(AllowedSource(template=item))
        elif name == "archive":
            if not isinstance(item, str) or not _ARCHIVE_GLOB.fullmatch(item):
                raise _fail(f"{where}.archive", f"{item!r} is not allowed; must be a backup "
                            "volid or a glob of one, STORAGE:backup/... (* and ? match)")
            out.append(AllowedSource(archive=item))
        else:
            raise _fail(f"{where}.{name}", "unknown member (allowed: template, archive)")
    return tuple(out)


def _check_provision(raw: Mapping[str, Any]) -> None:
    _pattern(raw, "provision.pool", _POOL, "a PVE pool id (letters, digits, '-', '_') or null")
    low, high = _value(raw, "provision.vmid_min"), _value(raw, "provision.vmid_max")
    if low > high:
        raise _fail("provision.vmid_max", f"{high} is below provision.vmid_min ({low})")


def _value(raw: Mapping[str, Any], dotted: str) -> Any:
    if dotted in raw:
        return raw[dotted]
    return KEYS_BY_PATH[tuple(dotted.split("."))].default


def _path(raw: Mapping[str, Any], dotted: str) -> Path | None:
    value = _value(raw, dotted)
    return None if value is None else Path(value)


def build_config(raw_in: Mapping[str, Any], *, source: Path | None) -> Config:
    """Validate the merged flat mapping and build the frozen :class:`Config`."""
    raw = dict(raw_in)
    _check_bounds(raw)
    _pattern(raw, "host_id", _HOST_ID, "letters, digits, '.', '_' or '-' (max 63)")
    _pattern(raw, "authz.namespace", _NAMESPACE, "an SSHSIG namespace such as felhom-op")
    _pattern(raw, "backup.safety_storage", STORAGE_ID_TEXT, f"{STORAGE_ID_RULE} or null")
    _check_proxmox(raw)
    _check_hub(raw)
    _check_guestapi(raw)
    _check_storage(raw)
    _check_provision(raw)
    sources = _allowed_sources(raw)

    def v(dotted: str) -> Any:
        return _value(raw, dotted)

    return Config(
        host_id=v("host_id"),
        state_dir=Path(v("state_dir")),
        log=LogConfig(level=v("log.level"), format=v("log.format")),
        proxmox=ProxmoxConfig(
            api_url=v("proxmox.api_url").rstrip("/"),
            node=v("proxmox.node"),
            token_id=v("proxmox.token_id"),
            token_secret=v("proxmox.token_secret"),
            token_secret_file=_path(raw, "proxmox.token_secret_file"),
            tls_fingerprint=v("proxmox.tls_fingerprint"),
            ca_file=_path(raw, "proxmox.ca_file"),
            timeout_s=float(v("proxmox.timeout_s")),
            task_timeout_s=float(v("proxmox.task_timeout_s")),
            max_connections=v("proxmox.max_connections"),
            privileged=PrivilegedConfig(
                mode=v("proxmox.privileged.mode"),
                ssh_host=v("proxmox.privileged.ssh_host"),
                ssh_port=v("proxmox.privileged.ssh_port"),
                ssh_user=v("proxmox.privileged.ssh_user"),
                ssh_key_file=_path(raw, "proxmox.privileged.ssh_key_file"),
                ssh_known_hosts=_path(raw, "proxmox.privileged.ssh_known_hosts"),
                fstab_path=Path(v("proxmox.privileged.fstab_path")),
                mount_root=Path(v("proxmox.privileged.mount_root")),
            ),
        ),
        hub=HubConfig(
            url=v("hub.url"),
            token=v("hub.token"),
            token_file=_path(raw, "hub.token_file"),
            tls_fingerprint=v("hub.tls_fingerprint"),
            ca_file=_path(raw, "hub.ca_file"),
            interval_s=float(v("hub.interval_s")),
        ),
        reconcile=ReconcileConfig(
            workers=v("reconcile.workers"),
            interval_s=float(v("reconcile.interval_s")),
            desired_file=_path(raw, "reconcile.desired_file"),
        ),
        authz=AuthzConfig(
            allowed_signers=Path(v("authz.allowed_signers")),
            namespace=v("authz.namespace"),
            max_clock_skew_s=v("authz.max_clock_skew_s"),
            max_op_lifetime_s=v("authz.max_op_lifetime_s"),
        ),
        backup=BackupConfig(
            min_keep=v("backup.min_keep"),
            max_concurrent=v("backup.max_concurrent"),
            safety_storage=v("backup.safety_storage"),
            space_margin_pct=v("backup.space_margin_pct"),
            stale_lock_s=v("backup.stale_lock_s"),
        ),
        guestapi=GuestApiConfig(
            enabled=v("guestapi.enabled"),
            socket_dir=Path(v("guestapi.socket_dir")),
            container_path=v("guestapi.container_path"),
            rate_per_s=float(v("guestapi.rate_per_s")),
            burst=v("guestapi.burst"),
            backup_min_interval_s=v("guestapi.backup_min_interval_s"),
            backups_per_day=v("guestapi.backups_per_day"),
            allow_restart=v("guestapi.allow_restart"),
            serial_dir=Path(v("guestapi.serial_dir")),
        ),
        storage=StorageConfig(
            warn_pct=v("storage.warn_pct"),
            crit_pct=v("storage.crit_pct"),
            smart_interval_s=float(v("storage.smart_interval_s")),
        ),
        provision=ProvisionConfig(
            vmid_min=v("provision.vmid_min"),
            vmid_max=v("provision.vmid_max"),
            max_guests=v("provision.max_guests"),
            allowed_sources=sources,
            pool=v("provision.pool"),
        ),
        source=source,
    )
