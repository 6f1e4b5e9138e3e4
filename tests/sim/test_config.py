"""Config round-trip quirks and the sync/async config write modes of the simulator."""

from __future__ import annotations

from tests.sim.helpers import TIMEOUT, Api


def test_lxc_description_reads_back_with_trailing_newline(api: Api) -> None:
    """LXC: writing 'hello' reads back 'hello\\n'; an empty description removes the key."""
    assert api.data("PUT", "/nodes/pve1/lxc/102/config", data={"description": "hello"}) is None
    assert api.data("GET", "/nodes/pve1/lxc/102/config")["description"] == "hello\n"
    api.data("PUT", "/nodes/pve1/lxc/102/config", data={"description": "a\n\nb\n\n"})
    assert api.data("GET", "/nodes/pve1/lxc/102/config")["description"] == "a\n\nb\n"
    api.data("PUT", "/nodes/pve1/lxc/102/config", data={"description": ""})
    assert "description" not in api.data("GET", "/nodes/pve1/lxc/102/config")


def test_qemu_description_is_trimmed_on_read(api: Api) -> None:
    """QEMU trims trailing whitespace: 'hello \\n' reads back 'hello'."""
    api.data("PUT", "/nodes/pve1/qemu/101/config", data={"description": "hello \n"})
    assert api.data("GET", "/nodes/pve1/qemu/101/config")["description"] == "hello"


def test_lxc_put_config_returns_null_synchronously(api: Api) -> None:
    """LXC PUT config answers {"data": null} and the change is visible at once."""
    r = api.put("/nodes/pve1/lxc/100/config", data={"onboot": "0", "memory": "2048"})
    assert r.status_code == 200 and r.json() == {"data": None}
    cfg = api.data("GET", "/nodes/pve1/lxc/100/config")
    assert (cfg["onboot"], cfg["memory"]) == (0, 2048)


def test_lxc_config_has_no_post_variant(api: Api) -> None:
    """POST on an LXC config path is PVE's 501 'Method ... not implemented'."""
    r = api.post("/nodes/pve1/lxc/100/config", data={"description": "x"})
    assert r.status_code == 501
    assert r.reason == "Method 'POST /nodes/pve1/lxc/100/config' not implemented"


def test_qemu_post_config_returns_upid_and_applies_in_task(api: Api) -> None:
    """QEMU POST config returns a qmconfig UPID; the change lands when the task ends OK."""
    sim = api.sim
    sim.set_task_duration("qmconfig", 60)
    upid = api.data("POST", "/nodes/pve1/qemu/101/config", data={"cores": "4"})
    assert upid.startswith("UPID:pve1:") and ":qmconfig:101:" in upid
    assert api.data("GET", "/nodes/pve1/qemu/101/config")["cores"] == 2
    sim.release_tasks()
    assert sim.wait_task(upid, TIMEOUT)["exitstatus"] == "OK"
    assert api.data("GET", "/nodes/pve1/qemu/101/config")["cores"] == 4


def test_qemu_post_config_with_background_delay_returns_null(api: Api) -> None:
    """With background_delay and a task finishing in time, POST config answers null."""
    r = api.post("/nodes/pve1/qemu/101/config", data={"onboot": "1", "background_delay": "5"})
    assert r.json() == {"data": None}
    assert api.data("GET", "/nodes/pve1/qemu/101/config")["onboot"] == 1


def test_qemu_put_config_is_sync_and_memory_is_a_string(api: Api) -> None:
    """QEMU PUT config answers null; memory reads back as a string (PVE >= 8.1)."""
    assert api.data("PUT", "/nodes/pve1/qemu/101/config", data={"memory": 8192}) is None
    assert api.data("GET", "/nodes/pve1/qemu/101/config")["memory"] == "8192"


def test_booleans_are_0_1_and_form_true_is_rejected(api: Api) -> None:
    """Booleans read back as 0/1; a form 'true' is a 400, a JSON true is accepted."""
    r = api.put("/nodes/pve1/lxc/102/config", data={"onboot": "true"})
    assert r.status_code == 400
    assert r.json()["errors"] == {"onboot": "type check ('boolean') failed - got 'true'"}
    api.data("PUT", "/nodes/pve1/lxc/102/config", json={"onboot": True, "protection": False})
    cfg = api.data("GET", "/nodes/pve1/lxc/102/config")
    assert (cfg["onboot"], cfg["protection"]) == (1, 0)


def test_digest_changes_on_write_and_stale_digest_is_refused(api: Api) -> None:
    """digest changes on any write; a stale digest fails with each type's mismatch text."""
    d1 = api.data("GET", "/nodes/pve1/lxc/102/config")["digest"]
    api.data("PUT", "/nodes/pve1/lxc/102/config", data={"description": "x", "digest": d1})
    d2 = api.data("GET", "/nodes/pve1/lxc/102/config")["digest"]
    assert d1 != d2 and len(d2) == 40
    r = api.put("/nodes/pve1/lxc/102/config", data={"description": "y", "digest": d1})
    assert r.status_code == 500
    assert r.reason == "detected modified configuration - file changed by other user? Try again."
    q = api.data("GET", "/nodes/pve1/qemu/101/config")["digest"]
    api.data("PUT", "/nodes/pve1/qemu/101/config", data={"description": "z"})
    r = api.put("/nodes/pve1/qemu/101/config", data={"description": "w", "digest": q})
    assert r.reason == "checksum mismatch (file change by other user?)"


def test_tags_are_normalised_and_delete_removes_keys(api: Api) -> None:
    """Tags 'B,a' read back 'a;b'; delete=onboot removes the key."""
    api.data("PUT", "/nodes/pve1/lxc/100/config", data={"tags": "B,a"})
    cfg = api.data("GET", "/nodes/pve1/lxc/100/config")
    assert cfg["tags"] == "a;b" and cfg["onboot"] == 1
    api.data("PUT", "/nodes/pve1/lxc/100/config", data={"delete": "onboot"})
    assert "onboot" not in api.data("GET", "/nodes/pve1/lxc/100/config")


def test_per_key_privilege_and_root_only_keys(api: Api) -> None:
    """Config keys need their own privilege group; root-only keys fail like PVE."""
    ro = Api(api.sim, auth="PVEAPIToken=auditor@pve!ro=ro-secret-1")
    assert ro.put("/nodes/pve1/lxc/100/config", data={"memory": "64"}).status_code == 403
    r = api.put("/nodes/pve1/qemu/101/config", data={"args": "-foo"})
    assert (r.status_code, r.reason) == (500, "only root can set 'args' config")
    r = api.put("/nodes/pve1/lxc/100/config", data={"features": "keyctl=1,nesting=1"})
    assert r.status_code == 403
    assert r.reason == ("Permission check failed (changing feature flags (except nesting) is "
                        "only allowed for root@pam)")
    assert api.data("PUT", "/nodes/pve1/lxc/100/config", data={"features": "nesting=1"}) is None


def test_no_options_is_an_error(api: Api) -> None:
    """A config write with nothing to change fails with 'no options specified'."""
    r = api.put("/nodes/pve1/qemu/101/config", data={})
    assert (r.status_code, r.reason) == (500, "no options specified")


def test_unknown_guest_config_is_500_does_not_exist(api: Api) -> None:
    """GET config of a missing guest: 500 with PVE's pmxcfs path in the message."""
    r = api.get("/nodes/pve1/lxc/101/config")
    assert r.status_code == 500
    assert r.reason == "Configuration file 'nodes/pve1/lxc/101.conf' does not exist"
