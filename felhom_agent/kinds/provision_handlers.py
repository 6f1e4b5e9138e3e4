"""The handlers of the creating kinds: ``provision`` and the golden image ``create_golden``.

Each function is referenced by one entry of :mod:`felhom_agent.kinds.registry`. The rules
they carry (``docs/architecture.md``, "Provisioning"; ``docs/pve-facts.md``, "Restore and
provisioning"):

* **provision** (a plan action, and the signed ``guest.provision``): a full clone of a template
  (``POST .../{type}/{template}/clone`` with ``newid``, ``name``, ``full=1``, ``storage``,
  ``pool``) or a restore of a golden backup into the new vmid with ``unique=1`` (new MACs).
  The target never exists before: the vmid is checked across the cluster right before the
  call (a collision is refused, nothing is overwritten). Done means the target guest exists,
  of the right type, unlocked, with the asked name (a clone's name; a restore keeps the
  archived one). A clone's task names its **source** vmid, so the task of a clone is never
  matched by the target's vmid: without a journalled UPID, the target guest decides. Clones of
  one container template run one at a time (PVE locks the template ``disk`` for the whole
  clone): their jobs share the queue limit group ``clone-source:<template>``.
* **create_golden** (signed only): ``pct create`` through the fenced root CLI -- the only way
  to set ``keyctl=1``, which no API token may -- then the template conversion over the API (a
  container answers ``null``; the client finds its ``vztemplate`` task). Done means the vmid
  is an unlocked container template.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from felhom_agent.core.provision import (
    ARCHIVE_SOURCE,
    NAME_RULE,
    NAME_TEXT,
    POOL_TEXT,
    SOURCE_KEYS,
    TEMPLATE_SOURCE,
    VOLID_TEXT,
    ProvisionSpec,
)
from felhom_agent.kinds.model import (
    GateInput,
    GateRefused,
    GuestFacts,
    JobSpec,
    Observed,
    Preflight,
    Prepared,
    Settings,
)
from felhom_agent.privileged.errors import RefusedArgument
from felhom_agent.privileged.ops import NetSpec, PctCreate
from felhom_agent.proxmox.client import ProxmoxClient
from felhom_agent.proxmox.errors import NotFound, PveError
from felhom_agent.proxmox.models import GuestType
from felhom_agent.proxmox.provision import archive_guest_type
from felhom_agent.proxmox.tasks import Dispatch
from felhom_agent.proxmox.upid import Upid
from felhom_agent.storageids import STORAGE_ID_RULE, is_storage_id
from felhom_agent.vmids import is_vmid

if TYPE_CHECKING:
    from felhom_agent.privileged.facade import Privileged

__all__ = [
    "CLONE_GROUP_PREFIX",
    "GOLDEN_FEATURES",
    "clone_group",
    "complete_provision",
    "convert_golden",
    "create_golden_ct",
    "golden_args",
    "golden_gate_read",
    "golden_preflight",
    "golden_ready",
    "observe_target",
    "partial_guest",
    "prepare_golden",
    "prepare_provision",
    "provision",
    "provision_gate_read",
    "provision_preflight",
    "provision_summary",
    "target_ready",
]

#: The queue limit group of the clones of one container template: ``clone-source:<vmid>``.
CLONE_GROUP_PREFIX: Final = "clone-source:"
#: The features a golden container may ask for; ``keyctl`` is why it needs root.
GOLDEN_FEATURES: Final = ("keyctl", "nesting")
#: Locks a guest carries while it is being created (a restore or container clone: ``create``;
#: a VM clone: ``clone``).
CREATING_LOCKS: Final = frozenset({"create", "clone"})


def _spec(job: JobSpec) -> ProvisionSpec:
    return ProvisionSpec.from_params(job.params)


def _refused(op_kind: str, why: str) -> GateRefused:
    return GateRefused(f"invalid params for {op_kind}: {why}")


def _collision(vmid: int) -> str:
    return (f"vmid {vmid} is taken (collision): the agent never creates a guest over an "
            "existing one; nothing sent")


# ------------------------------------------------------------------ provision


def signed_spec(params: Mapping[str, Any]) -> ProvisionSpec:
    """The spec of a signed ``guest.provision`` (the desired-state block's members).

    Raises:
        GateRefused: a member is malformed.
    """
    kind = "guest.provision"
    source = params.get("from")
    if not isinstance(source, dict) or len(source) != 1 or next(iter(source)) not in SOURCE_KEYS:
        raise _refused(kind, 'from must be {"template": VMID} or {"archive": VOLID}')
    template = source.get(TEMPLATE_SOURCE)
    archive = source.get(ARCHIVE_SOURCE)
    if TEMPLATE_SOURCE in source and (isinstance(template, bool) or not isinstance(template, int)
                                      or not is_vmid(template)):
        raise _refused(kind, f"from.template {str(template)[:20]!r} is not a vmid")
    if ARCHIVE_SOURCE in source and (not isinstance(archive, str)
                                     or not VOLID_TEXT.fullmatch(archive)):
        raise _refused(kind, f"from.archive {str(archive)[:80]!r} is not a backup volume id "
                       "(STORAGE:backup/...)")
    name, storage, pool = params["name"], params["storage"], params.get("pool")
    if not isinstance(name, str) or not NAME_TEXT.fullmatch(name):
        raise _refused(kind, f"name {str(name)[:70]!r} is not {NAME_RULE}")
    if not is_storage_id(storage):
        raise _refused(kind, f"storage {str(storage)[:70]!r} is not {STORAGE_ID_RULE}")
    if pool is not None and (not isinstance(pool, str) or not POOL_TEXT.fullmatch(pool)):
        raise _refused(kind, f"pool {str(pool)[:70]!r} is not a PVE pool id")
    return ProvisionSpec(name=name, storage=str(storage),
                         template=template if isinstance(template, int) else None,
                         archive=archive if isinstance(archive, str) else None, pool=pool)


def _archive_type(c: ProxmoxClient, volid: str) -> GuestType | None:
    """The guest type of a backup: its volid, else its listed ``subtype``."""
    known = archive_guest_type(volid)
    if known is not None:
        return known
    listed = next((v for v in c.backups(volid.split(":", 1)[0]) if v.volid == volid), None)
    return None if listed is None else archive_guest_type(listed)


def _new_target(vmid: int, gtype: GuestType) -> GuestFacts:
    """The facts of a guest the op creates: it does not exist, so it neither runs nor is
    protected."""
    return GuestFacts(vmid=vmid, type=gtype, running=False, protected=False, exists=False)


def provision_gate_read(c: ProxmoxClient, vmid: int, params: Mapping[str, Any],
                        settings: Settings) -> GateInput:
    """A signed provision: the vmid is free on the cluster (never a collision), and the new
    guest's type is its source's (a template on this node, or the backup's type).

    Raises:
        GateRefused: the vmid is taken, or the source is not a template / not a backup.
        PveError: a read failed.
    """
    spec = signed_spec(params)
    if not c.vmid_free(vmid):
        raise GateRefused(_collision(vmid))
    if spec.template is not None:
        listed = next((g for g in c.guests() if g.vmid == spec.template), None)
        if listed is None:
            raise GateRefused(f"source template {spec.template} is not a guest on node "
                              f"{c.node} (or the token cannot see it: VM.Audit)")
        if not listed.template:
            raise GateRefused(f"source {spec.template} is not a template")
        return GateInput(guest=_new_target(vmid, listed.type), params=params)
    assert spec.archive is not None  # noqa: S101 - one of the two by signed_spec
    gtype = _archive_type(c, spec.archive)
    if gtype is None:
        raise GateRefused(f"archive {spec.archive} is not in the listing of its storage, or "
                          "its guest type cannot be told")
    return GateInput(guest=_new_target(vmid, gtype), params=params)


def observe_target(c: ProxmoxClient, job: JobSpec, since: float | None,
                   upid: str | None) -> Observed:
    """The guest a creating job makes: is its vmid free on the cluster, and if not, its
    status (``None`` when it is another node's guest or of the other type).

    Before the begin the vmid is expected free (one cluster-wide check); after it the guest
    is expected to exist (its status first, the cluster check only when it is not found):
    one read either way in the common case.
    """
    if since is not None:
        try:
            return Observed(status=c.guest_status(job.vmid, job.guest_type), since=since)
        except NotFound:
            pass
    if c.vmid_free(job.vmid):
        return Observed(status=None, absent=True, since=since)
    try:
        status = c.guest_status(job.vmid, job.guest_type)
    except NotFound:
        status = None
    return Observed(status=status, since=since)


def prepare_provision(op_id: str, params: Mapping[str, Any], guest: GuestFacts) -> Prepared:
    """The signed block becomes the kind's flat params (``template``/``archive``, ``name``,
    ``storage``, ``pool``)."""
    return Prepared(signed_spec(params).params())


def complete_provision(params: Mapping[str, Any], settings: Settings) -> Mapping[str, Any]:
    """``provision.pool`` when the op names no pool."""
    if params.get("pool") is None and settings.pool is not None:
        return {**params, "pool": settings.pool}
    return params


def clone_group(job: JobSpec) -> str | None:
    """Clones of one container template share a group with limit 1 (its ``disk`` lock);
    VM templates (a shared lock) and restores have none."""
    spec = _spec(job)
    if spec.template is not None and job.guest_type is GuestType.LXC:
        return f"{CLONE_GROUP_PREFIX}{spec.template}"
    return None


def provision(c: ProxmoxClient, job: JobSpec, obs: Observed) -> Dispatch:
    """A full clone of the template, or the archive restored with new MACs."""
    spec = _spec(job)
    if spec.template is not None:
        return c.clone(spec.template, job.guest_type, job.vmid, name=spec.name, full=True,
                       storage=spec.storage, pool=spec.pool)
    return c.restore(job.vmid, job.guest_type, spec.archive or "", unique=True,
                     storage=spec.storage, pool=spec.pool)


def provision_preflight(c: ProxmoxClient, job: JobSpec, obs: Observed,
                        settings: Settings) -> Preflight:
    """Right before the call: the vmid is free across the cluster (a collision is refused,
    nothing overwritten), inside the range, and the source is usable now."""
    vmid = job.vmid
    if not obs.absent:
        return Preflight(refused=_collision(vmid))
    if not settings.vmid_min <= vmid <= settings.vmid_max:
        return Preflight(refused=f"provision.vmid_min/vmid_max: vmid {vmid} is outside "
                         f"{settings.vmid_min}..{settings.vmid_max}")
    spec = _spec(job)
    gtype = job.guest_type.value
    if spec.template is not None:
        try:
            source = c.guest_status(spec.template, job.guest_type)
        except NotFound:
            return Preflight(refused=f"source template {spec.template} ({gtype}) does not "
                             "exist; nothing sent")
        if not source.template:
            return Preflight(refused=f"source {spec.template} is not a template; nothing sent")
        return Preflight()
    volid = spec.archive or ""
    listed = next((v for v in c.backups(volid.split(":", 1)[0]) if v.volid == volid), None)
    if listed is None:
        return Preflight(refused=f"archive {volid} is not in the listing of its storage; "
                         "nothing sent")
    archived = archive_guest_type(listed)
    if archived is not None and archived is not job.guest_type:
        return Preflight(refused=f"archive {volid} is a {archived.value} backup, not {gtype}; "
                         "nothing sent")
    return Preflight()


def target_ready(job: JobSpec, obs: Observed) -> bool:
    """Done means found: the new guest exists, of the job's type, unlocked, not a template,
    and (for a clone) with the asked name."""
    status = obs.status
    if obs.absent or status is None or status.type is not job.guest_type:
        return False
    if status.lock is not None or status.template:
        return False
    spec = _spec(job)
    return spec.template is None or status.name == spec.name


def provision_summary(job: JobSpec, obs: Observed) -> str:
    """``lxc 1001 'c42-web' cloned from template 9000`` for the applied outcome."""
    spec = _spec(job)
    name = obs.status.name if obs.status is not None else spec.name
    how = (f"cloned from template {spec.template}" if spec.template is not None
           else f"restored from {spec.archive} with new MAC addresses")
    return f"{job.guest_type.value} {job.vmid} {name!r} {how}"


def partial_guest(c: ProxmoxClient, job: JobSpec, upid: Upid | None = None) -> str | None:
    """What a failed creation left behind: nothing (PVE removed it), or a partial guest
    that is reported and never adopted."""
    try:
        if c.vmid_free(job.vmid):
            return f"nothing left behind: vmid {job.vmid} is free"
        status = c.guest_status(job.vmid, job.guest_type)
    except PveError as err:
        return f"vmid {job.vmid} not re-read ({err})"
    lock = f", locked {status.lock}" if status.lock else ""
    return (f"partial guest {job.vmid} left behind ({status.status}{lock}); not adopted: "
            "remove it (a locked guest needs root: pct unlock / qm unlock) before provisioning "
            "it again")


# ------------------------------------------------------------------ create_golden


def _golden_features(value: object) -> bool:
    """The features list: ``keyctl`` (required: it is why root is needed), maybe ``nesting``;
    returns whether nesting is on."""
    if (not isinstance(value, list) or not all(isinstance(f, str) for f in value)
            or len(set(value)) != len(value) or not set(value) <= set(GOLDEN_FEATURES)
            or "keyctl" not in value):
        raise _refused("guest.create_golden", "features must list keyctl and optionally "
                       "nesting, each once")
    return "nesting" in value


def golden_args(vmid: int, params: Mapping[str, Any]) -> PctCreate:
    """The validated ``pct create`` of a golden image (unprivileged, ``keyctl=1``).

    Raises:
        GateRefused: a param is refused by the fenced operation's validators.
    """
    nesting = _golden_features(params.get("features"))
    try:
        net0 = params.get("net0")
        return PctCreate(vmid=vmid, ostemplate=params["ostemplate"],
                         hostname=params["hostname"], storage=params["storage"],
                         net0=None if net0 is None else NetSpec.parse(net0),
                         memory_mb=params["memory"], cores=params["cores"],
                         unprivileged=True, nesting=nesting)
    except RefusedArgument as err:
        raise _refused("guest.create_golden", str(err)) from None


def prepare_golden(op_id: str, params: Mapping[str, Any], guest: GuestFacts) -> Prepared:
    """Every param is checked by building the fenced operation now."""
    golden_args(guest.vmid, params)
    return Prepared(params)


def golden_gate_read(c: ProxmoxClient, vmid: int, params: Mapping[str, Any],
                     settings: Settings) -> GateInput:
    """A golden image is a new container: every param valid, its vmid free on the cluster."""
    golden_args(vmid, params)
    if not c.vmid_free(vmid):
        raise GateRefused(_collision(vmid))
    return GateInput(guest=_new_target(vmid, GuestType.LXC), params=params)


def golden_preflight(c: ProxmoxClient, job: JobSpec, obs: Observed,
                     settings: Settings) -> Preflight:
    """Right before ``pct create``: the vmid is still free across the cluster."""
    return Preflight() if obs.absent else Preflight(refused=_collision(job.vmid))


def create_golden_ct(priv: Privileged, job: JobSpec) -> str:
    """The fenced step: ``pct create`` as root; returns the command line it ran.

    Raises:
        PrivilegedError: refused, failed or timed out (the op fails with that text).
    """
    args = golden_args(job.vmid, job.params)
    priv.create_golden_ct(args)
    return "root CLI: " + " ".join(args.argv())


def convert_golden(c: ProxmoxClient, job: JobSpec, obs: Observed) -> Dispatch:
    """``POST .../lxc/{vmid}/template`` (``null``; its ``vztemplate`` task is looked up)."""
    return c.convert_to_template(job.vmid, GuestType.LXC)


def golden_ready(job: JobSpec, obs: Observed) -> bool:
    """The golden image exists as an unlocked container template."""
    status = obs.status
    return (not obs.absent and status is not None and status.type is GuestType.LXC
            and status.template and status.lock is None)
