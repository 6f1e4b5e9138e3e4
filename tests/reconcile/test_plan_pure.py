"""Tests of the pure plan: table cases, the ``--plan --json`` shape, hypothesis properties."""

from __future__ import annotations

import json
from collections.abc import Mapping

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from felhom_agent.core.desired import DesiredState, GuestDesired, GuestType, parse_desired
from felhom_agent.core.normalise import ConfigValue, split_for_write
from felhom_agent.kinds.classify import BENIGN_CONFIG_KEYS
from felhom_agent.planning.plan import (
    Action,
    GuestActual,
    Plan,
    PlanInputError,
    plan,
    render_text,
)
from tests.support.hypo import examples


def never_busy(vmid: int) -> bool:
    """No lane holds work."""
    return False


def guest(vmid: int, gtype: GuestType = "lxc", status: str = "running", **kw: object
          ) -> GuestActual:
    """An actual guest on node pve1 with an empty config by default."""
    kw.setdefault("config", {})
    return GuestActual(vmid, gtype, "pve1", f"g{vmid}", status, **kw)  # type: ignore[arg-type]


def desired(guests: Mapping[str, object], generation: int = 7) -> DesiredState:
    """Parse a desired-state document from its guests member."""
    return parse_desired({"generation": generation, "guests": dict(guests)})


def test_design_example_json_shape() -> None:
    """Plan.to_json() is exactly the ``--plan --json`` document."""
    want = desired({
        "101": {"type": "lxc", "state": "running"},
        "102": {"type": "lxc", "config": {"description": "x"}},
        "103": {"type": "qemu", "state": "stopped"},
        "104": {"type": "qemu", "config": {"memory": 4096}},
    })
    have = [
        guest(101, status="stopped"),
        guest(102, config={"description": "old\n"}),
        guest(103, "qemu", lock="backup"),
        guest(104, "qemu", config={"memory": "2048"}),
    ]
    result = plan(want, have, busy=never_busy)
    expected = (
        '{"generation": 7, "actions": [{"vmid": 101, "kind": "start"}, {"vmid": 102, "kind": '
        '"set_config", "params": {"description": "x"}}], "blocked": [{"vmid": 103, "reason": '
        '"locked: backup"}], "refused": [{"vmid": 104, "kind": "set_config", "reason": '
        '"destructive key: memory"}]}'
    )
    assert json.dumps(result.to_json()) == expected
    assert not result.in_sync


def test_nothing_desired_is_an_empty_plan() -> None:
    """No desired state (EmptyProvider) gives no actions and generation null."""
    result = plan(None, [guest(101)], busy=never_busy)
    assert result == Plan(generation=None)
    assert result.in_sync
    assert result.to_json() == {"generation": None, "actions": [], "blocked": [], "refused": []}


def test_only_guests_in_both_are_planned() -> None:
    """A desired guest missing on PVE, or a PVE guest not desired, gets nothing."""
    want = desired({"101": {"type": "lxc", "state": "running"},
                    "999": {"type": "lxc", "state": "running"}})
    result = plan(want, [guest(101, status="running"), guest(102, status="stopped")],
                  busy=never_busy)
    assert result.in_sync


def test_node_filter_skips_other_nodes() -> None:
    """With node given, a guest on another cluster node is out of scope."""
    want = desired({"101": {"type": "lxc", "state": "running"}})
    other = attrs.evolve(guest(101, status="stopped"), node="pve2")
    assert plan(want, [other], busy=never_busy, node="pve1").in_sync
    assert plan(want, [other], busy=never_busy).actions[0].kind == "start"


def test_stop_action_and_state_none_unmanaged() -> None:
    """state stopped stops a running guest; state absent leaves run state alone."""
    want = desired({"101": {"type": "qemu", "state": "stopped"}, "102": {"type": "qemu"}})
    result = plan(want, [guest(101, "qemu"), guest(102, "qemu", status="stopped")],
                  busy=never_busy)
    assert result.actions == (Action(101, "stop", {}, guest_type="qemu"),)


def test_config_before_start_for_one_guest() -> None:
    """Actions sort by vmid, then kind: set_config lands before start."""
    want = desired({"101": {"type": "lxc", "state": "running", "config": {"onboot": True}}})
    result = plan(want, [guest(101, status="stopped", digest="d1")], busy=never_busy)
    assert [(a.kind, dict(a.params)) for a in result.actions] == [
        ("set_config", {"onboot": 1}), ("start", {})]
    assert result.actions[0].digest == "d1"
    assert result.actions[0].guest_type == "lxc"


def test_pve_round_trip_quirks_are_not_drift() -> None:
    """Trailing newline, 0/1 booleans, numeric strings, tag order, digest: not drift."""
    want = desired({"101": {"type": "lxc", "config": {
        "description": "web", "onboot": True, "tags": "Web,prod", "startup": "1,up=5",
        "cores": 2}}})
    have = guest(101, config={"description": "web\n", "onboot": 1, "tags": "prod;web",
                              "startup": "order=1,up=5", "cores": "2", "digest": "abc"})
    assert plan(want, [have], busy=never_busy).in_sync


def test_default_valued_keys_match_absent_keys() -> None:
    """onboot 0 and an empty description are in sync with keys PVE does not materialise."""
    want = desired({"101": {"type": "lxc", "config": {"onboot": 0, "description": ""}}})
    assert plan(want, [guest(101)], busy=never_busy).in_sync


def test_lock_blocks_and_names_the_lock() -> None:
    """A locked guest with drift is blocked as 'locked: <lock>' and gets no action."""
    want = desired({"101": {"type": "lxc", "state": "stopped"}})
    result = plan(want, [guest(101, lock="snapshot")], busy=never_busy)
    assert result.actions == ()
    assert [b.to_json() for b in result.blocked] == [{"vmid": 101, "reason": "locked: snapshot"}]


def test_locked_guest_in_sync_is_not_reported() -> None:
    """A locked guest with nothing to do is neither blocked nor drift."""
    want = desired({"101": {"type": "lxc", "state": "running"}})
    assert plan(want, [guest(101, lock="backup")], busy=never_busy).in_sync


def test_busy_lane_blocks_and_is_asked_only_when_needed() -> None:
    """A guest whose lane holds work is blocked 'busy'; busy() is consulted only for drift."""
    asked: list[int] = []

    def busy(vmid: int) -> bool:
        asked.append(vmid)
        return vmid == 101

    want = desired({"101": {"type": "lxc", "state": "stopped"},
                    "102": {"type": "lxc", "state": "stopped"},
                    "103": {"type": "lxc", "state": "running"}})
    result = plan(want, [guest(101), guest(102), guest(103)], busy=busy)
    assert [b.to_json() for b in result.blocked] == [{"vmid": 101, "reason": "busy"}]
    assert [a.vmid for a in result.actions] == [102]
    assert asked == [101, 102]


def test_destructive_keys_refused_benign_keys_still_planned() -> None:
    """Non-benign differing keys are refused; differing benign keys are still written."""
    want = desired({"101": {"type": "qemu", "config": {
        "description": "x", "memory": 4096, "cores": 4, "net0": "virtio,bridge=vmbr0"}}})
    have = guest(101, "qemu", config={"memory": "4096", "cores": 2, "net0": "x"})
    result = plan(want, [have], busy=never_busy)
    assert [(a.kind, dict(a.params)) for a in result.actions] == [
        ("set_config", {"description": "x"})]
    assert [r.to_json() for r in result.refused] == [
        {"vmid": 101, "kind": "set_config", "reason": "destructive keys: cores, net0"}]


def test_refusals_are_reported_even_when_locked() -> None:
    """A refusal is a fact about desired state: reported even if the guest is locked."""
    want = desired({"101": {"type": "qemu", "config": {"memory": 1}}})
    result = plan(want, [guest(101, "qemu", lock="backup")], busy=never_busy)
    assert result.blocked == ()
    assert [r.reason for r in result.refused] == ["destructive key: memory"]


def test_type_mismatch_refuses_the_whole_guest() -> None:
    """A desired lxc that is a qemu guest on PVE is refused with kind 'guest', nothing else."""
    want = desired({"101": {"type": "lxc", "state": "stopped", "config": {"onboot": 1}}})
    result = plan(want, [guest(101, "qemu")], busy=never_busy)
    assert result.actions == ()
    assert [r.to_json() for r in result.refused] == [
        {"vmid": 101, "kind": "guest", "reason": "type mismatch: desired lxc, actual qemu"}]


def test_template_cannot_be_started() -> None:
    """Desiring a template to run is refused; its config is still managed."""
    want = desired({"101": {"type": "qemu", "state": "running",
                            "config": {"description": "base"}}})
    result = plan(want, [guest(101, "qemu", status="stopped", template=True)], busy=never_busy)
    assert [a.kind for a in result.actions] == ["set_config"]
    assert [(r.kind, r.reason) for r in result.refused] == [
        ("start", "template cannot be started")]


def test_unknown_status_and_unread_config_block() -> None:
    """State drift on status 'unknown' or desired config without a read config is blocked."""
    want = desired({"101": {"type": "lxc", "state": "running"},
                    "102": {"type": "lxc", "config": {"onboot": 1}}})
    result = plan(want, [guest(101, status="unknown"), guest(102, config=None)],
                  busy=never_busy)
    assert [b.to_json() for b in result.blocked] == [
        {"vmid": 101, "reason": "status unknown"}, {"vmid": 102, "reason": "config not read"}]
    assert result.actions == ()


def test_invalid_desired_value_is_refused_not_raised() -> None:
    """A hand-built desired value that does not normalise is refused; the pass continues."""
    bad = DesiredState(7, {101: GuestDesired(101, "lxc", None, {"onboot": "maybe"}),
                           102: GuestDesired(102, "lxc", "stopped")})
    result = plan(bad, [guest(101), guest(102)], busy=never_busy)
    assert [a.vmid for a in result.actions] == [102]
    assert result.refused[0].reason.startswith("invalid value: onboot")


def test_duplicate_actual_vmid_is_an_input_error() -> None:
    """The same vmid twice in the actual state is refused rather than guessed."""
    with pytest.raises(PlanInputError):
        plan(desired({}), [guest(101), guest(101)], busy=never_busy)


def test_text_rendering() -> None:
    """The text renderer gives a summary line and one line per action, block and refusal."""
    want = desired({"101": {"type": "lxc", "state": "running",
                            "config": {"description": "a\nb", "onboot": 1}},
                    "103": {"type": "lxc", "state": "running"},
                    "104": {"type": "qemu", "config": {"memory": 1}}})
    result = plan(want, [guest(101, status="stopped"), guest(103, status="stopped",
                                                             lock="backup"),
                         guest(104, "qemu")], busy=never_busy)
    assert render_text(result) == (
        "plan for generation 7: 2 action(s), 1 blocked, 1 refused\n"
        "        101  set_config  description=\"a\\nb\", onboot=1\n"
        "        101  start\n"
        "        103  blocked: locked: backup\n"
        "        104  refused set_config: destructive key: memory\n"
    )
    assert render_text(plan(want, [], busy=never_busy)) == "plan for generation 7: in sync\n"
    assert render_text(Plan(None)) == "plan: nothing desired (no desired state)\n"


# --- properties -------------------------------------------------------------------------

_VMIDS = st.integers(100, 130)
_CONFIG: st.SearchStrategy[dict[str, ConfigValue]] = st.fixed_dictionaries({}, optional={
    "description": st.text(alphabet="ab \n", max_size=6),
    "onboot": st.booleans(),
    "tags": st.sampled_from(["a;b", "B,a", "web", ""]),
    "startup": st.sampled_from(["1", "order=2,up=3", ""]),
    "memory": st.integers(16, 20),
    "cores": st.integers(1, 3),
})
_TYPES: st.SearchStrategy[GuestType] = st.sampled_from(["qemu", "lxc"])


@st.composite
def _desired(draw: st.DrawFn) -> DesiredState:
    guests = {}
    for vmid in draw(st.sets(_VMIDS, max_size=6)):
        guests[vmid] = GuestDesired(vmid, draw(_TYPES),
                                    draw(st.sampled_from([None, "running", "stopped"])),
                                    draw(_CONFIG))
    return DesiredState(draw(st.integers(0, 100)), guests)


def _respell(key: str, value: ConfigValue) -> ConfigValue:
    """Another spelling of the same value, as PVE might return it."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return str(value)
    if key == "description" and isinstance(value, str):
        return value + "\n"
    if key == "tags" and isinstance(value, str):
        return ";".join(sorted(value.lower().replace(",", ";").split(";")))
    return value


@st.composite
def _mirror(draw: st.DrawFn, want: DesiredState) -> list[GuestActual]:
    """Actual guests exactly as desired (respelled), with noise that must not matter."""
    out = []
    for vmid, g in want.guests.items():
        config: dict[str, ConfigValue] = {k: _respell(k, v) for k, v in g.config.items()}
        config["digest"] = draw(st.sampled_from(["aa", "bb"]))
        config["extra"] = draw(st.integers())
        status: str = g.state if g.state is not None else draw(
            st.sampled_from(["running", "stopped"]))
        out.append(GuestActual(vmid, g.type, "pve1", "n", status,
                               lock=draw(st.sampled_from([None, "backup"])),
                               template=draw(st.booleans()) and status == "stopped",
                               config=config))
    return out


@settings(max_examples=examples(200))
@given(_desired().flatmap(lambda d: st.tuples(st.just(d), _mirror(d))), st.booleans())
def test_plan_of_x_against_x_is_empty(
    case: tuple[DesiredState, list[GuestActual]], all_busy: bool
) -> None:
    """plan(x, x) is empty after normalisation, whatever locks or lanes say."""
    want, have = case
    result = plan(want, have, busy=lambda vmid: all_busy)
    assert result.in_sync, result


@st.composite
def _actual(draw: st.DrawFn) -> list[GuestActual]:
    out = []
    for vmid in draw(st.sets(_VMIDS, max_size=8)):
        out.append(GuestActual(
            vmid, draw(_TYPES), "pve1", "n",
            draw(st.sampled_from(["running", "stopped", "unknown"])),
            lock=draw(st.sampled_from([None, None, "backup"])),
            template=draw(st.booleans()),
            config=draw(st.none() | _CONFIG),
            digest=draw(st.sampled_from([None, "d"])),
        ))
    return out


_BUSY = st.sets(_VMIDS, max_size=4)


@settings(max_examples=examples(200))
@given(_desired(), _actual().flatmap(lambda a: st.tuples(st.just(a), st.permutations(a))),
       _BUSY)
def test_plan_is_deterministic_under_permutation(
    want: DesiredState, actuals: tuple[list[GuestActual], list[GuestActual]], busy: set[int]
) -> None:
    """The plan does not depend on the order the actual guests are listed in."""
    a, b = actuals
    assert plan(want, a, busy=busy.__contains__) == plan(want, b, busy=busy.__contains__)
    assert plan(want, a, busy=busy.__contains__) == plan(want, list(reversed(b)),
                                                         busy=busy.__contains__)


@settings(max_examples=examples(200))
@given(_desired(), _actual(), _BUSY)
def test_plan_invariants(want: DesiredState, have: list[GuestActual], busy: set[int]) -> None:
    """Sorted, scoped to both sides, benign-only params, no actions for busy/locked guests."""
    result = plan(want, have, busy=busy.__contains__)
    both = set(want.guests) & {g.vmid for g in have}
    locked = {g.vmid for g in have if g.lock}
    keys = [(a.vmid, a.kind) for a in result.actions]
    assert keys == sorted(keys, key=lambda k: (k[0], ["set_config", "start", "stop"].index(
        k[1])))
    assert len(set(keys)) == len(keys)
    for a in result.actions:
        assert a.vmid in both - busy - locked
        assert set(a.params) <= BENIGN_CONFIG_KEYS
        assert (a.kind == "set_config") is bool(a.params)
    blocked = [b.vmid for b in result.blocked]
    assert blocked == sorted(set(blocked))
    assert set(blocked) <= both
    assert not set(blocked) & {a.vmid for a in result.actions}
    assert {r.vmid for r in result.refused} <= both
    json.dumps(result.to_json())


def _apply(have: list[GuestActual], actions: tuple[Action, ...]) -> list[GuestActual]:
    """Execute a plan against a model of PVE (state change, config write with deletes)."""
    by_vmid = {g.vmid: g for g in have}
    for a in actions:
        g = by_vmid[a.vmid]
        if a.kind == "set_config":
            to_set, to_delete = split_for_write(a.params)
            config = {k: v for k, v in (g.config or {}).items() if k not in to_delete}
            config.update(to_set)
            g = attrs.evolve(g, config=config)
        else:
            g = attrs.evolve(g, status="running" if a.kind == "start" else "stopped")
        by_vmid[a.vmid] = g
    return list(by_vmid.values())


@settings(max_examples=examples(200))
@given(_desired(), _actual())
def test_applying_the_plan_converges(want: DesiredState, have: list[GuestActual]) -> None:
    """After applying a plan's actions, re-planning gives no actions (only what was refused)."""
    unlocked = [attrs.evolve(g, lock=None) for g in have]
    first = plan(want, unlocked, busy=never_busy)
    second = plan(want, _apply(unlocked, first.actions), busy=never_busy)
    assert second.actions == ()
    assert second.refused == first.refused
    assert {b.vmid for b in second.blocked} <= {b.vmid for b in first.blocked}
