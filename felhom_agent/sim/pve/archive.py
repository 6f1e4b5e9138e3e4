"""Guest configs as a backup holds them, and the rewrites a restore or a clone applies.

A backup keeps the guest's config file text (the main section: ``#`` description lines, then
``key: value`` lines; what ``extractconfig`` returns). :func:`parse_config` reads it back the
way PVE's config parser does: the description from the comment lines (``%XX`` decoded),
integers as numbers, qemu ``memory`` and the text keys as strings, ``lxc.*`` raw keys kept
apart (a token's restore drops them with a warning).

Disk keys (``rootfs``/``mpN`` for containers; ``scsiN``, ``virtioN``, ``sataN``, ``ideN``,
``efidisk0``, ``tpmstate0`` for VMs, CD-ROMs excluded) hold a volume id before the first comma;
a restore or clone allocates new volumes named ``<storage>:vm-<vmid>-disk-<n>`` (a linked clone
``<storage>:base-<src>-disk-<n>/vm-<vmid>-disk-<n>``), and a template's volumes are renamed
``base-...``. New MAC addresses use Proxmox's ``BC:24:11`` prefix with random bytes.
"""

from __future__ import annotations

import re
import secrets
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "archive_guest_type", "base_volume", "disk_keys", "new_mac", "next_disk_index",
    "parse_config", "size_gib", "volume_of", "with_new_mac", "with_new_uuid", "with_volume",
]

_LXC_DISK_RE = re.compile(r"^(?:rootfs|mp\d+)$")
_QEMU_DISK_RE = re.compile(r"^(?:(?:ide|sata|scsi|virtio)\d+|efidisk0|tpmstate0)$")
_INT_RE = re.compile(r"^-?\d+$")
_KEY_RE = re.compile(r"^([a-z][a-z0-9_\-.]*):\s?(.*)$")
_MAC_RE = re.compile(r"(?i)[0-9a-f]{2}(?::[0-9a-f]{2}){5}")
#: keys whose values stay strings even when they look like numbers.
_TEXT_KEYS = frozenset({"description", "hostname", "name", "tags", "searchdomain",
                        "nameserver", "startup", "boot", "cpulimit", "vmgenid"})
_DIR_TYPE_RE = re.compile(r":backup/vzdump-(lxc|openvz|qemu)-")
_PBS_TYPE_RE = re.compile(r":backup/(ct|vm)/")


def _decode(text: str) -> str:
    return re.sub(r"%([0-9A-Fa-f]{2})", lambda m: chr(int(m[1], 16)), text)


def _value(gtype: str, key: str, raw: str) -> Any:
    if key in _TEXT_KEYS or (gtype == "qemu" and key == "memory"):
        return raw
    return int(raw) if _INT_RE.match(raw) else raw


def parse_config(gtype: str, text: str) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """The main section of an archived config: (keys, raw ``lxc.*`` lines in file order)."""
    config: dict[str, Any] = {}
    raw_lxc: list[tuple[str, str]] = []
    descr: list[str] = []
    for line in text.splitlines():
        if line.startswith("["):
            break  # a snapshot or pending section
        if line.startswith("#"):
            descr.append(_decode(line[1:]))
            continue
        m = _KEY_RE.match(line.strip())
        if m is None:
            continue
        key, raw = m[1], m[2].strip()
        if key.startswith("lxc."):
            raw_lxc.append((key, raw))
        else:
            config[key] = _value(gtype, key, raw)
    if descr:
        config["description"] = "\n".join(descr)
    return config, raw_lxc


def archive_guest_type(volid: str, subtype: str | None) -> str | None:
    """``lxc``/``qemu`` for a backup volume (from its listing subtype, else its name)."""
    if subtype in ("lxc", "qemu"):
        return subtype
    if subtype == "openvz":
        return "lxc"
    m = _DIR_TYPE_RE.search(volid)
    if m is not None:
        return "qemu" if m[1] == "qemu" else "lxc"
    m = _PBS_TYPE_RE.search(volid)
    if m is not None:
        return "qemu" if m[1] == "vm" else "lxc"
    return None


def disk_keys(gtype: str, config: Mapping[str, Any]) -> list[str]:
    """The config keys that hold a guest volume (CD-ROM drives excluded), sorted."""
    pattern = _LXC_DISK_RE if gtype == "lxc" else _QEMU_DISK_RE
    out = []
    for key in sorted(config):
        if not pattern.match(key):
            continue
        value = str(config[key])
        if gtype == "qemu" and ("media=cdrom" in value or volume_of(value) in ("none", "cdrom")):
            continue
        out.append(key)
    return out


def volume_of(value: str) -> str:
    """The volume id of a disk value (before the first comma; ``volume=`` honoured)."""
    first = str(value).split(",", 1)[0]
    return first.removeprefix("volume=").removeprefix("file=")


def with_volume(value: str, volid: str) -> str:
    """``value`` with its volume replaced by ``volid`` (options kept)."""
    _, sep, rest = str(value).partition(",")
    return volid + (sep + rest if sep else "")


def size_gib(value: str) -> str | None:
    """The ``size=`` option of a disk value (``8G``), if any."""
    m = re.search(r"(?:^|,)size=([0-9.]+[KMGT]?)", str(value))
    return m[1] if m else None


def next_disk_index(vmid: int, taken: Iterable[str]) -> int:
    """The first ``n`` for which ``vm-<vmid>-disk-<n>`` is not among ``taken`` volume ids."""
    used = set()
    for volid in taken:
        m = re.search(rf"(?:vm|base)-{vmid}-disk-(\d+)$", volid)
        if m:
            used.add(int(m[1]))
    n = 0
    while n in used:
        n += 1
    return n


def base_volume(volid: str) -> str:
    """The volume id after template conversion (``vm-`` becomes ``base-``)."""
    sid, _, name = volid.partition(":")
    return f"{sid}:{re.sub(r'^vm-', 'base-', name)}"


def new_mac() -> str:
    """A random MAC address with Proxmox's OUI ``BC:24:11``."""
    b = secrets.token_bytes(3)
    return f"BC:24:11:{b[0]:02X}:{b[1]:02X}:{b[2]:02X}"


def with_new_mac(value: str) -> str:
    """A ``netN`` value with its MAC address replaced (``hwaddr=``, or qemu ``model=MAC``)."""
    return _MAC_RE.sub(new_mac(), str(value), count=1)


def with_new_uuid(value: str) -> str:
    """An ``smbios1`` value with a fresh ``uuid=``."""
    text = str(value)
    if "uuid=" not in text:
        return f"uuid={uuid.uuid4()}" + (f",{text}" if text else "")
    return re.sub(r"uuid=[0-9a-fA-F\-]+", f"uuid={uuid.uuid4()}", text)
