"""Storage handlers: status lists, storage.cfg, the content listing and one volume's details.

Visibility follows PVE: storages are listed only with Datastore.Audit or
Datastore.AllocateSpace on ``/storage/<id>``; in the content listing every item is then
checked like ``check_volume_access`` and **silently omitted** when the check fails (a backup
needs Datastore.Allocate on the storage, or Datastore.AllocateSpace there plus VM.Backup on
``/vms/<owner>``). An inactive storage reports zeros with ``active: 0``; listing its content
fails the way an activation failure does.
"""

from __future__ import annotations

import hashlib
from typing import Any

from felhom_agent.sim.pve.apierror import ApiError, param_error, perm_error, server_error
from felhom_agent.sim.pve.context import Ctx
from felhom_agent.sim.pve.privileges import Principal
from felhom_agent.sim.pve.scenario_storage import StorageSpec
from felhom_agent.sim.pve.storage import Backup, SimStorage

__all__ = [
    "backup_access_error", "content_get", "content_list", "content_put", "find_volume",
    "max_protected_for", "require_online",
    "storage_config_get", "storage_config_list", "storage_create", "storage_delete",
    "storage_list", "storage_status", "storage_visible",
]

#: storage.cfg keys ``POST /storage`` accepts and keeps (beside storage, type, content).
CREATE_KEYS = ("path", "is_mountpoint", "nodes", "prune-backups", "mkdir",
               "create-base-path", "create-subdirs", "shared", "disable")
#: The capacity a storage added at run time reports (the file system under it is not
#: modelled): 1 TiB, empty.
NEW_STORAGE_TOTAL = 2**40


def storage_visible(ctx: Ctx, storage: str) -> bool:
    """Whether the caller may see ``storage`` in lists (Audit or AllocateSpace)."""
    path = f"/storage/{storage}"
    return ctx.has(path, "Datastore.Audit") or ctx.has(path, "Datastore.AllocateSpace")


def _on_node(ctx: Ctx, st: SimStorage) -> bool:
    nodes = st.spec.config.get("nodes")
    return nodes is None or ctx.rt.node in str(nodes).split(",")


def storage_list(ctx: Ctx) -> list[dict[str, Any]]:
    """GET /nodes/{node}/storage (``content``, ``enabled``, ``storage`` filters); a storage
    whose ``nodes`` leave our node out is not listed."""
    want = {c for c in (ctx.str_param("content") or "").split(",") if c}
    only = ctx.str_param("storage")
    enabled_only = bool(ctx.int_param("enabled", 0))
    with ctx.rt.state.cond:
        out = []
        for name, st in sorted(ctx.rt.state.storages.items()):
            if only is not None and name != only:
                continue
            if want and not want & set(st.spec.content.split(",")):
                continue
            if enabled_only and not st.spec.enabled:
                continue
            if storage_visible(ctx, name) and _on_node(ctx, st):
                out.append(st.status_entry())
        return out


def _storage(ctx: Ctx) -> SimStorage:
    name = str(ctx.params["storage"])
    st = ctx.rt.state.storages.get(name)
    if st is None:
        raise param_error({"storage": "No such storage."})
    return st


def storage_status(ctx: Ctx) -> dict[str, Any]:
    """GET /nodes/{node}/storage/{storage}/status."""
    with ctx.rt.state.cond:
        e = _storage(ctx).status_entry()
    del e["storage"]
    e.pop("used_fraction", None)
    return e


def _digest(ctx: Ctx) -> str:
    text = "".join(repr(sorted(s.config_entry().items()))
                   for _, s in sorted(ctx.rt.state.storages.items()))
    return hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()


def storage_config_list(ctx: Ctx) -> list[dict[str, Any]]:
    """GET /storage: storage.cfg entries the caller may audit (``type`` filter)."""
    stype = ctx.str_param("type")
    with ctx.rt.state.cond:
        digest = _digest(ctx)
        return [{**st.config_entry(), "digest": digest}
                for name, st in sorted(ctx.rt.state.storages.items())
                if (stype is None or st.spec.type == stype) and storage_visible(ctx, name)]


def storage_create(ctx: Ctx) -> dict[str, Any]:
    """POST /storage: add a storage.cfg entry (``dir`` only; Datastore.Allocate on /storage,
    checked by the route). Synchronous: the answer names the new storage, no task."""
    name = str(ctx.params["storage"])
    stype = str(ctx.params["type"])
    if stype != "dir":
        raise server_error(f"storage type '{stype}' is not simulated (only dir)")
    path = ctx.str_param("path")
    if path is None:
        raise param_error({"path": "property is missing and it is not optional"})
    config: dict[str, str | int] = {}
    for key in CREATE_KEYS:
        value = ctx.params.get(key)
        if value is not None and key not in ("mkdir", "create-base-path", "create-subdirs",
                                             "shared", "disable"):
            config[key] = str(value)
    with ctx.rt.state.cond:
        if name in ctx.rt.state.storages:
            raise server_error(f"create storage failed: storage ID '{name}' already defined")
        spec = StorageSpec(storage=name, type=stype,
                           content=ctx.str_param("content") or "images,rootdir",
                           total=NEW_STORAGE_TOTAL, used=0,
                           shared=bool(ctx.int_param("shared", 0)),
                           enabled=not ctx.int_param("disable", 0), config=config)
        st = SimStorage(spec, ctx.rt.state.tz, ctx.rt.node, mounts=ctx.rt.state.mounts)
        st.backups = ctx.rt.state.detached.pop((name, path), [])
        for b in st.backups:
            st.consume(b.size or 0)
        ctx.rt.state.storages[name] = st
        ctx.rt.state.cond.notify_all()
    return {"storage": name, "type": stype}


def storage_delete(ctx: Ctx) -> None:
    """DELETE /storage/{storage}: drop the storage.cfg entry; the data on it is not touched
    (its backups are no longer listed, and are again once the same id and path are added)."""
    name = str(ctx.params["storage"])
    with ctx.rt.state.cond:
        st = ctx.rt.state.storages.get(name)
        if st is None:
            raise server_error(f"delete storage failed: storage '{name}' does not exist")
        path = st.spec.config.get("path")
        if path is not None and st.backups:
            ctx.rt.state.detached[(name, str(path))] = st.backups
        del ctx.rt.state.storages[name]
        ctx.rt.state.cond.notify_all()


def storage_config_get(ctx: Ctx) -> dict[str, Any]:
    """GET /storage/{storage} (Datastore.Allocate, checked by the route)."""
    name = str(ctx.params["storage"])
    with ctx.rt.state.cond:
        st = ctx.rt.state.storages.get(name)
        if st is None:
            raise server_error(f"storage '{name}' does not exist")
        return {**st.config_entry(), "digest": _digest(ctx)}


def backup_access_error(ctx: Ctx, st: SimStorage, backup: Backup) -> ApiError | None:
    """``check_volume_access`` for a backup volume: None when allowed, else the 403."""
    path = f"/storage/{st.name}"
    if ctx.has(path, "Datastore.Allocate"):
        return None
    if backup.vmid is None:
        return ApiError(403, f"missing privileges to access {backup.volid}\n")
    if not ctx.has(path, "Datastore.AllocateSpace"):
        return perm_error(path, "Datastore.AllocateSpace")
    if not ctx.has(f"/vms/{backup.vmid}", "VM.Backup"):
        return perm_error(f"/vms/{backup.vmid}", "VM.Backup")
    return None


def _volume_visible(ctx: Ctx, st: SimStorage, vol: dict[str, Any]) -> bool:
    path = f"/storage/{st.name}"
    if ctx.has(path, "Datastore.Allocate"):
        return True
    if vol.get("content") in ("iso", "vztmpl", "import"):
        return storage_visible(ctx, st.name)
    if "vmid" in vol:
        return ctx.has(path, "Datastore.Audit") and ctx.has(f"/vms/{vol['vmid']}",
                                                             "VM.Config.Disk")
    return False


def require_online(ctx: Ctx, st: SimStorage) -> None:
    """Raise the activation failure of an inactive or disabled storage."""
    if not st.active or not st.spec.enabled:
        if st.is_pbs:
            raise server_error(f"{st.name}: error fetching datastores - 500 Can't connect to "
                               f"{st.spec.config.get('server', 'pbs')}:8007 (Connection refused)")
        raise server_error(f"storage '{st.name}' is not online")


def content_list(ctx: Ctx) -> list[dict[str, Any]]:
    """GET .../content (``content``, ``vmid``), each item access-filtered, sorted by volid."""
    content = ctx.str_param("content")
    vmid = ctx.int_param("vmid")
    with ctx.rt.state.cond:
        st = _storage(ctx)
        require_online(ctx, st)
        out: list[dict[str, Any]] = []
        if content in (None, "backup") and st.has_content("backup"):
            out.extend(b.listing() for b in st.backups
                       if (vmid is None or st.vmid_matches(b, vmid))
                       and backup_access_error(ctx, st, b) is None)
        for vol in st.volumes:
            if content is not None and vol.get("content") != content:
                continue
            if vmid is not None and vol.get("vmid") != vmid:
                continue
            if _volume_visible(ctx, st, vol):
                out.append(dict(vol))
        return sorted(out, key=lambda v: str(v["volid"]).lower())


def find_volume(ctx: Ctx) -> tuple[SimStorage, str]:
    """Resolve ``{volume}`` (full volid, or a name relative to ``{storage}``) like PVE."""
    volume = str(ctx.params["volume"])
    storage = ctx.str_param("storage")
    if ":" in volume:
        sid = volume.split(":", 1)[0]
        if storage and sid != storage:
            raise param_error({"volume": f"storage ID mismatch ({sid} != {storage})\n"})
        storage, volid = sid, volume
    else:
        if not storage:
            raise param_error({"volume": "no storage specified - incomplete volume ID"})
        volid = f"{storage}:{volume}"
    st = ctx.rt.state.storages.get(storage)
    if st is None:
        raise server_error(f"storage '{storage}' does not exist")
    return st, volid


def _backup_or_die(ctx: Ctx, st: SimStorage, volid: str) -> Backup:
    backup = st.find(volid)
    if backup is None:
        raise server_error(f"volume_size_info on '{volid}' failed - no format")
    err = backup_access_error(ctx, st, backup)
    if err is not None:
        raise err
    return backup


def content_get(ctx: Ctx) -> dict[str, Any]:
    """GET .../content/{volume}: path, size, used, format, full notes, protected."""
    with ctx.rt.state.cond:
        st, volid = find_volume(ctx)
        require_online(ctx, st)
        b = _backup_or_die(ctx, st, volid)
        if st.is_pbs:
            cfg = st.spec.config
            path = (f"pbs://{cfg.get('username', 'root@pam')}@{cfg.get('server', '')}:"
                    f"{cfg.get('datastore', '')}/{b.filename}")
        else:
            path = f"{st.spec.config.get('path', '/var/lib/vz')}/dump/{b.filename}"
        size = b.size if b.size is not None else 1
        out: dict[str, Any] = {"path": path, "size": size, "used": size, "format": b.format}
        if b.notes is not None:
            out["notes"] = b.notes
        out["protected"] = int(b.protected)
        return out


def max_protected_for(principal: Principal, st: SimStorage) -> int:
    """``max-protected-backups``: configured, else unlimited (-1) with Allocate, else 5."""
    configured = st.spec.config.get("max-protected-backups")
    if configured is not None:
        return int(configured)
    return -1 if principal.has(f"/storage/{st.name}", "Datastore.Allocate") else 5


def content_put(ctx: Ctx) -> None:
    """PUT .../content/{volume}: set ``notes`` and/or ``protected`` (read access needed)."""
    with ctx.rt.state.cond:
        st, volid = find_volume(ctx)
        require_online(ctx, st)
        b = _backup_or_die(ctx, st, volid)
        if "notes" in ctx.params:
            b.notes = str(ctx.params["notes"]) or None
        protect = ctx.int_param("protected")
        if protect and not b.protected:
            limit = max_protected_for(ctx.principal, st)
            count = sum(1 for o in st.backups
                        if o.protected and o.vmid == b.vmid and o.subtype == b.subtype)
            if -1 < limit <= count:
                raise server_error(f"The number of protected backups per guest is limited to "
                                   f"{limit} on storage '{st.name}'")
        if protect is not None:
            b.protected = bool(protect)
