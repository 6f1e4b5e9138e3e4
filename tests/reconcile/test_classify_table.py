"""Table tests for the benign/destructive classifier.

See ``docs/architecture.md`` ("Classes and the reversibility gate").
"""

from __future__ import annotations

import pytest

from felhom_agent.kinds.classify import (
    BENIGN_CONFIG_KEYS,
    Reversibility,
    Safety,
    classify,
    classify_action,
    classify_op,
    destructive_keys,
)
from felhom_agent.kinds.registry import REGISTRY, SIGNED_KINDS

B, D = Safety.BENIGN, Safety.DESTRUCTIVE
NONE, SNAP, IRREV = Reversibility.NONE_NEEDED, Reversibility.SNAPSHOT, Reversibility.IRREVERSIBLE

EXPECTED = [
    ("start", B, NONE),
    ("stop", B, NONE),
    ("set_config", B, NONE),
    ("guest.start", B, NONE),
    ("guest.stop", B, NONE),
    ("guest.shutdown", B, NONE),
    ("guest.snapshot", B, NONE),
    ("guest.set_config", B, NONE),
    ("guest.rollback", D, SNAP),
    ("guest.delete_snapshot", D, IRREV),
    ("guest.destroy", D, IRREV),
    ("backup", B, NONE),
    ("prune", B, NONE),
    ("guest.backup", B, NONE),
    ("backup.delete", D, IRREV),
    ("backup.protect", D, Reversibility.INVERTIBLE),
    ("guestapi.enable", D, SNAP),
    ("guest.restore", D, Reversibility.SAFETY_BACKUP),
    ("host.mount_usb", B, NONE),
    ("host.unmount_usb", D, Reversibility.INVERTIBLE),
    ("provision", B, NONE),
    ("guest.provision", B, NONE),
    ("guest.create_golden", B, NONE),
]


@pytest.mark.parametrize(("kind", "safety", "rev"), EXPECTED)
def test_kind_table(kind: str, safety: Safety, rev: Reversibility) -> None:
    """Each action and op kind has its documented class and reversibility treatment."""
    verdict = classify(kind)
    assert (verdict.kind, verdict.safety, verdict.reversibility) == (kind, safety, rev)
    assert verdict.benign is (safety is B)
    assert (verdict.reason == "") is (safety is B)


def test_table_covers_exactly_the_design_kinds() -> None:
    """The registry holds the six plan actions and the signed op kinds, nothing else."""
    plan = {k.name for k in REGISTRY.values() if k.plan_action}
    assert plan | SIGNED_KINDS == {k for k, _, _ in EXPECTED}


def test_destructive_kind_reason_names_the_kind() -> None:
    """A destructive kind's reason says which kind it is."""
    assert classify_op("guest.rollback").reason == "destructive kind: guest.rollback"


def test_benign_config_keys_are_the_four_of_the_design() -> None:
    """Only description, tags, onboot and startup are benign config keys."""
    assert frozenset({"description", "tags", "onboot", "startup"}) == BENIGN_CONFIG_KEYS


@pytest.mark.parametrize("kind", ["set_config", "guest.set_config"])
def test_config_write_with_only_benign_keys_is_benign(kind: str) -> None:
    """A config write touching only benign keys is benign."""
    verdict = classify(kind, config_keys=["description", "tags", "onboot", "startup"])
    assert verdict.safety is B
    assert verdict.reversibility is NONE


def test_one_destructive_key_makes_the_write_destructive() -> None:
    """A single non-benign key makes the whole config write destructive, snapshot-gated."""
    verdict = classify_action("set_config", {"description": "x", "memory": 4096})
    assert verdict.safety is D
    assert verdict.reversibility is SNAP
    assert verdict.reason == "destructive key: memory"


def test_several_destructive_keys_are_listed_sorted() -> None:
    """Several non-benign keys are named sorted and de-duplicated in the reason."""
    verdict = classify_op("guest.set_config", config_keys=["net0", "cores", "net0", "tags"])
    assert verdict.reason == "destructive keys: cores, net0"
    assert destructive_keys(["net0", "cores", "net0", "tags"]) == ("cores", "net0")


def test_empty_config_write_is_benign() -> None:
    """A config write with no keys has nothing destructive in it."""
    assert classify_action("set_config", {}).benign
    assert classify_action("set_config").benign


def test_unknown_kind_is_refused_as_irreversible() -> None:
    """An unknown kind is destructive and irreversible: refuse rather than guess."""
    verdict = classify("guest.frobnicate")
    assert (verdict.safety, verdict.reversibility) == (D, IRREV)
    assert verdict.reason == "unknown kind: guest.frobnicate"


def test_config_keys_do_not_soften_other_kinds() -> None:
    """Benign config keys passed with a destructive kind do not change its class."""
    assert classify("guest.destroy", config_keys=["description"]).safety is D
    assert classify("start", config_keys=["memory"]).safety is B
