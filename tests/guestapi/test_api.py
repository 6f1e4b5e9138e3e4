"""The v1 endpoints: exactly the documented routes, answers about the caller only."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from felhom_agent.guestapi.api import (
    Accepted,
    Api,
    ApiRequest,
    BackupItem,
    Caller,
    GuestInfo,
)
from felhom_agent.guestapi.errors import GuestApiError
from felhom_agent.guestapi.policy import Limits, Refusal

A = Caller(101, "lxc", "unix")
B = Caller(102, "lxc", "unix")


@attrs.define
class FakeBackend:
    """Records what the endpoints asked for; every answer is keyed by the caller's vmid."""

    infos: dict[int, GuestInfo] = attrs.field(factory=dict)
    backups: dict[int, list[BackupItem]] = attrs.field(factory=dict)
    operations: dict[str, int] = attrs.field(factory=dict)
    calls: list[tuple[str, int]] = attrs.field(factory=list)
    fail: bool = False

    def guest_info(self, vmid: int) -> GuestInfo | None:
        return self.infos.get(vmid)

    def list_backups(self, caller: Caller, info: GuestInfo) -> Sequence[BackupItem]:
        self.calls.append(("list_backups", caller.vmid))
        if self.fail:
            raise GuestApiError("storage pbs1 unreachable")
        return self.backups.get(caller.vmid, [])

    def request_backup(self, caller: Caller, info: GuestInfo) -> Accepted | Refusal:
        self.calls.append(("request_backup", caller.vmid))
        op = f"guest-{caller.vmid}-{len(self.operations)}"
        self.operations[op] = caller.vmid
        return Accepted(op)

    def operation(self, caller: Caller, op_id: str) -> Mapping[str, Any] | None:
        self.calls.append(("operation", caller.vmid))
        if self.operations.get(op_id) != caller.vmid:
            return None
        return {"id": op_id, "state": "running"}

    def request_restart(self, caller: Caller, info: GuestInfo) -> Accepted | Refusal:
        self.calls.append(("request_restart", caller.vmid))
        return Accepted(f"restart-{caller.vmid}")


def _backend() -> FakeBackend:
    return FakeBackend(
        infos={101: GuestInfo(101, "lxc", "web", "pve1", "host-a", ("prod",), "pbs1"),
               102: GuestInfo(102, "lxc", "db", "pve1", "host-a", (), None)},
        backups={101: [BackupItem(1700000000, 123, True, False)],
                 102: [BackupItem(1700000500, 456, None, True)]})


def _get(api: Api, caller: Caller, path: str, **kw: Any) -> tuple[int, Any]:
    response = api.handle(caller, ApiRequest("GET", path, **kw))
    return response.status, response.body


def test_root_and_identity_answer_for_the_caller() -> None:
    """/1.0 and /1.0/identity describe the guest the request arrived from."""
    api = Api(_backend(), Limits())
    status, body = _get(api, A, "/1.0")
    assert status == 200
    assert body["guest"] == {"vmid": 101, "type": "lxc"}
    assert body["capabilities"]["backup_request"] is True
    assert body["capabilities"]["restart"] is False
    status, body = _get(api, A, "/1.0/identity")
    assert (status, body) == (200, {"vmid": 101, "type": "lxc", "name": "web", "node": "pve1",
                                    "host_id": "host-a", "tags": ["prod"]})
    assert _get(api, B, "/1.0/identity")[1]["vmid"] == 102


def test_backups_are_the_callers_own_with_only_the_documented_fields() -> None:
    """ctime, size, verified, protected -- no volid, no storage, nothing of another guest."""
    api = Api(_backend(), Limits())
    status, body = _get(api, A, "/1.0/backups")
    assert status == 200
    assert body == {"backups": [{"ctime": 1700000000, "size": 123, "verified": True,
                                 "protected": False}]}


def test_a_backup_request_is_accepted_with_an_operation() -> None:
    """POST /1.0/backups: 202 with an operation id the caller (and only it) can look up."""
    backend = _backend()
    api = Api(backend, Limits())
    response = api.handle(A, ApiRequest("POST", "/1.0/backups", body=b"{}"))
    assert response.status == 202 and response.mutating
    op = response.operation_id
    assert op is not None and response.body == {"operation_id": op,
                                                "operation": f"/1.0/operations/{op}"}
    assert _get(api, A, f"/1.0/operations/{op}")[0] == 200
    assert _get(api, B, f"/1.0/operations/{op}") == (404, {"error": "no such operation"})


def test_no_policy_means_no_backup_request() -> None:
    """A guest without a backup policy has no storage to back up to: 409, nothing asked."""
    backend = _backend()
    response = Api(backend, Limits()).handle(B, ApiRequest("POST", "/1.0/backups"))
    assert response.status == 409 and response.mutating
    assert ("request_backup", 102) not in backend.calls


@pytest.mark.parametrize(("request_", "status"), [
    (ApiRequest("GET", "/1.0/identity", query="vmid=102"), 400),
    (ApiRequest("GET", "/1.0/backups", query=""), 400),
    (ApiRequest("GET", "/1.0/guests/102/identity"), 404),
    (ApiRequest("GET", "/1.0/identity/102"), 404),
    (ApiRequest("GET", "/1.1/identity"), 404),
    (ApiRequest("GET", "/"), 404),
    (ApiRequest("POST", "/1.0/backups", body=b'{"vmid": 102}'), 400),
    (ApiRequest("POST", "/1.0/backups", body={"storage": "local"}), 400),
    (ApiRequest("POST", "/1.0/backups", body=b"[102]"), 400),
    (ApiRequest("POST", "/1.0/backups", body=b"\xff"), 400),
    (ApiRequest("GET", "/1.0/backups", body=b'{"vmid":102}'), 400),
    (ApiRequest("DELETE", "/1.0/backups"), 405),
    (ApiRequest("PUT", "/1.0/identity"), 405),
    (ApiRequest("GET", "/1.0/operations/../../etc"), 404),
])
def test_a_request_naming_anything_is_refused(request_: ApiRequest, status: int) -> None:
    """Another vmid in the path, query or body (or any parameter at all) is refused, and the
    backend is not asked to do anything."""
    backend = _backend()
    response = Api(backend, Limits()).handle(A, request_)
    assert response.status == status, response.body
    assert response.refused and response.reason
    assert not [c for c in backend.calls if c[0].startswith("request")]


def test_restart_only_when_allowed() -> None:
    """POST /1.0/restart is 403 unless guestapi.allow_restart; then 202."""
    backend = _backend()
    off = Api(backend, Limits()).handle(A, ApiRequest("POST", "/1.0/restart"))
    assert off.status == 403 and off.mutating
    assert backend.calls == []
    on = Api(backend, Limits(allow_restart=True)).handle(A, ApiRequest("POST", "/1.0/restart"))
    assert on.status == 202 and on.operation_id == "restart-101"


def test_an_unknown_guest_or_a_type_mismatch_is_not_served() -> None:
    """A listener whose guest the agent no longer knows (or knows as the other type): 503."""
    api = Api(_backend(), Limits())
    assert _get(api, Caller(103, "lxc", "unix"), "/1.0")[0] == 503
    assert _get(api, Caller(101, "qemu", "serial"), "/1.0")[0] == 503


def test_a_failing_host_read_is_a_503_not_an_exception() -> None:
    """The storage listing failing answers 503 with the (short) reason."""
    backend = _backend()
    backend.fail = True
    response = Api(backend, Limits()).handle(A, ApiRequest("GET", "/1.0/backups"))
    assert response.status == 503 and "unreachable" in response.reason
    assert response.retry_after_s == 30


@given(st.dictionaries(st.text(max_size=8), st.integers() | st.text(max_size=8), max_size=4),
       st.sampled_from(["/1.0/backups", "/1.0/restart"]))
def test_no_body_ever_reaches_the_backend(body: dict[str, object], path: str) -> None:
    """Property: a POST with any non-empty object is refused before the backend is called;
    the empty object is the only accepted body."""
    backend = _backend()
    response = Api(backend, Limits(allow_restart=True)).handle(
        A, ApiRequest("POST", path, body=body))
    if body:
        assert response.status == 400
        assert backend.calls == []
    else:
        assert response.status == 202
