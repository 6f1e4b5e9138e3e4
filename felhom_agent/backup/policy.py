"""A guest's backup policy against the host's storages: the checks that need the host.

The desired-state parser checks a policy's syntax; whether its storage exists on this node
and holds backups can only be decided against the node's storage listing, per guest, so a
policy that names a wrong storage is reported for its guest instead of rejecting everyone's
desired state. A storage that exists but cannot be used right now (disabled, not active) is
*unavailable*: the policy is fine, the backup cannot run.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Literal

import attrs

from felhom_agent.core.backup_policy import BackupPolicy
from felhom_agent.proxmox.models import StorageInfo

__all__ = ["PolicyCheck", "check_policy", "check_storage"]


@attrs.frozen
class PolicyCheck:
    """Whether a policy can be carried out on this node.

    Attributes:
        ok: ``True``: its storage exists, holds backups and is usable.
        problem: ``None`` when ok; ``invalid`` when the policy itself is wrong for this host
            (unknown storage, a storage without backup content); ``unavailable`` when the
            storage is right but cannot be used now (disabled, not active).
        storage: the storage as listed, when it was found.
        reason: what is wrong and how to fix it (empty when ok).
    """

    ok: bool
    problem: Literal["invalid", "unavailable"] | None
    storage: StorageInfo | None
    reason: str


def _index(storages: Mapping[str, StorageInfo] | Iterable[StorageInfo]
           ) -> dict[str, StorageInfo]:
    if isinstance(storages, Mapping):
        return dict(storages)
    return {s.storage: s for s in storages}


def check_storage(storage: str, storages: Mapping[str, StorageInfo] | Iterable[StorageInfo],
                  *, what: str = "backup storage") -> PolicyCheck:
    """Check that ``storage`` is a usable backup storage of this node.

    Args:
        storage: the storage id named by a policy (or ``backup.safety_storage``).
        storages: the node's storage listing (or a mapping id → storage).
        what: how the storage is named in reasons.
    """
    known = _index(storages)
    facts = known.get(storage)
    if facts is None:
        names = ", ".join(sorted(known)) or "none"
        return PolicyCheck(False, "invalid", None,
                           f"{what} {storage} does not exist on this node (storages: {names}); "
                           "a storage the agent's token may not audit (Datastore.Audit) is "
                           "not listed either")
    if not facts.holds_backups:
        content = ", ".join(sorted(facts.content)) or "nothing"
        return PolicyCheck(False, "invalid", facts,
                           f"{what} {storage} does not hold backups (content: {content}); "
                           "add backup to its content types or choose another storage")
    if not facts.enabled:
        return PolicyCheck(False, "unavailable", facts,
                           f"{what} {storage} is disabled in the storage configuration")
    if not facts.active:
        return PolicyCheck(False, "unavailable", facts,
                           f"{what} {storage} is not active (PVE cannot reach or mount it)")
    return PolicyCheck(True, None, facts, "")


def check_policy(policy: BackupPolicy,
                 storages: Mapping[str, StorageInfo] | Iterable[StorageInfo]) -> PolicyCheck:
    """Check a guest's policy against the node's storages (see :func:`check_storage`)."""
    return check_storage(policy.storage, storages)
