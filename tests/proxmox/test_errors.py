"""Classification of PVE error answers into typed errors.

See ``docs/pve-facts.md`` ("Responses and errors", "Locks").
"""

from __future__ import annotations

import json
import pickle

import pytest

from felhom_agent.errors import AgentError
from felhom_agent.proxmox.errors import (
    PRIVSEP_HINT,
    AuthError,
    GuestExists,
    GuestProtected,
    GuestRunning,
    Locked,
    NotFound,
    ParameterError,
    PermissionDenied,
    PveError,
    ServerError,
    TaskFailed,
    WrongGuestType,
    classify_error,
)


def _classify(status: int, reason: str, body: bytes = b"") -> PveError:
    return classify_error(status, reason, body, method="GET", path="/nodes/pve/qemu/100/config")


def test_401_with_empty_body_is_auth_error() -> None:
    """A 401 'Authentication failed!' with no body maps to AuthError (a PermissionError)."""
    err = _classify(401, "Authentication failed!")
    assert isinstance(err, AuthError)
    assert isinstance(err, PermissionError)
    assert isinstance(err, AgentError)
    assert err.status == 401
    assert "Authentication failed!" in str(err)


def test_403_keeps_path_and_privilege_and_adds_privsep_hint() -> None:
    """A 403 names the ACL path and privilege, and its message carries the privsep hint."""
    err = _classify(403, "Permission check failed (/vms/100, VM.PowerMgmt)")
    assert isinstance(err, PermissionDenied)
    assert (err.acl_path, err.privileges) == ("/vms/100", ("VM.PowerMgmt",))
    assert "VM.PowerMgmt" in str(err)
    assert PRIVSEP_HINT in str(err)


def test_403_any_of_check_lists_every_alternative() -> None:
    """An any-of check's |-joined privileges are split into alternatives."""
    err = _classify(403, "Permission check failed (/vms/100, VM.Snapshot|VM.Snapshot.Rollback)")
    assert isinstance(err, PermissionDenied)
    assert err.privileges == ("VM.Snapshot", "VM.Snapshot.Rollback")


def test_403_root_only_gets_the_root_hint() -> None:
    """A root@pam-only refusal says that tokens can never do it, not the privsep hint."""
    err = _classify(
        403,
        "Permission check failed (changing feature flags (except nesting) is only allowed "
        "for root@pam)",
    )
    assert isinstance(err, PermissionDenied)
    assert err.acl_path is None
    assert "root@pam" in str(err)
    assert PRIVSEP_HINT not in str(err)


def test_400_keeps_per_field_errors() -> None:
    """A 400 'Parameter verification failed.' exposes the body's errors dict per field."""
    body = json.dumps(
        {
            "data": None,
            "errors": {"vmid": "value must have a minimum value of 100"},
            "message": "Parameter verification failed.\n",
        }
    ).encode()
    err = _classify(400, "Parameter verification failed.", body)
    assert isinstance(err, ParameterError)
    assert isinstance(err, ValueError)
    assert err.errors == {"vmid": "value must have a minimum value of 100"}
    assert "vmid: value must have a minimum value of 100" in str(err)
    assert not err.no_such_task


def test_no_such_task_is_recognised() -> None:
    """The 400 {"upid": "no such task"} answer is flagged for the wait's grace period."""
    body = b'{"data":null,"errors":{"upid":"no such task"}}'
    err = _classify(400, "Parameter verification failed.", body)
    assert isinstance(err, ParameterError) and err.no_such_task


@pytest.mark.parametrize(
    ("reason", "lock"),
    [("VM is locked (backup)", "backup"), ("CT is locked (snapshot-delete)", "snapshot-delete")],
)
def test_guest_lock_is_locked(reason: str, lock: str) -> None:
    """'VM/CT is locked (x)' as a 500 maps to Locked with the lock name."""
    err = _classify(500, reason)
    assert isinstance(err, Locked)
    assert err.lock == lock


def test_flock_timeout_is_locked() -> None:
    """The config flock timeout text maps to Locked without a lock name."""
    err = _classify(500, "can't lock file '/var/lock/qemu-server/lock-100.conf' - got timeout")
    assert isinstance(err, Locked)
    assert err.lock is None


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (501, "Method 'GET /nodes/pve/foo' not implemented"),
        (500, "Configuration file 'nodes/pve/qemu-server/999.conf' does not exist"),
    ],
)
def test_missing_things_are_not_found(status: int, reason: str) -> None:
    """Unknown paths (501) and missing guest configs (500) map to NotFound (a LookupError)."""
    err = _classify(status, reason)
    assert isinstance(err, NotFound)
    assert isinstance(err, LookupError)


def test_other_500_is_server_error_and_knows_failed_forks() -> None:
    """A plain 500 is a ServerError; 'got no worker upid' says no task was created."""
    err = _classify(500, "got no worker upid - start worker failed")
    assert isinstance(err, ServerError)
    assert err.no_task_created
    assert not isinstance(_classify(503, "Service Unavailable"), Locked)


def test_body_message_is_used_when_reason_is_generic() -> None:
    """When the reason phrase is the standard one, the body's fuller message is used."""
    body = b'{"data":null,"message":"CT 101 not running\\n"}'
    err = _classify(500, "Internal Server Error", body)
    assert err.message == "CT 101 not running"
    plain = _classify(501, "", b"no such uri")
    assert plain.message == "no such uri"


def test_error_names_method_path_and_status() -> None:
    """str() of an API error carries method, path and status for the operator."""
    err = _classify(500, "boom")
    assert str(err) == "boom (GET /nodes/pve/qemu/100/config -> 500)"


def test_task_failed_keeps_exitstatus_and_pickles() -> None:
    """TaskFailed carries the exitstatus and UPID across pickling, and spots lock failures."""
    err = TaskFailed("VM is locked (snapshot)", upid="UPID:x")
    again = pickle.loads(pickle.dumps(err))  # noqa: S301 -- our own bytes, round trip
    assert (again.exitstatus, again.upid) == ("VM is locked (snapshot)", "UPID:x")
    assert err.lock_failure
    assert not TaskFailed("VM 100 already running", upid="UPID:x").lock_failure


@pytest.mark.parametrize(("reason", "vmid", "kind"), [
    ("CT 102 already exists on node 'pve1'", 102, "CT"),
    ("unable to restore VM 101 - VM 101 already exists on node 'pve1'", 101, "VM"),
    ("unable to create VM 100: config file already exists", 100, None),
])
def test_a_taken_vmid_is_guest_exists(reason: str, vmid: int, kind: str | None) -> None:
    """Every PVE wording of "the vmid is taken" is a GuestExists (a ServerError) naming it."""
    err = _classify(500, reason)
    assert isinstance(err, GuestExists) and isinstance(err, ServerError)
    assert (err.vmid, err.kind) == (vmid, kind)
    again = pickle.loads(pickle.dumps(err))  # noqa: S301 -- our own bytes, round trip
    assert (type(again), again.vmid, again.kind) == (GuestExists, vmid, kind)


@pytest.mark.parametrize(("reason", "cls"), [
    ("can't overwrite running container", GuestRunning),
    ("you can't convert a CT to template if the CT is running", GuestRunning),
    ("VM 101 is running - destroy failed", GuestRunning),
    ("unable to restore CT 102 - protection mode enabled", GuestProtected),
    ("can't remove CT 102 - protection mode enabled", GuestProtected),
])
def test_running_and_protected_refusals_are_typed(reason: str, cls: type[ServerError]) -> None:
    """Refusals because the guest runs or is protected have their own ServerError leaves."""
    assert type(_classify(500, reason)) is cls


def test_wrong_guest_type_is_a_parameter_error_that_pickles() -> None:
    """WrongGuestType is raised before sending (no status) and survives pickling."""
    err = WrongGuestType("x is a lxc backup, not qemu", archive_type="lxc", wanted="qemu")
    again = pickle.loads(pickle.dumps(err))  # noqa: S301 -- our own bytes, round trip
    assert isinstance(again, WrongGuestType) and again.status is None
    assert (again.archive_type, again.wanted, again.errors) == (
        "lxc", "qemu", {"archive": "x is a lxc backup, not qemu"})
