"""Property tests: arbitrary request paths, parameters and bodies never crash the simulator
or hang a worker; every answer is one of PVE's status codes."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from felhom_agent.sim.pve import PveSimulator
from tests.sim.helpers import Api, make_scenario
from tests.support.hypo import examples

ALLOWED = {200, 400, 403, 500, 501}
PATHS = [
    "/nodes/pve1/qemu/101/config", "/nodes/pve1/lxc/100/config", "/nodes/pve1/qemu/101/snapshot",
    "/nodes/pve1/lxc/102/status/start", "/nodes/pve1/tasks", "/nodes/pve1/vzdump",
    "/nodes/pve1/lxc", "/access/permissions", "/cluster/resources",
    "/nodes/pve1/storage/local/content",
]
KEYS = st.sampled_from(["description", "memory", "onboot", "vmid", "snapname", "delete",
                        "digest", "tags", "start", "limit", "type", "storage", "cores", "x"])
VALUES = st.one_of(st.text(max_size=20), st.integers(-5, 10**10).map(str),
                   st.sampled_from(["0", "1", "true", "", "101", "a;b"]))


@pytest.fixture(scope="module")
def fuzz_sim() -> Iterator[PveSimulator]:
    """One simulator shared by the fuzz examples (tasks instant, no auth delay)."""
    before = set(threading.enumerate())
    with PveSimulator(make_scenario()) as sim:
        yield sim
        assert sim.internal_errors == [], sim.internal_errors[0]
    assert not [t for t in threading.enumerate() if t not in before and t.is_alive()]


@settings(max_examples=examples(60))
@given(method=st.sampled_from(["GET", "POST", "PUT", "DELETE"]), path=st.sampled_from(PATHS),
       params=st.dictionaries(KEYS, VALUES, max_size=4), as_json=st.booleans())
def test_random_requests_get_pve_answers(fuzz_sim: PveSimulator, method: str, path: str,
                                         params: dict[str, str], as_json: bool) -> None:
    """Any method/path/parameter mix answers an allowed status and never a handler bug."""
    api = Api(fuzz_sim)
    if method in ("POST", "PUT"):
        kw = {"json": params} if as_json else {"data": params}
    else:
        kw = {"params": params}
    r = api.request(method, path, **kw)
    assert r.status_code in ALLOWED, (r.status_code, r.reason)
    api.session.close()


@settings(max_examples=examples(40))
@given(body=st.binary(max_size=64),
       ctype=st.sampled_from(["application/json", "application/x-www-form-urlencoded", ""]))
def test_random_bodies_get_pve_answers(fuzz_sim: PveSimulator, body: bytes, ctype: str) -> None:
    """Arbitrary body bytes on a config PUT answer 200/400/500, never a crash."""
    api = Api(fuzz_sim)
    r = api.put("/nodes/pve1/lxc/102/config", data=body, headers={"Content-Type": ctype})
    assert r.status_code in ALLOWED, (r.status_code, r.reason)
    api.session.close()
