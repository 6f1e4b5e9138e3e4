"""The route table: every endpoint the simulator serves, its parameters and permission.

Parameters are a subset of the official schema's (names, types, required flags and bounds
agree with it; the conformance test checks that against ``api-schema-subset.json``), and
permissions are written in the schema's notation. Parameters a route does not declare get
PVE's 400 ``property is not defined in schema`` -- the simulator is stricter than PVE there,
never looser.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs

from felhom_agent.sim.pve import handlers_clone as hx
from felhom_agent.sim.pve import handlers_guests as hg
from felhom_agent.sim.pve import handlers_lifecycle as hl
from felhom_agent.sim.pve import handlers_node as hn
from felhom_agent.sim.pve import handlers_prune as hp
from felhom_agent.sim.pve import handlers_restore as hr
from felhom_agent.sim.pve import handlers_storage as hs
from felhom_agent.sim.pve import handlers_tasks as ht
from felhom_agent.sim.pve import handlers_vzdump as hv
from felhom_agent.sim.pve.context import Ctx
from felhom_agent.sim.pve.params import Param
from felhom_agent.vmids import VMID_MAX, VMID_MIN

__all__ = ["ROUTES", "Route", "match_route"]

Handler = Callable[[Ctx], Any]


@attrs.frozen
class Route:
    """One served endpoint."""

    method: str
    path: str  # schema template, e.g. /nodes/{node}/qemu/{vmid}/config
    params: tuple[Param, ...]
    permissions: Mapping[str, Any]
    handler: Handler
    regex: re.Pattern[str] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        pattern = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(self.path))
        # a volume id (``local:backup/vzdump-...``) may arrive with its ``/`` unencoded
        pattern = pattern.replace("(?P<volume>[^/]+)", "(?P<volume>.+)")
        object.__setattr__(self, "regex", re.compile(f"^{pattern}$"))


NODE = Param("node", optional=False, pattern=r"[a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?",
             pattern_error="invalid format - value does not look like a valid node name")
VMID = Param("vmid", "integer", optional=False, minimum=VMID_MIN, maximum=VMID_MAX)
SNAPNAME = Param("snapname", optional=False, max_length=40,
                 pattern=r"(?i:[a-z][a-z0-9_\-]+)",
                 pattern_error="invalid format - invalid configuration ID '{value}'")
UPID = Param("upid", optional=False)
STORAGE = Param("storage", optional=False,
                pattern=r"(?i:[a-z][a-z0-9\-_.]*[a-z0-9])",
                pattern_error="invalid format - storage ID '{value}' contains illegal characters")
B = "boolean"
INT = "integer"

USER_ALL: Mapping[str, Any] = {"user": "all"}


def _vm(privs: Sequence[str], anyof: bool = False) -> Mapping[str, Any]:
    check: list[Any] = ["perm", "/vms/{vmid}", list(privs)]
    if anyof:
        check += ["any", 1]
    return {"check": check}


_QEMU_CFG_PRIVS = ["VM.Config.Disk", "VM.Config.CDROM", "VM.Config.CPU", "VM.Config.Memory",
                   "VM.Config.Network", "VM.Config.HWType", "VM.Config.Options",
                   "VM.Config.Cloudinit"]
_LXC_CFG_PRIVS = ["VM.Config.Disk", "VM.Config.CPU", "VM.Config.Memory", "VM.Config.Network",
                  "VM.Config.Options"]

_COMMON_CFG = (
    Param("description", max_length=8192), Param("onboot", B), Param("protection", B),
    Param("startup"), Param("tags"), Param("cores", INT, minimum=1), Param("cpulimit", "number",
                                                                        minimum=0),
    Param("net[n]"), Param("delete"), Param("revert"), Param("digest", max_length=40),
)
_QEMU_CFG = (
    NODE, VMID, *_COMMON_CFG, Param("name"), Param("memory"), Param("balloon", INT, minimum=0),
    Param("sockets", INT, minimum=1), Param("agent"), Param("boot"),
    Param("ostype", enum=("other", "wxp", "w2k", "w2k3", "w2k8", "wvista", "win7", "win8",
                          "win10", "win11", "l24", "l26", "solaris")),
    Param("scsihw", enum=("lsi", "lsi53c810", "virtio-scsi-pci", "virtio-scsi-single",
                          "megasas", "pvscsi")),
    Param("args"), Param("hookscript"), Param("serial[n]", pattern=r"(/dev/.+|socket)"),
    Param("lock", enum=("backup", "clone", "create", "migrate", "rollback", "snapshot",
                        "snapshot-delete", "suspending", "suspended")),
    Param("skiplock", B), Param("force", B),
)
_LXC_OSTYPES = ("debian", "devuan", "ubuntu", "centos", "fedora", "opensuse", "archlinux",
                "alpine", "gentoo", "nixos", "unmanaged")
_LXC_CFG = (
    NODE, VMID, *_COMMON_CFG, Param("hostname", max_length=255), Param("memory", INT, minimum=16),
    Param("swap", INT, minimum=0), Param("nameserver"), Param("searchdomain"), Param("features"),
    Param("hookscript"), Param("dev[n]"), Param("ostype", enum=_LXC_OSTYPES),
)


#: clone: VM.Clone on the source and VM.Allocate on the new id or the pool.
_CLONE_PERM: Mapping[str, Any] = {"check": [
    "and", ["perm", "/vms/{vmid}", ["VM.Clone"]],
    ["or", ["perm", "/vms/{newid}", ["VM.Allocate"]],
     ["perm", "/pool/{pool}", ["VM.Allocate"], "require_param", "pool"]]]}


def _guest_routes(gtype: str) -> list[Route]:
    base = f"/nodes/{{node}}/{gtype}"
    vm = f"{base}/{{vmid}}"
    q = gtype == "qemu"
    start_params: tuple[Param, ...] = (
        (NODE, VMID, Param("skiplock", B), Param("timeout", INT, minimum=0), Param("machine"))
        if q else (NODE, VMID, Param("skiplock", B), Param("debug", B)))
    stop_params: tuple[Param, ...] = (
        (NODE, VMID, Param("skiplock", B), Param("timeout", INT, minimum=0),
         Param("keepActive", B), Param("overrule-shutdown", B))
        if q else (NODE, VMID, Param("skiplock", B), Param("overrule-shutdown", B)))
    shutdown_params: tuple[Param, ...] = (
        (NODE, VMID, Param("skiplock", B), Param("timeout", INT, minimum=0),
         Param("forceStop", B), Param("keepActive", B))
        if q else (NODE, VMID, Param("timeout", INT, minimum=0), Param("forceStop", B)))
    snap_create = (NODE, VMID, SNAPNAME, Param("description"),
                   *((Param("vmstate", B),) if q else ()))
    destroy_params = (NODE, VMID, Param("purge", B), Param("destroy-unreferenced-disks", B),
                      Param("skiplock", B) if q else Param("force", B))
    cfg = _QEMU_CFG if q else _LXC_CFG
    cfg_privs = _QEMU_CFG_PRIVS if q else _LXC_CFG_PRIVS
    audit = _vm(["VM.Audit"])
    routes = [
        Route("GET", base, (NODE, *((Param("full", B),) if q else ())), USER_ALL,
              lambda c: hg.guest_list(c, gtype)),
        Route("GET", f"{vm}/status/current", (NODE, VMID), audit,
              lambda c: hg.status_current(c, gtype)),
        Route("POST", f"{vm}/status/start", start_params, _vm(["VM.PowerMgmt"]),
              lambda c: hg.power(c, gtype, "start")),
        Route("POST", f"{vm}/status/stop", stop_params, _vm(["VM.PowerMgmt"]),
              lambda c: hg.power(c, gtype, "stop")),
        Route("POST", f"{vm}/status/shutdown", shutdown_params, _vm(["VM.PowerMgmt"]),
              lambda c: hg.power(c, gtype, "shutdown")),
        Route("GET", f"{vm}/config", (NODE, VMID, Param("current", B),
                                      Param("snapshot", pattern=r"(?i:[a-z][a-z0-9_\-]+)")),
              audit, lambda c: hg.config_get(c, gtype)),
        Route("PUT", f"{vm}/config", cfg, _vm(cfg_privs, anyof=True),
              lambda c: hg.config_put(c, gtype)),
        Route("GET", f"{vm}/snapshot", (NODE, VMID), audit, lambda c: hl.snapshot_list(c, gtype)),
        Route("POST", f"{vm}/snapshot", snap_create, _vm(["VM.Snapshot"]),
              lambda c: hl.snapshot_create(c, gtype)),
        Route("POST", f"{vm}/snapshot/{{snapname}}/rollback",
              (NODE, VMID, SNAPNAME, Param("start", B)),
              _vm(["VM.Snapshot", "VM.Snapshot.Rollback"], anyof=True),
              lambda c: hl.snapshot_rollback(c, gtype)),
        Route("DELETE", f"{vm}/snapshot/{{snapname}}", (NODE, VMID, SNAPNAME, Param("force", B)),
              _vm(["VM.Snapshot"]), lambda c: hl.snapshot_delete(c, gtype)),
        Route("GET", f"{vm}/snapshot/{{snapname}}", (NODE, VMID, SNAPNAME), USER_ALL,
              lambda c: [{"cmd": "rollback"}, {"cmd": "config"}]),
        Route("DELETE", vm, destroy_params, _vm(["VM.Allocate"]), lambda c: hl.destroy(c, gtype)),
        Route("GET", vm, (NODE, VMID), USER_ALL,
              lambda c: [{"subdir": s} for s in ("config", "status", "snapshot")]),
    ]
    if q:
        routes.append(Route("POST", f"{vm}/config",
                            (*cfg, Param("background_delay", INT, minimum=1, maximum=30)),
                            _vm(cfg_privs, anyof=True), hg.config_post_qemu))
    clone_params = (
        NODE, VMID, Param("newid", INT, optional=False, minimum=VMID_MIN, maximum=VMID_MAX),
        Param("name" if q else "hostname"), Param("description"), Param("full", B),
        Param("storage"), Param("pool"), Param("snapname", max_length=40), Param("target"),
        Param("bwlimit", INT if q else "number", minimum=0),
        *((Param("format", enum=("raw", "qcow2", "vmdk")),) if q else ()),
    )
    routes += [
        Route("POST", f"{vm}/clone", clone_params, _CLONE_PERM, lambda c: hx.clone(c, gtype)),
        Route("POST", f"{vm}/template", (NODE, VMID), _vm(["VM.Allocate"]),
              lambda c: hx.template(c, gtype)),
    ]
    return routes


_LXC_CREATE = (
    NODE, VMID, Param("ostemplate", optional=False, max_length=255), Param("rootfs"),
    Param("storage"), Param("hostname", max_length=255), Param("memory", INT, minimum=16),
    Param("swap", INT, minimum=0), Param("cores", INT, minimum=1), Param("cpulimit", "number",
                                                                      minimum=0),
    Param("net[n]"), Param("unprivileged", B), Param("features"), Param("password"),
    Param("ssh-public-keys"), Param("start", B), Param("pool"), Param("onboot", B),
    Param("description", max_length=8192), Param("tags"), Param("ostype", enum=_LXC_OSTYPES),
    Param("arch", enum=("amd64", "i386", "arm64", "armhf", "riscv32", "riscv64")),
    Param("nameserver"), Param("searchdomain"), Param("protection", B), Param("startup"),
    Param("restore", B), Param("force", B), Param("unique", B, requires="restore"),
    Param("bwlimit", "number", minimum=0), Param("ignore-unpack-errors", B),
)
_QEMU_CREATE = (
    NODE, VMID, Param("name"), Param("memory"), Param("balloon", INT, minimum=0),
    Param("cores", INT, minimum=1), Param("sockets", INT, minimum=1),
    Param("cpulimit", "number", minimum=0, maximum=128), Param("onboot", B),
    Param("description", max_length=8192), Param("tags"), Param("agent"), Param("boot"),
    Param("ostype", enum=("other", "wxp", "w2k", "w2k3", "w2k8", "wvista", "win7", "win8",
                          "win10", "win11", "l24", "l26", "solaris")),
    Param("scsihw", enum=("lsi", "lsi53c810", "virtio-scsi-pci", "virtio-scsi-single",
                          "megasas", "pvscsi")),
    Param("protection", B), Param("startup"), Param("net[n]"), Param("scsi[n]"),
    Param("start", B), Param("pool"), Param("archive", max_length=255), Param("storage"),
    Param("force", B, requires="archive"), Param("unique", B, requires="archive"),
    Param("bwlimit", INT, minimum=0),
)
_VZDUMP = (
    Param("node"), Param("vmid"), Param("all", B), Param("storage"),
    Param("mode", enum=("snapshot", "suspend", "stop")),
    Param("compress", enum=("0", "1", "gzip", "lzo", "zstd")), Param("remove", B),
    Param("notes-template", max_length=1024), Param("protected", B), Param("prune-backups"),
    Param("lockwait", INT, minimum=0), Param("tmpdir"), Param("dumpdir"), Param("script"),
    Param("job-id", max_length=50),
)
STORAGE_OPT = attrs.evolve(STORAGE, optional=True)
VOLUME = Param("volume", optional=False)
_PRUNE = (NODE, STORAGE, Param("prune-backups"), Param("type", enum=("qemu", "lxc")),
          Param("vmid", INT, minimum=VMID_MIN, maximum=VMID_MAX))
_STORAGE_TYPES = ("btrfs", "cephfs", "cifs", "dir", "esxi", "iscsi", "iscsidirect", "lvm",
                  "lvmthin", "nfs", "pbs", "rbd", "zfs", "zfspool")
_CONTENT = "/nodes/{node}/storage/{storage}/content"
_TASKS = (
    NODE, Param("start", INT, minimum=0), Param("limit", INT, minimum=0),
    Param("vmid", INT, minimum=VMID_MIN, maximum=VMID_MAX), Param("typefilter"),
    Param("userfilter"), Param("errors", B), Param("source", enum=("archive", "active", "all")),
    Param("statusfilter"), Param("since", INT), Param("until", INT),
)
_STORE_ANY = {"check": ["perm", "/storage/{storage}", ["Datastore.Audit",
                                                        "Datastore.AllocateSpace"], "any", 1]}

ROUTES: tuple[Route, ...] = (
    Route("GET", "/version", (), USER_ALL, hn.version),
    Route("GET", "/nodes", (), USER_ALL, hn.nodes),
    Route("GET", "/nodes/{node}/status", (NODE,),
          {"check": ["perm", "/nodes/{node}", ["Sys.Audit"]]}, hn.node_status),
    Route("GET", "/cluster/resources", (Param("type", enum=("vm", "storage", "node", "sdn")),),
          USER_ALL, hn.cluster_resources),
    *_guest_routes("qemu"),
    *_guest_routes("lxc"),
    Route("POST", "/nodes/{node}/lxc", _LXC_CREATE, USER_ALL, hr.lxc_post),
    Route("POST", "/nodes/{node}/qemu", _QEMU_CREATE, USER_ALL, hr.qemu_post),
    Route("GET", "/cluster/nextid", (Param("vmid", INT, minimum=VMID_MIN, maximum=VMID_MAX),),
          USER_ALL, hx.nextid),
    Route("POST", "/nodes/{node}/vzdump", _VZDUMP, USER_ALL, hv.vzdump),
    Route("GET", "/nodes/{node}/vzdump/extractconfig", (NODE, VOLUME), USER_ALL,
          hv.extractconfig),
    Route("GET", "/nodes/{node}/storage",
          (NODE, Param("content"), Param("enabled", B), Param("format", B), Param("storage"),
           Param("target")), USER_ALL, hs.storage_list),
    Route("GET", "/nodes/{node}/storage/{storage}/status", (NODE, STORAGE), _STORE_ANY,
          hs.storage_status),
    Route("GET", _CONTENT,
          (NODE, STORAGE, Param("content"), Param("vmid", INT, minimum=VMID_MIN, maximum=VMID_MAX)),
          _STORE_ANY, hs.content_list),
    Route("GET", _CONTENT + "/{volume}", (NODE, STORAGE_OPT, VOLUME), USER_ALL,
          hs.content_get),
    Route("PUT", _CONTENT + "/{volume}",
          (NODE, STORAGE_OPT, VOLUME, Param("notes"), Param("protected", B)), USER_ALL,
          hs.content_put),
    Route("DELETE", _CONTENT + "/{volume}",
          (NODE, STORAGE_OPT, VOLUME, Param("delay", INT, minimum=1, maximum=30)), USER_ALL,
          hp.content_delete),
    Route("GET", "/nodes/{node}/storage/{storage}/prunebackups", _PRUNE, _STORE_ANY,
          hp.prune_dry_run),
    Route("DELETE", "/nodes/{node}/storage/{storage}/prunebackups", _PRUNE, USER_ALL,
          hp.prune_run),
    Route("GET", "/storage", (Param("type", enum=_STORAGE_TYPES),), USER_ALL,
          hs.storage_config_list),
    Route("POST", "/storage",
          (STORAGE, Param("type", optional=False, enum=_STORAGE_TYPES), Param("path"),
           Param("content"), Param("is_mountpoint"), Param("nodes"), Param("prune-backups"),
           Param("mkdir", B), Param("create-base-path", B), Param("create-subdirs", B),
           Param("shared", B), Param("disable", B)),
          {"check": ["perm", "/storage", ["Datastore.Allocate"]]}, hs.storage_create),
    Route("DELETE", "/storage/{storage}", (STORAGE,),
          {"check": ["perm", "/storage", ["Datastore.Allocate"]]}, hs.storage_delete),
    Route("GET", "/storage/{storage}", (STORAGE,),
          {"check": ["perm", "/storage/{storage}", ["Datastore.Allocate"]]},
          hs.storage_config_get),
    Route("GET", "/nodes/{node}/disks/list",
          (NODE, Param("skipsmart", B), Param("include-partitions", B),
           Param("type", enum=("unused", "journal_disks"))),
          {"check": ["or", ["perm", "/", ["Sys.Audit"]], ["perm", "/nodes/{node}", ["Sys.Audit"]]]},
          hn.disks_list),
    Route("GET", "/nodes/{node}/disks/smart",
          (NODE, Param("disk", optional=False), Param("healthonly", B)),
          {"check": ["perm", "/", ["Sys.Audit"]]}, hn.disks_smart),
    Route("GET", "/nodes/{node}/tasks", _TASKS, USER_ALL, ht.task_list),
    Route("GET", "/nodes/{node}/tasks/{upid}/status", (NODE, UPID), USER_ALL, ht.task_status),
    Route("GET", "/nodes/{node}/tasks/{upid}/log",
          (NODE, UPID, Param("start", INT, minimum=0), Param("limit", INT, minimum=0)),
          USER_ALL, ht.task_log),
    Route("GET", "/nodes/{node}/tasks/{upid}", (NODE, UPID), USER_ALL, ht.task_index),
    Route("DELETE", "/nodes/{node}/tasks/{upid}", (NODE, UPID), USER_ALL, ht.task_delete),
    Route("GET", "/access/permissions",
          (Param("path"), Param("userid")), USER_ALL, hn.access_permissions),
)


def match_route(method: str, path: str) -> tuple[Route | None, dict[str, str], bool]:
    """Find the route for ``method path``: (route, path args, whether the path exists)."""
    path_known = False
    for route in ROUTES:
        m = route.regex.match(path)
        if m is None:
            continue
        path_known = True
        if route.method == method:
            return route, m.groupdict(), True
    return None, {}, path_known
