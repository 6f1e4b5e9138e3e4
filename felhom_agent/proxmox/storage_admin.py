"""Adding and removing storage.cfg entries (mixed into the ProxmoxClient).

Both calls are synchronous (no task) and need ``Datastore.Allocate`` on ``/storage``
(``docs/pve-facts.md``, "Host storage"). The agent adds exactly one kind of storage: a ``dir``
storage on an externally mounted USB disk, always with ``is_mountpoint`` set, so PVE treats it
as offline while the disk is not mounted instead of writing backups into the empty directory
on the root file system. Removing a storage entry never touches the data on it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

from felhom_agent.proxmox.errors import ParameterError
from felhom_agent.proxmox.wire import ConfigValue, seg
from felhom_agent.storageids import STORAGE_ID_RULE, is_storage_id

__all__ = ["StorageAdminCalls"]

#: Content types a dir storage may hold (PVE's list).
_CONTENT: Final = frozenset({"backup", "images", "rootdir", "vztmpl", "iso", "snippets",
                             "import"})
_PATH = re.compile(r"(?:/[A-Za-z0-9_][A-Za-z0-9._-]{0,63}){1,12}")
_NODE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


def _bad(what: str, errors: Mapping[str, str]) -> ParameterError:
    return ParameterError(what, status=None, errors=dict(errors))


class StorageAdminCalls:
    """``POST /storage`` and ``DELETE /storage/{storage}``; needs the client's ``_call``."""

    def _call(self, method: str, path: str,
              params: Mapping[str, ConfigValue | None] | None = None) -> Any:
        raise NotImplementedError

    def add_mountpoint_dir_storage(self, storage: str, path: str, *, content: Sequence[str],
                                   nodes: Sequence[str]) -> None:
        """``POST /storage``: a ``dir`` storage at ``path`` with ``is_mountpoint=yes``.

        Raises:
            ParameterError: a bad id, path, content type or node (nothing sent), or PVE's 400.
            ServerError: PVE refused (``storage ID 'x' already defined``).
            PermissionDenied: no Datastore.Allocate on ``/storage``.
        """
        if not is_storage_id(storage):
            raise _bad(f"invalid storage id {storage!r}", {"storage": STORAGE_ID_RULE})
        if not isinstance(path, str) or _PATH.fullmatch(path) is None or "/." in path:
            raise _bad(f"invalid storage path {path!r}", {"path": "an absolute plain path"})
        kinds = list(content)
        if not kinds or any(c not in _CONTENT for c in kinds):
            raise _bad(f"invalid content {kinds!r}", {"content": ",".join(sorted(_CONTENT))})
        hosts = list(nodes)
        if not hosts or any(not isinstance(n, str) or not _NODE.fullmatch(n) for n in hosts):
            raise _bad(f"invalid nodes {hosts!r}", {"nodes": "node names"})
        self._call("POST", "/storage", {
            "storage": storage, "type": "dir", "path": path, "content": ",".join(kinds),
            "is_mountpoint": "yes", "nodes": ",".join(hosts)})

    def delete_storage(self, storage: str) -> None:
        """``DELETE /storage/{storage}``: remove the storage.cfg entry (the data stays).

        Raises:
            ParameterError: a bad id (nothing sent).
            ServerError: PVE refused (the storage does not exist).
            PermissionDenied: no Datastore.Allocate on ``/storage``.
        """
        if not is_storage_id(storage):
            raise _bad(f"invalid storage id {storage!r}", {"storage": STORAGE_ID_RULE})
        self._call("DELETE", f"/storage/{seg(storage)}")
