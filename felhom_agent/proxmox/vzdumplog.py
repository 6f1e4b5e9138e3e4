"""Reading a vzdump task log: which guest failed and why (the UPID alone cannot say).

A vzdump task reports per guest ``INFO: Starting Backup of VM <vmid> (<qemu|lxc>)`` and then
either ``INFO: Finished Backup of VM <vmid> (HH:MM:SS)`` or ``ERROR: Backup of VM <vmid>
failed - <reason>`` (also for containers: vzdump always says "VM"); a job-level failure is
``ERROR: Backup job failed - <reason>``; warnings are ``WARN: ...`` lines; the last line is
``TASK OK``, ``TASK WARNINGS: n`` or ``TASK ERROR: <text>`` (``job errors`` when a guest
failed). :func:`parse_vzdump_log` is pure: give it the lines, test it by calling it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

import attrs

__all__ = ["GuestBackupLine", "VzdumpLog", "parse_vzdump_log"]

_START_RE = re.compile(r"^INFO: Starting Backup of VM (\d+) \((\w+)\)$")
_DONE_RE = re.compile(r"^INFO: Finished Backup of VM (\d+) \((\d+):(\d\d):(\d\d)\)$")
_FAIL_RE = re.compile(r"^ERROR: Backup of VM (\d+) failed - (.*)$")
_JOB_FAIL_RE = re.compile(r"^ERROR: Backup job failed - (.*)$")
_TASK_ERROR_RE = re.compile(r"^TASK ERROR: (.*)$")


@attrs.frozen
class GuestBackupLine:
    """One guest's result as the log tells it: ``ok`` with its duration, or the error."""

    vmid: int
    guest_type: str | None
    ok: bool
    error: str | None
    duration_s: int | None


@attrs.frozen(hash=False)
class VzdumpLog:
    """What a (tail of a) vzdump log says."""

    guests: Mapping[int, GuestBackupLine]
    job_error: str | None
    task_error: str | None
    warnings: tuple[str, ...]

    def error_for(self, vmid: int) -> str | None:
        """The reason ``vmid`` failed: its own ``ERROR:`` line, else the job's failure, else
        the task's error line; None when the log shows no failure."""
        line = self.guests.get(vmid)
        if line is not None and line.error is not None:
            return line.error
        return self.job_error or self.task_error


def parse_vzdump_log(lines: Iterable[str]) -> VzdumpLog:
    """Parse vzdump log lines (a tail is fine: what is missing is simply absent)."""
    types: dict[int, str] = {}
    guests: dict[int, GuestBackupLine] = {}
    job_error = task_error = None
    warnings: list[str] = []
    for raw in lines:
        line = raw.rstrip("\n")
        if m := _START_RE.match(line):
            types[int(m[1])] = m[2]
        elif m := _DONE_RE.match(line):
            vmid = int(m[1])
            secs = int(m[2]) * 3600 + int(m[3]) * 60 + int(m[4])
            guests[vmid] = GuestBackupLine(vmid, types.get(vmid), True, None, secs)
        elif m := _FAIL_RE.match(line):
            vmid = int(m[1])
            guests[vmid] = GuestBackupLine(vmid, types.get(vmid), False, m[2].strip(), None)
        elif m := _JOB_FAIL_RE.match(line):
            job_error = m[1].strip()
        elif m := _TASK_ERROR_RE.match(line):
            task_error = m[1].strip()
        elif line.startswith("WARN: "):
            warnings.append(line[6:])
    return VzdumpLog(guests=guests, job_error=job_error, task_error=task_error,
                     warnings=tuple(warnings))
