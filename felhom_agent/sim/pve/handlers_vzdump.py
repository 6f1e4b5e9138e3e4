"""``POST /nodes/{node}/vzdump`` and ``GET /nodes/{node}/vzdump/extractconfig``.

Before forking, vzdump checks its parameters (root-only options, ``all`` vs ``vmid``, the
``prune-backups`` string -- which also needs Datastore.Allocate on the storage -- and the
notes template), answers the plain string ``"OK"`` -- not a UPID -- when every selected guest
lives on another node, and requires Datastore.AllocateSpace on the storage. Everything else
(storage problems, VM.Backup, locks, space) happens inside the task
(:mod:`felhom_agent.sim.pve.backup_job`). The task id is the vmid for exactly one local guest,
else empty. ``maxfiles``, ``mailto`` and ``mailnotification`` are not accepted (gone from PVE).
"""

from __future__ import annotations

import re

from felhom_agent.sim.pve.apierror import param_error, server_error
from felhom_agent.sim.pve.backup_job import DEFAULT_LOCKWAIT_MIN, VzdumpJob
from felhom_agent.sim.pve.context import Ctx
from felhom_agent.sim.pve.handlers_storage import backup_access_error, find_volume
from felhom_agent.sim.pve.prune import parse_keep
from felhom_agent.sim.pve.tasks import TaskPlan

__all__ = ["extractconfig", "verify_notes_template", "vzdump"]

_VMID_LIST_RE = re.compile(r"^[1-9][0-9]{2,8}$")


def verify_notes_template(template: str) -> str | None:
    """PVE's notes-template check: None when valid, else the 400 text."""
    if "\n" in template:
        return "contains a line feed"
    problems = [f"escape sequence '\\{m[1]}' at char {m.start()}"
                for m in re.finditer(r"\\(.)", template) if m[1] not in ("n", "\\")]
    problems += [f"variable '{m[1]}' at char {m.start(1)}"
                 for m in re.finditer(r"\{\{([^\s{}]+)\}\}", template)
                 if m[1] not in ("cluster", "guestname", "node", "vmid")]
    return "found unknown: " + ", ".join(problems) if problems else None


def _vmids(ctx: Ctx) -> list[int]:
    raw = str(ctx.params.get("vmid", ""))
    out: set[int] = set()
    for part in (p.strip() for p in re.split(r"[,;\s]+", raw)):
        if not part:
            continue
        if not _VMID_LIST_RE.match(part):
            raise param_error({"vmid": f"invalid format - value does not look like a valid "
                                       f"VM ID '{part}'"})
        out.add(int(part))
    return sorted(out)


def _check_params(ctx: Ctx) -> dict[str, int] | None:
    p = ctx.params
    for key in ("tmpdir", "dumpdir", "script", "job-id"):
        if key in p:
            raise param_error({key: "Only root may set this option."})
    for key in ("notes-template", "protected"):
        if key in p and "storage" not in p:
            raise param_error({"storage": f"missing property - '{key}' requires this "
                                          "property"})
    if int(p.get("all", 0)) and "vmid" in p:
        raise param_error({"all": "option conflicts with option 'vmid'"})
    keep = None
    if "prune-backups" in p:
        ctx.require(f"/storage/{p.get('storage', 'local')}", "Datastore.Allocate")
        try:
            keep = parse_keep(str(p["prune-backups"]))
        except ValueError as err:
            raise param_error({"prune-backups": str(err)}) from None
    template = p.get("notes-template")
    if template is not None:
        problem = verify_notes_template(str(template))
        if problem is not None:
            raise param_error({"notes-template": problem})
    if not int(p.get("all", 0)) and not _vmids(ctx):
        raise param_error({"vmid": "property is missing"})
    return keep


def vzdump(ctx: Ctx) -> str:
    """POST /nodes/{node}/vzdump: a ``vzdump`` task, or ``"OK"`` with nothing local."""
    rt = ctx.rt
    keep_param = _check_params(ctx)
    storage = str(ctx.params.get("storage", "local"))
    with rt.state.cond:
        if int(ctx.params.get("all", 0)):
            local = sorted(rt.state.guests)
            skip = sorted(rt.state.other_node_guests)
        else:
            wanted = _vmids(ctx)
            local = [v for v in wanted if v not in rt.state.other_node_guests]
            skip = [v for v in wanted if v in rt.state.other_node_guests]
            if not local:
                return "OK"
        ctx.require(f"/storage/{storage}", "Datastore.AllocateSpace")
        st = rt.state.storages.get(storage)
        keep = keep_param
        if keep is None and st is not None and "prune-backups" in st.spec.config:
            keep = parse_keep(str(st.spec.config["prune-backups"]))
        keep = keep or {"keep-all": 1}
        remove = bool(int(ctx.params.get("remove", 1))) and not keep.get("keep-all")
    job = VzdumpJob(rt=rt, principal=ctx.principal, storage=storage, vmids=local,
                    skiplist=skip, select_all=bool(int(ctx.params.get("all", 0))),
                    params=dict(ctx.params), keep=keep, remove=remove,
                    lockwait_min=int(ctx.params.get("lockwait", 0)) or DEFAULT_LOCKWAIT_MIN)
    single = local[0] if len(local) == 1 else None
    plan = TaskPlan(type="vzdump", vmid=single, id="" if single is None else str(single),
                    worker=job.run)
    return rt.fork(plan, ctx.principal.token_id)


def extractconfig(ctx: Ctx) -> str:
    """GET /nodes/{node}/vzdump/extractconfig?volume=: the guest config inside the backup."""
    with ctx.rt.state.cond:
        st, volid = find_volume(ctx)
        backup = st.find(volid)
        if backup is None:
            raise server_error(f"unable to parse volume filename '{volid.split(':', 1)[-1]}'"
                               if ":backup/" not in volid else
                               f"volume '{volid}' does not exist")
        err = backup_access_error(ctx, st, backup)
        if err is not None:
            raise err
        if backup.vmid is not None:
            ctx.require(f"/vms/{backup.vmid}", "VM.Backup")
        return backup.config
