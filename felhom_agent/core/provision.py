"""Provisioning: the ``provision`` block a desired guest may carry, and the local limits.

A desired guest that does not exist yet may say where it comes from (``docs/architecture.md``,
"Provisioning")::

    "1001": {"type": "lxc", "state": "running",
             "provision": {"from": {"template": 9000}, "name": "c42-web",
                           "storage": "local-lvm", "pool": "customers"}}

``from`` is ``{"template": VMID}`` (a full clone of a template on this node) or
``{"archive": VOLID}`` (a golden backup restored into the new vmid with new MAC addresses).
The strict parser of the block lives with the rest of the desired state
(:mod:`felhom_agent.core.desired`); this module holds the value model, the operator's local
limits (:class:`ProvisionLimits`, from ``provision.*``) and the pure rule checks both the
planner and the provisioning kind apply. Nothing here reads PVE.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from typing import Any, Final

import attrs

from felhom_agent.storageids import STORAGE_ID_TEXT

__all__ = [
    "ARCHIVE_SOURCE",
    "NAME_RULE",
    "NAME_TEXT",
    "POOL_TEXT",
    "PROVISION_FIELDS",
    "SOURCE_KEYS",
    "TEMPLATE_SOURCE",
    "VOLID_TEXT",
    "ProvisionLimits",
    "ProvisionSpec",
    "SourceRule",
]

TEMPLATE_SOURCE: Final = "template"
ARCHIVE_SOURCE: Final = "archive"
#: The members of ``from`` (exactly one of them).
SOURCE_KEYS: Final = (TEMPLATE_SOURCE, ARCHIVE_SOURCE)
#: The members of a provision block.
PROVISION_FIELDS: Final = ("from", "name", "storage", "pool")

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
#: A VM name or container host name, as PVE takes it (DNS labels joined by dots).
NAME_TEXT: Final = re.compile(rf"(?=.{{1,128}}\Z){_LABEL}(?:\.{_LABEL})*")
NAME_RULE: Final = ("a DNS name: letters, digits and '-' in dot-separated labels, "
                    "at most 128 characters")
#: A PVE pool id.
POOL_TEXT: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
#: A backup volume id: ``<storage>:backup/<name>`` (a PBS snapshot or a vzdump file).
VOLID_TEXT: Final = re.compile(STORAGE_ID_TEXT.pattern + r":backup/[\x21-\x7e]{1,255}")


@attrs.frozen
class ProvisionSpec:
    """Where a new guest comes from and what it is called.

    Attributes:
        template: the template vmid to full-clone, or ``None``.
        archive: the backup volid to restore (with ``unique``), or ``None``.
        name: the VM name / container host name.
        storage: where the new guest's disks go.
        pool: the pool it joins (``None``: ``provision.pool``).
    """

    name: str
    storage: str
    template: int | None = None
    archive: str | None = None
    pool: str | None = None

    @property
    def source(self) -> str:
        """``template 9000`` or ``archive pbs1:backup/ct/9000/...`` (for reasons)."""
        return (f"{TEMPLATE_SOURCE} {self.template}" if self.template is not None
                else f"{ARCHIVE_SOURCE} {self.archive}")

    def to_json(self) -> dict[str, object]:
        """The block as written in the desired state."""
        src: dict[str, object] = ({TEMPLATE_SOURCE: self.template} if self.template is not None
                                  else {ARCHIVE_SOURCE: self.archive})
        out: dict[str, object] = {"from": src, "name": self.name, "storage": self.storage}
        if self.pool is not None:
            out["pool"] = self.pool
        return out

    def params(self, default_pool: str | None = None) -> dict[str, Any]:
        """The flat params of the ``provision`` kind: ``template`` or ``archive``, ``name``,
        ``storage`` and ``pool`` (the block's, else ``default_pool``; left out when neither)."""
        out: dict[str, Any] = {"name": self.name, "storage": self.storage}
        if self.template is not None:
            out[TEMPLATE_SOURCE] = self.template
        else:
            out[ARCHIVE_SOURCE] = self.archive
        pool = self.pool if self.pool is not None else default_pool
        if pool is not None:
            out["pool"] = pool
        return out

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> ProvisionSpec:
        """The inverse of :meth:`params` (the kind's handlers read their job this way)."""
        template = params.get(TEMPLATE_SOURCE)
        archive = params.get(ARCHIVE_SOURCE)
        pool = params.get("pool")
        return cls(name=str(params.get("name", "")), storage=str(params.get("storage", "")),
                   template=template if isinstance(template, int) else None,
                   archive=archive if isinstance(archive, str) else None,
                   pool=pool if isinstance(pool, str) else None)


@attrs.frozen
class SourceRule:
    """One ``provision.allowed_sources`` entry: a template vmid or an archive glob."""

    template: int | None = None
    archive: str | None = None

    def allows(self, spec: ProvisionSpec) -> bool:
        """True when ``spec``'s source is this template, or a volid the glob matches."""
        if self.template is not None:
            return spec.template == self.template
        return (self.archive is not None and spec.archive is not None
                and fnmatch.fnmatchcase(spec.archive, self.archive))


@attrs.frozen
class ProvisionLimits:
    """The local limits on what the unsigned desired state may provision (``provision.*``).

    Attributes:
        vmid_min / vmid_max: the inclusive vmid range.
        max_guests: desired state provisions only while the node holds fewer guests in the
            range (existing ones, plus those queued or planned in this pass).
        allowed: the sources desired state may use.
        pool: the default pool of a new guest.
    """

    vmid_min: int = 1000
    vmid_max: int = 1999
    max_guests: int = 20
    allowed: tuple[SourceRule, ...] = ()
    pool: str | None = None

    def in_range(self, vmid: int) -> bool:
        """``vmid_min <= vmid <= vmid_max``."""
        return self.vmid_min <= vmid <= self.vmid_max

    def range_refusal(self, vmid: int) -> str | None:
        """Why ``vmid`` may not be provisioned (outside the range), or ``None``."""
        if self.in_range(vmid):
            return None
        return (f"provision.vmid_min/vmid_max: vmid {vmid} is outside "
                f"{self.vmid_min}..{self.vmid_max}")

    def source_refusal(self, spec: ProvisionSpec) -> str | None:
        """Why ``spec``'s source may not be used from desired state, or ``None``."""
        if any(rule.allows(spec) for rule in self.allowed):
            return None
        return f"provision.allowed_sources: {spec.source} is not allowed"

    def count_refusal(self, in_range: int) -> str | None:
        """Why one more guest may not be provisioned when ``in_range`` guests are in the range
        already, or ``None``."""
        if in_range < self.max_guests:
            return None
        return (f"provision.max_guests: the node holds {in_range} guest(s) in "
                f"{self.vmid_min}..{self.vmid_max} (limit {self.max_guests})")
