"""Privileges, ACL paths and the privsep intersection rule.

PVE grants privileges on ACL paths (``/``, ``/vms/100``, ``/storage/local``, ``/nodes/pve1``)
and they propagate down the tree. The simulator models one ACL entry set per user and one
per token: the privileges effective on a path are those of the *most specific* ACL path that
is an ancestor of (or equal to) it, which is how a deeper ACL overrides an inherited one in
``PVE::RPCEnvironment``. For a privilege-separated token (``privsep`` 1, PVE's default) the
effective set is the **intersection** of the user's and the token's sets; with ``privsep`` 0
the token has exactly the user's privileges. ``root@pam`` implicitly holds every privilege.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

import attrs

__all__ = [
    "ALL_PRIVILEGES",
    "ROLES",
    "TOKEN_ID_RE",
    "Grants",
    "Principal",
    "expand_privileges",
]

#: PVE 9 privileges (AccessControl.pm $privgroups plus Permissions.Modify; no VM.Monitor).
_PRIVILEGE_TEXT = """
    VM.Allocate VM.Audit VM.Backup VM.Clone VM.Config.CDROM VM.Config.CPU VM.Config.Cloudinit
    VM.Config.Disk VM.Config.HWType VM.Config.Memory VM.Config.Network VM.Config.Options
    VM.Console VM.GuestAgent.Audit VM.GuestAgent.FileRead VM.GuestAgent.FileSystemMgmt
    VM.GuestAgent.FileWrite VM.GuestAgent.Unrestricted VM.Migrate VM.PowerMgmt VM.Replicate
    VM.Snapshot VM.Snapshot.Rollback
    Sys.Audit Sys.Console Sys.Incoming Sys.Modify Sys.PowerMgmt Sys.Syslog Sys.AccessNetwork
    Datastore.Allocate Datastore.AllocateSpace Datastore.AllocateTemplate Datastore.Audit
    SDN.Allocate SDN.Audit SDN.Use
    Realm.Allocate Realm.AllocateUser User.Modify Group.Allocate
    Pool.Allocate Pool.Audit
    Mapping.Audit Mapping.Modify Mapping.Use
    Permissions.Modify
"""
ALL_PRIVILEGES: frozenset[str] = frozenset(_PRIVILEGE_TEXT.split())

#: A few built-in roles, usable in scenarios instead of listing privileges one by one.
ROLES: Mapping[str, frozenset[str]] = {
    "Administrator": ALL_PRIVILEGES,
    "NoAccess": frozenset(),
    "PVEAuditor": frozenset(
        {"VM.Audit", "Sys.Audit", "Datastore.Audit", "Pool.Audit", "SDN.Audit", "Mapping.Audit"}
    ),
    "PVEDatastoreUser": frozenset({"Datastore.AllocateSpace", "Datastore.Audit"}),
    "PVEDatastoreAdmin": frozenset({"Datastore.Allocate", "Datastore.AllocateSpace",
                                    "Datastore.AllocateTemplate", "Datastore.Audit"}),
    "PVEVMUser": frozenset(
        {"VM.Audit", "VM.Console", "VM.PowerMgmt", "VM.Backup", "VM.Config.CDROM",
         "VM.Config.Cloudinit", "Datastore.AllocateSpace", "Pool.Audit", "VM.GuestAgent.Audit"}
    ),
}

#: ``user@realm!tokenname`` per AccessControl.pm ($token_full_regex, $realm_regex).
TOKEN_ID_RE = re.compile(
    r"^(?P<user>[^\s:/]+@[A-Za-z][A-Za-z0-9.\-_]+)!(?P<name>[A-Za-z][A-Za-z0-9.\-_]+)$"
)


def expand_privileges(names: Iterable[str]) -> frozenset[str]:
    """Expand role names to their privileges; raise ``KeyError`` naming an unknown entry."""
    out: set[str] = set()
    for name in names:
        if name in ROLES:
            out |= ROLES[name]
        elif name in ALL_PRIVILEGES:
            out.add(name)
        else:
            raise KeyError(name)
    return frozenset(out)


def _ancestors(path: str) -> list[str]:
    """``/vms/100`` -> ``['/vms/100', '/vms', '/']`` (most specific first)."""
    parts = [p for p in path.split("/") if p]
    out = ["/" + "/".join(parts[:i]) for i in range(len(parts), 0, -1)]
    out.append("/")
    return out


@attrs.frozen
class Grants:
    """ACL entries of one subject: ACL path -> privileges granted there (propagating)."""

    by_path: Mapping[str, frozenset[str]] = attrs.field(factory=dict)

    def on(self, path: str) -> frozenset[str]:
        """Privileges effective on ``path``: those of its most specific ACL ancestor."""
        for candidate in _ancestors(path):
            if candidate in self.by_path:
                return self.by_path[candidate]
        return frozenset()


@attrs.frozen
class Principal:
    """An authenticated API token and the grants that decide its privileges."""

    token_id: str
    privsep: bool
    user_grants: Grants
    token_grants: Grants

    @property
    def user(self) -> str:
        """The owning user (``felhom@pve`` for ``felhom@pve!agent``)."""
        return self.token_id.split("!", 1)[0]

    def privileges_on(self, path: str) -> frozenset[str]:
        """Effective privileges on ``path`` after the privsep intersection rule."""
        user_privs = ALL_PRIVILEGES if self.user == "root@pam" else self.user_grants.on(path)
        if not self.privsep:
            return user_privs
        return user_privs & self.token_grants.on(path)

    def has(self, path: str, privilege: str) -> bool:
        """Whether ``privilege`` is effective on ``path``."""
        return privilege in self.privileges_on(path)

    def acl_paths(self) -> set[str]:
        """Every ACL path mentioned by the user's or the token's grants."""
        return set(self.user_grants.by_path) | set(self.token_grants.by_path)
