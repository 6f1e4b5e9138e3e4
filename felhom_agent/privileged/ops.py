"""The operations the agent may run as root, as typed, validated argument classes.

Everything else goes through the Proxmox API (``docs/architecture.md``, "The fenced root CLI"). Each
class validates every value in its constructor (so an instance is valid by construction;
``attrs.evolve`` re-validates) and builds an argv list — never a shell string:

1. :class:`PctCreate` — ``pct create`` of the golden image with ``--features keyctl=1``, a
   feature only ``root@pam`` may set (an API token never can, not even root's own).
2. :class:`UsbMount` / :class:`UsbUnmount` — a USB disk's ``/etc/fstab`` line and the
   ``mount`` / ``umount`` of it, with the reads they decide on: :class:`MountQuery`
   (``findmnt``: what is mounted at a mount point) and :class:`BlockDevices` (``lsblk``: which
   file systems are present).
3. :class:`SmartRead` and :class:`SensorsRead` — ``smartctl --json -a DEVICE`` and
   ``sensors -j``: the SMART and sensor readings.

The executor (:class:`felhom_agent.privileged.facade.Privileged`) accepts only these classes,
re-validates each instance (``attrs.evolve``) right before use, and starts only the programs
in :data:`PROGRAMS`.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from typing import Any, Final

import attrs

from felhom_agent.privileged._checks import check_int, check_str
from felhom_agent.privileged.errors import RefusedArgument
from felhom_agent.storageids import STORAGE_ID_TEXT
from felhom_agent.vmids import VMID_MAX, VMID_MIN

__all__ = [
    "FS_TYPES",
    "MOUNT_ROOT",
    "PROGRAMS",
    "SMART_DEVICE_TYPES",
    "BlockDevices",
    "MountQuery",
    "NetSpec",
    "PctCreate",
    "SensorsRead",
    "SmartRead",
    "UsbMount",
    "UsbUnmount",
]

#: The only programs the fenced CLI ever starts (``mkdir`` prepares a USB mount point;
#: ``findmnt`` and ``lsblk`` only read).
PROGRAMS: Final = frozenset({"pct", "mkdir", "mount", "umount", "findmnt", "lsblk", "smartctl",
                             "sensors"})

#: USB disks are mounted only below this directory (``proxmox.privileged.mount_root``).
MOUNT_ROOT: Final = "/mnt/felhom"

#: File systems a USB backup disk may carry.
FS_TYPES: Final = frozenset({"ext4", "xfs", "btrfs", "exfat", "vfat"})

#: ``smartctl -d`` values allowed (USB bridges usually need ``sat``).
SMART_DEVICE_TYPES: Final = frozenset(
    {"auto", "ata", "sat", "scsi", "nvme", "usbcypress", "usbjmicron", "usbprolific",
     "usbsunplus"}
)

_OSTEMPLATE = re.compile(
    STORAGE_ID_TEXT.pattern + r":vztmpl/"
    r"[A-Za-z0-9][A-Za-z0-9._+-]{0,200}\.tar\.(?:gz|xz|zst)"
)
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"(?=.{{1,253}}\Z){_LABEL}(?:\.{_LABEL})*")
_NET_NAME = re.compile(r"eth[0-9]{1,2}")
_BRIDGE = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,14}")
_HWADDR = re.compile(r"[0-9A-F][02468ACE](?::[0-9A-F]{2}){5}")
_USB_BY_ID = re.compile(r"/dev/disk/by-id/usb-[A-Za-z0-9][A-Za-z0-9._:+-]{0,200}")
_FS_UUID = re.compile(
    r"UUID=(?:[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
    r"|[0-9A-F]{4}-[0-9A-F]{4}|[0-9A-F]{16})"
)
#: The keys of a net0 property string :meth:`NetSpec.parse` accepts.
_NET_KEYS = ("name", "bridge", "ip", "gw", "ip6", "gw6", "hwaddr", "tag", "firewall")
_MOUNT_COMPONENT = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"
#: A mount root: absolute, 1-8 plain components, no trailing slash.
_MOUNT_ROOT = re.compile(r"(?:/[A-Za-z0-9_][A-Za-z0-9._-]{0,63}){1,8}")
_BELOW_ROOT = re.compile(rf"(?:/{_MOUNT_COMPONENT}){{1,4}}")
_SMART_DEVICE = re.compile(
    r"/dev/sd[a-z]{1,3}|/dev/nvme[0-9]{1,3}(?:n[0-9]{1,3})?"
    r"|/dev/disk/by-id/(?:ata|nvme|usb|scsi|wwn)-[A-Za-z0-9][A-Za-z0-9._:+-]{0,200}"
)


_Check = Callable[[str, object], object]
_Validator = Callable[[object, "attrs.Attribute[Any]", object], None]


def _validator(check: _Check) -> _Validator:
    """Adapt a ``check(field, value)`` function to an attrs validator."""

    def run(_instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
        check(attribute.name, value)

    return run


def _bool(field: str, value: object) -> None:
    if type(value) is not bool:
        raise RefusedArgument(field, value, "must be a bool")


def _optional_int(minimum: int, maximum: int) -> _Validator:
    def check(field: str, value: object) -> None:
        if value is not None:
            check_int(field, value, minimum=minimum, maximum=maximum)

    return _validator(check)


def _ipv4_interface(field: str, value: object) -> None:
    if value in ("dhcp", "manual"):
        return
    shown = "'dhcp', 'manual' or an IPv4 address with prefix (192.0.2.10/24)"
    if type(value) is not str:
        raise RefusedArgument(field, value, f"must be {shown}")
    try:
        iface = ipaddress.IPv4Interface(value)
    except ValueError:
        raise RefusedArgument(field, value, f"must be {shown}") from None
    # Refuse anything that does not round-trip (leading zeros, missing prefix, host bits
    # forms the parser tolerates): the spec we pass must be exactly what was validated.
    if "/" not in value or str(iface) != value:
        raise RefusedArgument(field, value, f"must be {shown} in canonical form")


def _ipv6_interface(field: str, value: object) -> None:
    if value is None or value in ("auto", "dhcp", "manual"):
        return
    shown = "None, 'auto', 'dhcp', 'manual' or an IPv6 address with prefix"
    if type(value) is not str:
        raise RefusedArgument(field, value, f"must be {shown}")
    try:
        iface = ipaddress.IPv6Interface(value)
    except ValueError:
        raise RefusedArgument(field, value, f"must be {shown}") from None
    if "/" not in value or str(iface) != value:
        raise RefusedArgument(field, value, f"must be {shown} in canonical form")


def _optional_gateway(version: int) -> _Validator:
    def check(field: str, value: object) -> None:
        if value is None:
            return
        if type(value) is not str:
            raise RefusedArgument(field, value, f"must be an IPv{version} address")
        try:
            addr = ipaddress.ip_address(value)
        except ValueError:
            raise RefusedArgument(field, value, f"must be an IPv{version} address") from None
        if addr.version != version or str(addr) != value:
            raise RefusedArgument(field, value, f"must be a canonical IPv{version} address")

    return _validator(check)


def _pattern(pattern: re.Pattern[str], what: str) -> _Validator:
    return _validator(lambda field, value: check_str(field, value, pattern, what))


def _optional_pattern(pattern: re.Pattern[str], what: str) -> _Validator:
    def check(field: str, value: object) -> None:
        if value is not None:
            check_str(field, value, pattern, what)

    return _validator(check)


def _member(allowed: frozenset[str]) -> _Validator:
    def check(field: str, value: object) -> None:
        if type(value) is not str or value not in allowed:
            raise RefusedArgument(field, value, f"must be one of {sorted(allowed)}")

    return _validator(check)


@attrs.frozen
class NetSpec:
    """A container network interface (``--net0``), built from typed parts.

    ``ip`` is ``dhcp``, ``manual`` or a canonical IPv4 CIDR; ``gw`` is allowed only with a
    static address. The rendered spec (:meth:`render`) contains only validated values, so no
    ``,`` or ``=`` can smuggle in another key.
    """

    bridge: str = attrs.field(validator=_pattern(_BRIDGE, "a bridge name like vmbr0"))
    name: str = attrs.field(default="eth0", validator=_pattern(_NET_NAME, "eth0..eth99"))
    ip: str = attrs.field(default="dhcp", validator=_validator(_ipv4_interface))
    gw: str | None = attrs.field(default=None, validator=_optional_gateway(4))
    ip6: str | None = attrs.field(default=None, validator=_validator(_ipv6_interface))
    gw6: str | None = attrs.field(default=None, validator=_optional_gateway(6))
    hwaddr: str | None = attrs.field(
        default=None,
        validator=_optional_pattern(_HWADDR, "a unicast MAC address in upper case"),
    )
    tag: int | None = attrs.field(default=None, validator=_optional_int(1, 4094))
    firewall: bool = attrs.field(default=False, validator=_validator(_bool))

    def __attrs_post_init__(self) -> None:
        if self.gw is not None and self.ip in ("dhcp", "manual"):
            raise RefusedArgument("gw", self.gw, "a gateway needs a static ip")
        if self.gw6 is not None and (self.ip6 is None or self.ip6 in ("auto", "dhcp", "manual")):
            raise RefusedArgument("gw6", self.gw6, "an IPv6 gateway needs a static ip6")

    @classmethod
    def parse(cls, text: str) -> NetSpec:
        """A ``pct`` property string (``name=eth0,bridge=vmbr0,ip=dhcp``) as a NetSpec.

        Only the keys :meth:`render` writes are accepted, each once; ``tag`` is a number and
        ``firewall`` ``0``/``1``. Every value is then checked by the validators.

        Raises:
            RefusedArgument: an unknown or repeated key, or a value a validator refuses.
        """
        if type(text) is not str or not text or len(text) > 512:
            raise RefusedArgument("net0", text, "must be a property string like "
                                  "name=eth0,bridge=vmbr0,ip=dhcp")
        fields: dict[str, Any] = {}
        for part in text.split(","):
            key, sep, value = part.partition("=")
            if not sep or key not in _NET_KEYS or key in fields:
                raise RefusedArgument("net0", text, "must hold each of "
                                      f"{', '.join(_NET_KEYS)} at most once, as key=value")
            fields[key] = value
        if "tag" in fields:
            if not fields["tag"].isdigit() or len(fields["tag"]) > 4:
                raise RefusedArgument("tag", fields["tag"], "must be a VLAN tag 1..4094")
            fields["tag"] = int(fields["tag"])
        if "firewall" in fields:
            if fields["firewall"] not in ("0", "1"):
                raise RefusedArgument("firewall", fields["firewall"], "must be 0 or 1")
            fields["firewall"] = fields["firewall"] == "1"
        if "bridge" not in fields:
            raise RefusedArgument("bridge", None, "is required (bridge=vmbr0)")
        return cls(**fields)

    def render(self) -> str:
        """The ``pct`` property string, keys in a fixed order."""
        parts = [f"name={self.name}", f"bridge={self.bridge}", f"ip={self.ip}"]
        if self.gw is not None:
            parts.append(f"gw={self.gw}")
        if self.ip6 is not None:
            parts.append(f"ip6={self.ip6}")
        if self.gw6 is not None:
            parts.append(f"gw6={self.gw6}")
        if self.hwaddr is not None:
            parts.append(f"hwaddr={self.hwaddr}")
        if self.tag is not None:
            parts.append(f"tag={self.tag}")
        if self.firewall:
            parts.append("firewall=1")
        return ",".join(parts)


def _netspec(field: str, value: object) -> None:
    if value is None:
        return
    if not isinstance(value, NetSpec):
        raise RefusedArgument(field, value, "must be a NetSpec or None")
    # Re-run NetSpec's own validators: an instance forged past them (object.__setattr__ on a
    # frozen class) is refused when the PctCreate is built or re-validated.
    attrs.evolve(value)


@attrs.frozen
class PctCreate:
    """Operation 1: ``pct create`` of the golden image with ``--features keyctl=1``.

    The container is unprivileged unless ``unprivileged=False`` is asked for explicitly;
    ``nesting`` adds ``nesting=1`` to the features (both are what container runtimes inside
    the guest need). The root disk is ``rootfs_gb`` GiB on ``storage``; without ``net0`` the
    container gets no network device. No password or other secret is ever put on a command
    line.
    """

    vmid: int = attrs.field(
        validator=_validator(lambda f, v: check_int(f, v, minimum=VMID_MIN, maximum=VMID_MAX))
    )
    ostemplate: str = attrs.field(
        validator=_pattern(_OSTEMPLATE, "a template volid like local:vztmpl/NAME.tar.zst")
    )
    hostname: str = attrs.field(validator=_pattern(_HOSTNAME, "a DNS host name"))
    storage: str = attrs.field(validator=_pattern(STORAGE_ID_TEXT, "a PVE storage id"))
    net0: NetSpec | None = attrs.field(default=None, validator=_validator(_netspec))
    rootfs_gb: int = attrs.field(
        default=8, validator=_validator(lambda f, v: check_int(f, v, minimum=1, maximum=65536))
    )
    memory_mb: int = attrs.field(
        default=1024,
        validator=_validator(lambda f, v: check_int(f, v, minimum=16, maximum=1_048_576)),
    )
    cores: int = attrs.field(
        default=1, validator=_validator(lambda f, v: check_int(f, v, minimum=1, maximum=512))
    )
    unprivileged: bool = attrs.field(default=True, validator=_validator(_bool))
    nesting: bool = attrs.field(default=False, validator=_validator(_bool))

    def argv(self) -> list[str]:
        """The ``pct create`` argv; positional vmid and template first, as pct documents."""
        features = "keyctl=1,nesting=1" if self.nesting else "keyctl=1"
        return [
            "pct", "create", str(self.vmid), self.ostemplate,
            "--hostname", self.hostname,
            "--rootfs", f"{self.storage}:{self.rootfs_gb}",
            "--memory", str(self.memory_mb),
            "--cores", str(self.cores),
            *(("--net0", self.net0.render()) if self.net0 is not None else ()),
            "--unprivileged", "1" if self.unprivileged else "0",
            "--features", features,
        ]


def _check_source(field: str, value: object) -> None:
    if isinstance(value, str) and value.startswith("UUID="):
        check_str(field, value, _FS_UUID, "UUID=<file system uuid>")
    else:
        check_str(field, value, _USB_BY_ID, "/dev/disk/by-id/usb-... or UUID=...")


def _check_root(field: str, value: object) -> None:
    check_str(field, value, _MOUNT_ROOT, "an absolute path of plain components")


def _check_below_root(root: str, mountpoint: object) -> None:
    """``mountpoint`` is ``root`` plus 1-4 plain components."""
    shown = f"a path below {root}/ (1-4 plain components)"
    check_str("mountpoint", mountpoint, re.compile(".+", re.DOTALL), shown)
    assert isinstance(mountpoint, str)  # noqa: S101 - check_str accepted it
    if not mountpoint.startswith(root + "/") or _BELOW_ROOT.fullmatch(
            mountpoint[len(root):]) is None:
        raise RefusedArgument("mountpoint", mountpoint, f"must be {shown}")


#: The mount options, identical in the fstab line and on the ``mount`` argv.
USB_OPTIONS: Final = "nofail,x-systemd.device-timeout=10s,noatime,nodev,nosuid,noexec"


@attrs.frozen
class UsbMount:
    """Operation 2: a USB disk's ``/etc/fstab`` line and its ``mount``.

    ``source`` is the fstab source field: a ``/dev/disk/by-id/usb-...`` link or
    ``UUID=...`` (never ``/dev/sdX``, which changes between boots). ``mountpoint`` lies below
    ``root`` (``proxmox.privileged.mount_root``, default :data:`MOUNT_ROOT`). The options
    are fixed, not caller-supplied: ``nofail`` and a short ``x-systemd.device-timeout`` so a
    missing USB disk never blocks the host's boot, and ``nodev,nosuid,noexec`` because a
    removable disk must not carry devices or programs.
    """

    source: str = attrs.field(validator=_validator(_check_source))
    mountpoint: str
    fstype: str = attrs.field(validator=_member(FS_TYPES))
    read_only: bool = attrs.field(default=False, validator=_validator(_bool))
    root: str = attrs.field(default=MOUNT_ROOT, validator=_validator(_check_root))

    def __attrs_post_init__(self) -> None:
        _check_below_root(self.root, self.mountpoint)

    @property
    def uuid(self) -> str | None:
        """The file system UUID of a ``UUID=`` source (lower case), else ``None``."""
        return self.source[5:].lower() if self.source.startswith("UUID=") else None

    @property
    def options(self) -> str:
        """The mount options, identical in the fstab line and on the ``mount`` argv."""
        return USB_OPTIONS + (",ro" if self.read_only else "")

    @property
    def passno(self) -> int:
        """fsck pass: 2 for ext4 (checked after root); 0 where boot-time fsck is a no-op."""
        return 2 if self.fstype == "ext4" else 0

    def fstab_fields(self) -> tuple[str, str, str, str, str, str]:
        """The six fstab fields of this mount."""
        return (self.source, self.mountpoint, self.fstype, self.options, "0", str(self.passno))

    def mkdir_argv(self) -> list[str]:
        """Create the mount point (idempotent: ``-p``)."""
        return ["mkdir", "-p", "-m", "0755", "--", self.mountpoint]

    def mount_argv(self) -> list[str]:
        """Mount with the same values as the fstab line (not relying on fstab lookup)."""
        return ["mount", "-t", self.fstype, "-o", self.options, "--", self.source,
                self.mountpoint]


@attrs.frozen
class UsbUnmount:
    """Operation 2, undone: ``umount`` a USB disk mounted below ``root`` (data untouched)."""

    mountpoint: str
    root: str = attrs.field(default=MOUNT_ROOT, validator=_validator(_check_root))

    def __attrs_post_init__(self) -> None:
        _check_below_root(self.root, self.mountpoint)

    def umount_argv(self) -> list[str]:
        """Unmount that one mount point (no ``-l``/``-f``: a busy disk fails, never detaches)."""
        return ["umount", "--", self.mountpoint]


@attrs.frozen
class MountQuery:
    """What is mounted exactly at ``mountpoint`` (``findmnt``, JSON, four columns).

    The path is any plain absolute path (a read); ``findmnt`` exits 1 with no output when
    nothing is mounted there.
    """

    mountpoint: str = attrs.field(validator=_validator(
        lambda f, v: check_str(f, v, _MOUNT_ROOT, "an absolute path of plain components")))

    def argv(self) -> list[str]:
        """The ``findmnt`` argv."""
        return ["findmnt", "--json", "--mountpoint", self.mountpoint,
                "--output", "TARGET,SOURCE,FSTYPE,UUID"]


@attrs.frozen
class BlockDevices:
    """Every block device with its file system type and UUID (``lsblk``, JSON, full paths)."""

    def argv(self) -> list[str]:
        """The ``lsblk`` argv."""
        return ["lsblk", "--json", "--paths", "--output", "NAME,UUID,FSTYPE"]


@attrs.frozen
class SmartRead:
    """Operation 3a: ``smartctl --json -a DEVICE`` (optionally ``-d TYPE``).

    ``device`` is a whole-disk node (``/dev/sdX``, ``/dev/nvmeN[nM]``) or a
    ``/dev/disk/by-id/`` link of a known bus.
    """

    device: str = attrs.field(
        validator=_pattern(_SMART_DEVICE, "/dev/sdX, /dev/nvmeN[nM] or /dev/disk/by-id/BUS-...")
    )
    device_type: str | None = attrs.field(default=None)

    @device_type.validator
    def _check_type(self, attribute: attrs.Attribute[Any], value: object) -> None:
        if value is not None and (type(value) is not str or value not in SMART_DEVICE_TYPES):
            raise RefusedArgument(attribute.name, value,
                                  f"must be None or one of {sorted(SMART_DEVICE_TYPES)}")

    def argv(self) -> list[str]:
        """The ``smartctl`` argv (JSON output, all SMART information)."""
        argv = ["smartctl", "--json", "-a"]
        if self.device_type is not None:
            argv += ["-d", self.device_type]
        argv.append(self.device)
        return argv


@attrs.frozen
class SensorsRead:
    """Operation 3b: ``sensors -j`` (lm-sensors, JSON output); takes no arguments."""

    def argv(self) -> list[str]:
        """The ``sensors`` argv."""
        return ["sensors", "-j"]
