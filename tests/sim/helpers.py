"""Shared helpers for the PVE simulator tests: a pinned ``requests`` session and scenarios.

The session pins the simulator's SHA-256 fingerprint through urllib3's own
``assert_fingerprint`` (CA validation off for that pool, ``trust_env`` off so a
``REQUESTS_CA_BUNDLE`` in the environment cannot re-enable chain validation).
"""

from __future__ import annotations

import copy
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from felhom_agent.sim.pve import PveScenario, PveSimulator
from felhom_agent.sim.pve.defaults import default_scenario_dict

TIMEOUT = 10.0
SECRET = "5f0c3a5e-0d7b-4a8e-9a57-3a1f2d9c0b11"


class PinnedAdapter(HTTPAdapter):
    """An adapter whose pools accept exactly one certificate fingerprint."""

    def __init__(self, fingerprint: str) -> None:
        self._fingerprint = fingerprint
        super().__init__(max_retries=0)

    def init_poolmanager(self, connections: int, maxsize: int, block: bool = False,
                         **pool_kwargs: Any) -> None:
        pool_kwargs.update(assert_fingerprint=self._fingerprint, cert_reqs="CERT_NONE",
                           assert_hostname=False)
        super().init_poolmanager(connections, maxsize, block=block, **pool_kwargs)


def pinned_session(fingerprint: str, auth: str | None = None) -> requests.Session:
    """A session pinned to ``fingerprint`` sending ``auth`` as Authorization header."""
    s = requests.Session()
    s.trust_env = False
    s.verify = False
    s.mount("https://", PinnedAdapter(fingerprint))
    if auth is not None:
        s.headers["Authorization"] = auth
    return s


class Api:
    """Tiny test client: ``api.get('/version')`` -> ``requests.Response``."""

    def __init__(self, sim: PveSimulator, auth: str | None = None) -> None:
        self.sim = sim
        self.base = f"{sim.url}/api2/json"
        self.session = pinned_session(sim.fingerprint, sim.auth_header if auth is None else auth)

    def request(self, method: str, path: str, **kw: Any) -> requests.Response:
        kw.setdefault("timeout", TIMEOUT)
        return self.session.request(method, self.base + path, **kw)

    def get(self, path: str, **kw: Any) -> requests.Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> requests.Response:
        return self.request("POST", path, **kw)

    def put(self, path: str, **kw: Any) -> requests.Response:
        return self.request("PUT", path, **kw)

    def delete(self, path: str, **kw: Any) -> requests.Response:
        return self.request("DELETE", path, **kw)

    def data(self, method: str, path: str, **kw: Any) -> Any:
        """Call and return ``data``, asserting a 200."""
        r = self.request(method, path, **kw)
        assert r.status_code == 200, (r.status_code, r.reason, r.text)
        return r.json()["data"]

    def run_task(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        """Dispatch a UPID-returning call and wait for its task record."""
        upid = self.data(method, path, **kw)
        return self.sim.wait_task(upid, timeout=TIMEOUT)


def scenario_dict(**overrides: Any) -> dict[str, Any]:
    """The default scenario with test-friendly timing (no auth delay, instant tasks)."""
    d = copy.deepcopy(default_scenario_dict(token_secret=SECRET))
    d.update(auth_failure_delay_s=0, task_durations={"default": 0}, lock_wait_s=0)
    d["tokens"].extend([
        {"id": "auditor@pve!ro", "secret": "ro-secret-1", "privsep": True,
         "user_privileges": {"/": ["PVEAuditor"]}, "token_privileges": {"/": ["PVEAuditor"]}},
        {"id": "ops@pve!split", "secret": "split-secret-1", "privsep": True,
         "user_privileges": {"/": ["VM.Audit", "VM.PowerMgmt", "Sys.Audit"]},
         "token_privileges": {"/vms": ["VM.Audit"], "/vms/100": ["VM.Audit", "VM.PowerMgmt"]}},
        {"id": "ops@pve!full", "secret": "full-secret-1", "privsep": False,
         "user_privileges": {"/": ["VM.Audit", "VM.PowerMgmt", "Sys.Audit"]}},
        {"id": "snap@pve!only", "secret": "snap-secret-1", "privsep": False,
         "user_privileges": {"/vms": ["VM.Audit", "VM.Snapshot"],
                             "/storage": ["Datastore.AllocateSpace"]}},
    ])
    d.update(overrides)
    return d


def make_scenario(**overrides: Any) -> PveScenario:
    """A parsed test scenario."""
    return PveScenario.from_dict(scenario_dict(**overrides))
