"""Two planner rules: a storage's own retention is refused; a failed backup waits to retry."""

from __future__ import annotations

import datetime as dt

import pytest

from felhom_agent.backup.due import DueState, due_state
from felhom_agent.core.backup_policy import BackupPolicy
from felhom_agent.planning.backups import (
    RETRY_MAX_S,
    RETRY_MIN_S,
    failed_recently,
    own_retention,
)
from felhom_agent.proxmox.backup_models import StorageConfig
from felhom_agent.proxmox.models import TaskEntry

NOW = 1_800_000_000.0


def _cfg(prune: str | None) -> StorageConfig:
    data = {"storage": "local", "type": "dir", "content": "backup,iso"}
    if prune is not None:
        data["prune-backups"] = prune
    return StorageConfig.from_api(data)


@pytest.mark.parametrize("prune", [None, "keep-all=1"])
def test_a_storage_that_keeps_everything_is_fine(prune: str | None) -> None:
    """No retention of its own (or keep-all): the policy's keep decides."""
    assert own_retention([_cfg(prune)], "local") is None


def test_a_storage_with_its_own_retention_is_refused_with_the_fix() -> None:
    """vzdump would prune by it without the dry run and the min_keep floor."""
    reason = own_retention([_cfg("keep-last=1")], "local")
    assert reason is not None
    assert "keep-last=1" in reason and "backup.min_keep" in reason and "keep-all=1" in reason


def _task(status: str | None, end: float | None) -> TaskEntry:
    return TaskEntry(upid=f"UPID:pve1:00000001:00000001:{int(NOW - 900):08X}:vzdump:100:a@pve!x:",
                     node="pve1", type="vzdump", id="100", user="a@pve!x", tokenid=None,
                     starttime=int(NOW - 900), endtime=None if end is None else int(end),
                     status=status)


def _due(every_h: float = 24.0) -> tuple[BackupPolicy, DueState]:
    policy = BackupPolicy(storage="local", every_h=every_h)
    return policy, due_state(policy, vmid=100, guest_type="lxc", volumes=(), now=NOW,
                             tz=dt.UTC)


def test_a_failed_backup_waits_then_is_retried() -> None:
    """A failure 5 minutes ago holds the next try; after the wait it is allowed again."""
    policy, due = _due()
    failed = [_task("job errors", NOW - 300)]
    reason = failed_recently(failed, 100, due, now=NOW, every_s=policy.every_s)
    assert reason is not None and "job errors" in reason and "next try in" in reason
    later = NOW - 300 + RETRY_MAX_S + 1
    assert failed_recently(failed, 100, due, now=later, every_s=policy.every_s) is None


@pytest.mark.parametrize("every_h", [0.5, 24.0, 24 * 30])
def test_the_wait_is_a_sixth_of_every_h_within_bounds(every_h: float) -> None:
    """every_h / 6, never under 10 minutes nor over an hour."""
    policy, due = _due(every_h)
    wait = min(RETRY_MAX_S, max(RETRY_MIN_S, policy.every_s / 6))
    task = [_task("job errors", NOW)]
    assert failed_recently(task, 100, due, now=NOW + wait - 1, every_s=policy.every_s)
    assert failed_recently(task, 100, due, now=NOW + wait, every_s=policy.every_s) is None


@pytest.mark.parametrize("status", ["OK", "WARNINGS: 2"])
def test_a_successful_or_running_task_never_holds_a_backup(status: str) -> None:
    """Only a finished, failed task makes a backup wait."""
    policy, due = _due()
    assert failed_recently([_task(status, NOW - 10)], 100, due, now=NOW,
                           every_s=policy.every_s) is None
    assert failed_recently([_task(None, None)], 100, due, now=NOW,
                           every_s=policy.every_s) is None
