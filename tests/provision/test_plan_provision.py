"""The provision part of the pure plan: each local limit refuses with its rule, the count
holds within one pass, a busy target is never planned twice, an existing vmid never is a
target, and the ``--plan`` renderings show it all."""

from __future__ import annotations

from typing import Any

import pytest

from felhom_agent.core.desired import DesiredStateError, parse_desired
from felhom_agent.core.provision import ProvisionLimits, SourceRule
from felhom_agent.planning.plan import GuestActual, plan, render_text
from tests.provision.helpers import LIMITS, LXC_TEMPLATE, QEMU_TEMPLATE, block, desired

NODE = "pve1"
TEMPLATES = (GuestActual(LXC_TEMPLATE, "lxc", NODE, "golden", "stopped", template=True),
             GuestActual(QEMU_TEMPLATE, "qemu", NODE, "vm-golden", "stopped", template=True))
ARCHIVE = "local:backup/vzdump-lxc-9500-2026_01_01-00_00_00.tar.zst"


def never(_vmid: int) -> bool:
    return False


def run(guests: dict[str, Any], actual: tuple[GuestActual, ...] = TEMPLATES, *,
        limits: ProvisionLimits = LIMITS, busy: Any = never) -> dict[str, Any]:
    return plan(desired(3, guests), actual, busy=busy, node=NODE, provision=limits).to_json()


def test_inside_the_limits_a_provision_action_with_the_default_pool() -> None:
    """Template and archive sources inside the limits become provision actions; the pool is
    the block's, else provision.pool."""
    limits = ProvisionLimits(vmid_min=1000, vmid_max=1999, max_guests=5,
                             allowed=(*LIMITS.allowed, SourceRule(archive="local:backup/*")),
                             pool="customers")
    doc = run({"1001": {"type": "lxc", "state": "running",
                        "provision": block(LXC_TEMPLATE, "c42-web", pool="felhom")},
               "1002": {"type": "qemu", "provision": block(QEMU_TEMPLATE, "vm2")},
               "1003": {"type": "lxc", "provision": block(ARCHIVE, "g3", storage="local-lvm")}},
              limits=limits)
    assert doc["actions"] == [
        {"vmid": 1001, "kind": "provision", "params": {
            "name": "c42-web", "pool": "felhom", "storage": "local-lvm", "template": 9000}},
        {"vmid": 1002, "kind": "provision", "params": {
            "name": "vm2", "pool": "customers", "storage": "local-lvm", "template": 9001}},
        {"vmid": 1003, "kind": "provision", "params": {
            "archive": ARCHIVE, "name": "g3", "pool": "customers", "storage": "local-lvm"}}]
    assert doc["refused"] == [] and doc["blocked"] == []


@pytest.mark.parametrize(("vmid", "guest", "limits", "reason"), [
    ("999", {"type": "lxc", "provision": block(LXC_TEMPLATE, "a")}, LIMITS,
     "provision.vmid_min/vmid_max: vmid 999 is outside 1000..1999"),
    ("2000", {"type": "lxc", "provision": block(LXC_TEMPLATE, "a")}, LIMITS,
     "provision.vmid_min/vmid_max: vmid 2000 is outside 1000..1999"),
    ("1001", {"type": "lxc", "provision": block(LXC_TEMPLATE, "a")},
     ProvisionLimits(allowed=(SourceRule(template=QEMU_TEMPLATE),)),
     "provision.allowed_sources: template 9000 is not allowed"),
    ("1001", {"type": "lxc", "provision": block(ARCHIVE, "a")},
     ProvisionLimits(allowed=(SourceRule(archive="pbs1:backup/ct/9500/*"),)),
     f"provision.allowed_sources: archive {ARCHIVE} is not allowed"),
    ("1001", {"type": "lxc", "provision": block(ARCHIVE, "a")},
     ProvisionLimits(max_guests=0, allowed=(SourceRule(archive="local:backup/*-lxc-9500-*"),)),
     "provision.max_guests: the node holds 0 guest(s) in 1000..1999 (limit 0)"),
    ("1001", {"type": "qemu", "provision": block(LXC_TEMPLATE, "a")}, LIMITS,
     "source template 9000 is lxc, the desired guest is qemu"),
    ("1001", {"type": "qemu", "provision": block(ARCHIVE, "a")},
     ProvisionLimits(allowed=(SourceRule(archive="local:*"),)),
     f"archive {ARCHIVE} is a lxc backup, the desired guest is qemu"),
    ("1001", {"type": "lxc", "provision": block(8000, "a")},
     ProvisionLimits(allowed=(SourceRule(template=8000),)),
     "source template 8000 is not a guest on node pve1 (or the token cannot see it: "
     "VM.Audit)"),
    ("1001", {"type": "lxc", "provision": block(100, "a")},
     ProvisionLimits(allowed=(SourceRule(template=100),)), "source 100 is not a template"),
])
def test_outside_the_limits_refused_naming_the_rule(vmid: str, guest: dict[str, Any],
                                                    limits: ProvisionLimits, reason: str) -> None:
    """Each rule refuses on its own, the first failing rule names itself; nothing planned."""
    actual = (*TEMPLATES, GuestActual(100, "lxc", NODE, "web", "running"))
    doc = run({vmid: guest}, actual, limits=limits)
    assert doc["actions"] == []
    assert doc["refused"] == [{"vmid": int(vmid), "kind": "provision", "reason": reason}]


def test_max_guests_counts_existing_queued_and_planned() -> None:
    """Existing guests in the range, provisions still queued, and those planned earlier in
    this pass all count; a guest outside the range does not."""
    limits = ProvisionLimits(max_guests=4, allowed=LIMITS.allowed)
    actual = (*TEMPLATES, GuestActual(1000, "lxc", NODE, "a", "running"),
              GuestActual(2500, "lxc", NODE, "outside", "running"))
    guests = {str(v): {"type": "lxc", "provision": block(LXC_TEMPLATE, f"g{v}")}
              for v in (1001, 1002, 1003, 1004)}
    doc = run(guests, actual, limits=limits, busy=lambda v: v == 1001)
    assert [a["vmid"] for a in doc["actions"]] == [1002, 1003]
    assert doc["blocked"] == [{"vmid": 1001, "reason": "busy"}]
    assert doc["refused"] == [{"vmid": 1004, "kind": "provision", "reason":
                               "provision.max_guests: the node holds 4 guest(s) in "
                               "1000..1999 (limit 4)"}]


def test_an_existing_vmid_is_never_a_target() -> None:
    """A desired guest that exists (here or on another node) is reconciled as usual, never
    provisioned over; a guest that exists is planned like any other."""
    actual = (*TEMPLATES, GuestActual(1001, "lxc", NODE, "c42", "stopped"),
              GuestActual(1002, "lxc", "pve2", "elsewhere", "stopped"))
    doc = run({"1001": {"type": "lxc", "state": "running",
                        "provision": block(LXC_TEMPLATE, "c42")},
               "1002": {"type": "lxc", "provision": block(LXC_TEMPLATE, "x")}}, actual)
    assert doc["actions"] == [{"vmid": 1001, "kind": "start"}]
    assert doc["refused"] == []


def test_without_limits_or_block_nothing_is_created() -> None:
    """A desired guest that does not exist and has no provision block is left alone, and
    without limits (a caller that does not provision) so is one with a block."""
    guests = {"1001": {"type": "lxc", "state": "running"},
              "1002": {"type": "lxc", "provision": block(LXC_TEMPLATE, "x")}}
    assert run(guests)["actions"] == [{"vmid": 1002, "kind": "provision", "params": {
        "name": "x", "storage": "local-lvm", "template": 9000}}]
    assert plan(desired(1, guests), TEMPLATES, busy=never, node=NODE).in_sync


def test_plan_text_shows_actions_and_refusals() -> None:
    """``--plan`` text: the provision action with its params and each refusal with its rule."""
    result = plan(desired(3, {"1001": {"type": "lxc", "provision": block(LXC_TEMPLATE, "w")},
                              "3000": {"type": "lxc", "provision": block(LXC_TEMPLATE, "x")}}),
                  TEMPLATES, busy=never, node=NODE, provision=LIMITS)
    text = render_text(result)
    assert "plan for generation 3: 1 action(s), 0 blocked, 1 refused" in text
    assert ('     1001  provision  name="w", storage="local-lvm", template=9000' in text)
    assert ("     3000  refused provision: provision.vmid_min/vmid_max: vmid 3000 is outside "
            "1000..1999") in text


@pytest.mark.parametrize(("block_doc", "message"), [
    ({"from": {"template": 9000}, "name": "a", "storage": "local-lvm", "extra": 1},
     "guests.1001.provision.extra: unknown field (allowed: from, name, storage, pool)"),
    ({"from": {}, "name": "a", "storage": "local-lvm"},
     'guests.1001.provision.from: must name exactly one source'),
    ({"from": {"template": True}, "name": "a", "storage": "local-lvm"},
     "guests.1001.provision.from.template: must be a vmid"),
    ({"from": {"archive": "local:iso/x.iso"}, "name": "a", "storage": "local-lvm"},
     "guests.1001.provision.from.archive: must be a backup volume id"),
    ({"from": {"template": 9000}, "name": "-bad", "storage": "local-lvm"},
     "guests.1001.provision.name: must be a DNS name"),
    ({"from": {"template": 9000}, "name": "a", "storage": "x"},
     "guests.1001.provision.storage: must be"),
    ({"from": {"template": 9000}, "name": "a", "storage": "local-lvm", "pool": "a b"},
     "guests.1001.provision.pool: must be a PVE pool id"),
    ({"from": {"template": 9000}, "storage": "local-lvm"},
     "guests.1001.provision.name: required"),
])
def test_the_block_is_parsed_strictly(block_doc: dict[str, Any], message: str) -> None:
    """A malformed provision block rejects the document with the value's path."""
    with pytest.raises(DesiredStateError) as err:
        parse_desired({"generation": 1, "guests": {"1001": {"type": "lxc",
                                                            "provision": block_doc}}})
    assert str(err.value).startswith(message)


def test_the_block_round_trips() -> None:
    """to_json and parse agree."""
    doc = {"generation": 1, "guests": {"1001": {"type": "lxc", "state": "running", "provision": {
        "from": {"archive": ARCHIVE}, "name": "a.example", "storage": "local-lvm",
        "pool": "felhom"}}}}
    assert parse_desired(doc).to_json() == doc
