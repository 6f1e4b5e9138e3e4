"""Read-only health checks behind ``--selftest=read``: pure functions over a client.

:func:`read_checks` runs, in order: API reachable, TLS pin (or CA) OK, token valid, effective
permissions, node status, guest listing, task listing -- one :class:`Check` each, and never
mutates anything. When an early check fails, the later ones are reported as skipped (failed)
rather than producing a cascade of confusing errors. The CLI formats the list (text or JSON).

:data:`REQUIRED_PRIVILEGES` is what the agent needs for its current scope (``docs/pve-facts.md``,
"Privileges"):

* ``/vms``: VM.Audit (list, status, config, snapshots), VM.PowerMgmt (start/stop/shutdown),
  VM.Snapshot (snapshots, rollback, the reversibility gate), VM.Config.Options (the benign
  config keys: description, tags, onboot, startup);
* ``/nodes/{node}``: Sys.Audit (node status, other runs' tasks in the task list, disks);
* ``/storage``: Datastore.Audit (storage status and content);
* backups: VM.Backup on ``/vms`` and Datastore.AllocateSpace on ``/storage``. PVE filters a
  storage's content listing by both: without them the listing is silently empty, which the
  agent would otherwise read as "no backups" (``docs/pve-facts.md``, "Backups").

:data:`OPTIONAL_PRIVILEGES` are needed only by some operations (signed ``guest.destroy`` and
provisioning: VM.Allocate; provisioning from a template: VM.Clone; qemu ``startup`` and,
depending on datacenter ``user-tag-access``, ``tags``: Sys.Modify on ``/``) and are reported
but do not fail the check.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import attrs

from felhom_agent.proxmox.client import ProxmoxClient
from felhom_agent.proxmox.errors import (
    PRIVSEP_HINT,
    AuthError,
    PinMismatch,
    PveError,
    TlsError,
    TransportError,
)

__all__ = [
    "OPTIONAL_PRIVILEGES",
    "REQUIRED_PRIVILEGES",
    "Check",
    "RequiredPrivilege",
    "missing_privileges",
    "read_checks",
]


@attrs.frozen
class Check:
    """One selftest line: a stable ``name``, whether it passed, and a human ``detail``."""

    name: str
    ok: bool
    detail: str


@attrs.frozen
class RequiredPrivilege:
    """A privilege the agent needs on an ACL path (``{node}`` is replaced by our node)."""

    path: str
    privilege: str
    needed_for: str

    def path_for(self, node: str) -> str:
        """The concrete ACL path on ``node``."""
        return self.path.replace("{node}", node)


REQUIRED_PRIVILEGES: tuple[RequiredPrivilege, ...] = (
    RequiredPrivilege("/vms", "VM.Audit", "list guests, read status, config and snapshots"),
    RequiredPrivilege("/vms", "VM.PowerMgmt", "start, stop and shut down guests"),
    RequiredPrivilege("/vms", "VM.Snapshot", "create, roll back and delete snapshots"),
    RequiredPrivilege("/vms", "VM.Config.Options", "write description, tags, onboot, startup"),
    RequiredPrivilege("/nodes/{node}", "Sys.Audit", "node status, task list, disks"),
    RequiredPrivilege("/storage", "Datastore.Audit", "storage status and content"),
    RequiredPrivilege("/vms", "VM.Backup", "back up guests; without it PVE also hides their "
                      "backups from the content listing"),
    RequiredPrivilege("/storage", "Datastore.AllocateSpace", "write backups (and, with "
                      "VM.Backup, see them in the content listing)"),
)

OPTIONAL_PRIVILEGES: tuple[RequiredPrivilege, ...] = (
    RequiredPrivilege("/vms", "VM.Allocate", "signed guest.destroy; provisioning (new vmids) "
                      "and the golden image's template conversion"),
    RequiredPrivilege("/vms", "VM.Clone", "provisioning from a template"),
    RequiredPrivilege("/", "Sys.Modify", "qemu startup order and some tag changes"),
    RequiredPrivilege("/storage", "Datastore.Allocate", "see and prune every backup on a "
                      "storage, including those of guests the token may not back up; add and "
                      "remove a USB disk's storage (signed host.mount_usb/unmount_usb)"),
)


def missing_privileges(
    client: ProxmoxClient, required: Iterable[RequiredPrivilege]
) -> list[tuple[str, RequiredPrivilege]]:
    """Return ``(acl_path, requirement)`` for every requirement the token lacks.

    Asks PVE per path (``GET /access/permissions?path=...``), so the answer is PVE's own
    evaluation, including the privsep intersection and ACL propagation.

    Raises:
        PveError: the permissions could not be read.
    """
    by_path: dict[str, frozenset[str]] = {}
    missing: list[tuple[str, RequiredPrivilege]] = []
    for req in required:
        path = req.path_for(client.node)
        if path not in by_path:
            by_path[path] = client.permissions(path).privileges_at(path)
        if req.privilege not in by_path[path]:
            missing.append((path, req))
    return missing


def _skipped(names: Iterable[str], because: str) -> list[Check]:
    return [Check(name, False, f"skipped: {because} failed") for name in names]


def _run(name: str, fn: Callable[[], str]) -> Check:
    try:
        return Check(name, True, fn())
    except PveError as err:
        return Check(name, False, str(err))


def read_checks(
    client: ProxmoxClient, required_privs: Iterable[RequiredPrivilege] = REQUIRED_PRIVILEGES
) -> list[Check]:
    """Run the read-only checks against ``client``; never raises for an API failure."""
    tls_name = "tls-pin" if client.pinned else "tls-ca"
    later = ["permissions", "node", "guests", "tasks"]
    try:
        version = client.version()
    except PinMismatch as err:
        return [
            Check("api-reachable", True, "TLS handshake completed"),
            Check(tls_name, False, str(err)),
            *_skipped(["token", *later], tls_name),
        ]
    except TlsError as err:
        return [
            Check("api-reachable", True, "TCP connection established"),
            Check(tls_name, False, str(err)),
            *_skipped(["token", *later], tls_name),
        ]
    except TransportError as err:
        return [
            Check("api-reachable", False, str(err)),
            *_skipped([tls_name, "token", *later], "api-reachable"),
        ]
    except AuthError as err:
        return [
            Check("api-reachable", True, "HTTPS answered"),
            Check(tls_name, True, _tls_detail(client)),
            Check("token", False, str(err)),
            *_skipped(later, "token"),
        ]
    except PveError as err:
        return [
            Check("api-reachable", False, f"unexpected answer: {err}"),
            *_skipped([tls_name, "token", *later], "api-reachable"),
        ]
    checks = [
        Check("api-reachable", True, f"PVE {version.version} (release {version.release})"),
        Check(tls_name, True, _tls_detail(client)),
        Check("token", True, f"{client.token_id} accepted"),
        _permissions_check(client, required_privs),
        _run("node", lambda: _node_detail(client)),
        _run("guests", lambda: _guests_detail(client)),
        _run("tasks", lambda: _tasks_detail(client)),
    ]
    return checks


def _tls_detail(client: ProxmoxClient) -> str:
    return (
        "leaf certificate matches the pinned fingerprint"
        if client.pinned
        else ("certificate verified against the CA file")
    )


def _permissions_check(client: ProxmoxClient, required: Iterable[RequiredPrivilege]) -> Check:
    try:
        missing = missing_privileges(client, required)
        optional = missing_privileges(client, OPTIONAL_PRIVILEGES)
    except PveError as err:
        return Check("permissions", False, f"cannot read effective permissions: {err}")
    if missing:
        names = ", ".join(f"{req.privilege} on {path} ({req.needed_for})" for path, req in missing)
        return Check("permissions", False, f"missing {names}; {PRIVSEP_HINT}")
    detail = "all required privileges granted"
    if optional:
        names = ", ".join(f"{req.privilege} on {path}" for path, req in optional)
        detail += f" (optional, not granted: {names})"
    return Check("permissions", True, detail)


def _node_detail(client: ProxmoxClient) -> str:
    st = client.node_status()
    return f"{st.node}: pve-manager {st.pveversion or '?'}, up {st.uptime_s} s"


def _guests_detail(client: ProxmoxClient) -> str:
    guests = client.guests()
    qemu = sum(1 for g in guests if g.type == "qemu")
    return f"{len(guests)} guests on {client.node} ({qemu} qemu, {len(guests) - qemu} lxc)"


def _tasks_detail(client: ProxmoxClient) -> str:
    listing = client.tasks(source="all", limit=1)
    return f"task list readable ({listing.total} tasks)"
