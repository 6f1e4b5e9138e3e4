"""Fake host tools on ``PATH``: smartctl, sensors, mount, umount, findmnt and lsblk.

:class:`FakeHost` writes one small executable per tool into ``<dir>/bin``; put that directory
first on the ``PATH`` of the code under test (a :class:`~felhom_agent.privileged.LocalRunner`
with ``path=``, or the daemon's environment). Every run of a tool appends its argv and pid to
``<dir>/state/calls.jsonl`` and answers from the host described in ``<dir>/state/host.json``:

* the output formats are the tools' documented ones -- smartmontools' ``--json`` (the captured
  documents in ``tests/privileged/data`` with the device, argv, exit status, health and
  temperature of the asked disk filled in), lm-sensors' ``-j``, util-linux's ``--json`` of
  ``findmnt`` and ``lsblk`` (an object with ``filesystems``/``blockdevices``, one object per row
  keyed by the lower-cased column names, nested rows under ``children``) -- and their exit
  statuses: ``findmnt`` 1 with no output when nothing is found, ``mount``/``umount`` 32 with
  the real tools' messages on a failure, ``smartctl``'s bit mask;
* ``mount``/``umount`` keep a mount table in ``/proc/self/mounts`` format
  (``<dir>/state/mounts``) that ``findmnt`` reads and that the PVE simulator can be pointed at
  (its ``mounts_file``), so a storage with ``is_mountpoint`` goes active when the fake disk is
  mounted;
* a tool named in ``hang`` sleeps (until killed, or :data:`HANG_S`); one named in ``fail``
  exits with the given status and message; :meth:`FakeHost.remove` takes a tool off ``PATH``.

Nothing here parses the product's output or imports its parsers: the answers are built from
the documented formats only.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["DATA", "HANG_S", "TOOLS", "FakeHost", "main"]

REPO = Path(__file__).resolve().parents[2]
DATA = Path(__file__).resolve().parent / "data"
TOOLS = ("smartctl", "sensors", "mount", "umount", "findmnt", "lsblk")
#: How long a "hanging" tool sleeps at most when nobody kills it.
HANG_S = 120.0

_LAUNCHER = """#!{python}
import sys
sys.path.insert(0, {repo!r})
from tests.privileged.fakehost import main
sys.exit(main({tool!r}, {state!r}, sys.argv))
"""


class FakeHost:
    """A scratch host: tools in ``bin``, their state in ``state``.

    Args:
        root: a scratch directory.
        host: the initial ``host.json``: ``devices`` (``[{"disk", "name", "uuid",
            "fstype"}]``), ``smart`` (devpath -> ``{"template", "exit", "passed",
            "temperature"}``), ``hang`` (tool names), ``fail`` (tool -> ``[status, message]``),
            ``busy`` (mount points ``umount`` refuses).
    """

    def __init__(self, root: Path, host: Mapping[str, Any] | None = None) -> None:
        self.root = root
        self.bin = root / "bin"
        self.state = root / "state"
        self.bin.mkdir(parents=True, exist_ok=True)
        self.state.mkdir(parents=True, exist_ok=True)
        self.mounts.touch()
        self.write_host(dict(host or {}))
        # mkdir is the real one (it creates the scratch mount point); nothing else of the
        # system is on this PATH, so a tool taken off it is really missing.
        (self.bin / "mkdir").symlink_to(shutil.which("mkdir") or "/bin/mkdir")
        for tool in TOOLS:
            path = self.bin / tool
            path.write_text(_LAUNCHER.format(python=sys.executable, repo=str(REPO), tool=tool,
                                             state=str(self.state)))
            path.chmod(0o755)

    @property
    def mounts(self) -> Path:
        """The fake mount table (``/proc/self/mounts`` format)."""
        return self.state / "mounts"

    @property
    def path(self) -> str:
        """A ``PATH`` holding the fake tools and the real ``mkdir``, nothing else."""
        return str(self.bin)

    def host(self) -> dict[str, Any]:
        """The current ``host.json``."""
        data: dict[str, Any] = json.loads((self.state / "host.json").read_text())
        return data

    def write_host(self, host: Mapping[str, Any]) -> None:
        """Replace ``host.json`` (atomically: a tool running now reads the old or the new)."""
        tmp = self.state / "host.json.tmp"
        tmp.write_text(json.dumps(host))
        os.replace(tmp, self.state / "host.json")

    def update(self, **changes: Any) -> None:
        """Change some top-level members of ``host.json``."""
        self.write_host({**self.host(), **changes})

    def remove(self, tool: str) -> None:
        """Take ``tool`` off ``PATH`` (the "not installed" case)."""
        (self.bin / tool).unlink()

    def calls(self, tool: str | None = None) -> list[list[str]]:
        """The argv of every run so far (of ``tool`` only, when given), in order."""
        log = self.state / "calls.jsonl"
        if not log.exists():
            return []
        rows = [json.loads(line) for line in log.read_text().splitlines() if line]
        return [r["argv"] for r in rows if tool is None or r["argv"][0] == tool]

    def pids(self, tool: str) -> list[int]:
        """The process ids of every run of ``tool`` (to end a hanging one after a test)."""
        log = self.state / "calls.jsonl"
        if not log.exists():
            return []
        rows = [json.loads(line) for line in log.read_text().splitlines() if line]
        return [int(r["pid"]) for r in rows if r["argv"][0] == tool]

    def mounted(self) -> list[tuple[str, str]]:
        """``(source, target)`` of every fake mount."""
        return [(p[0], p[1]) for p in (line.split() for line in self.mounts.read_text()
                                       .splitlines()) if len(p) >= 2]


# -- the tools (run as separate processes through the launchers) --------------------------------


def _record(state: Path, argv: Sequence[str]) -> None:
    with open(state / "calls.jsonl", "a", encoding="utf-8") as log:
        fcntl.flock(log, fcntl.LOCK_EX)
        log.write(json.dumps({"argv": list(argv), "pid": os.getpid()}) + "\n")


def _mount_rows(state: Path) -> list[list[str]]:
    with open(state / "mounts", encoding="utf-8") as table:
        return [line.split() for line in table if line.strip()]


def _write_mounts(state: Path, rows: Sequence[Sequence[str]]) -> None:
    tmp = state / "mounts.tmp"
    tmp.write_text("".join(" ".join(r) + "\n" for r in rows))
    os.replace(tmp, state / "mounts")


def _device(host: Mapping[str, Any], source: str) -> Mapping[str, Any] | None:
    for dev in host.get("devices", ()):
        if source in (f"UUID={dev['uuid']}", dev["name"]):
            return dev  # type: ignore[no-any-return]
    return None


def _after(argv: Sequence[str], flag: str) -> str | None:
    return argv[argv.index(flag) + 1] if flag in argv else None


def _mount(state: Path, host: Mapping[str, Any], argv: Sequence[str]) -> int:
    source, target = argv[-2], argv[-1]
    fstype, options = _after(argv, "-t"), _after(argv, "-o") or "defaults"
    dev = _device(host, source)
    if dev is None:
        print(f"mount: {target}: can't find {source}.", file=sys.stderr)
        return 32
    if not os.path.isdir(target):
        print(f"mount: {target}: mount point does not exist.", file=sys.stderr)
        return 32
    rows = _mount_rows(state)
    if any(r[1] == target for r in rows):
        print(f"mount: {target}: {dev['name']} already mounted on {target}.", file=sys.stderr)
        return 32
    if fstype is not None and fstype != dev["fstype"]:
        print(f"mount: {target}: wrong fs type, bad option, bad superblock on {dev['name']}, "
              "missing codepage or helper program, or other error.", file=sys.stderr)
        return 32
    kernel_opts = "rw," + ",".join(o for o in options.split(",")
                                   if o in ("noatime", "nodev", "nosuid", "noexec"))
    rows.append([dev["name"], target, dev["fstype"], kernel_opts, "0", "0"])
    _write_mounts(state, rows)
    return 0


def _umount(state: Path, host: Mapping[str, Any], argv: Sequence[str]) -> int:
    target = argv[-1]
    rows = _mount_rows(state)
    if not any(r[1] == target for r in rows):
        print(f"umount: {target}: not mounted.", file=sys.stderr)
        return 32
    if target in host.get("busy", ()):
        print(f"umount: {target}: target is busy.", file=sys.stderr)
        return 32
    _write_mounts(state, [r for r in rows if r[1] != target])
    return 0


def _findmnt(state: Path, host: Mapping[str, Any], argv: Sequence[str]) -> int:
    target = _after(argv, "--mountpoint")
    columns = (_after(argv, "--output") or "TARGET,SOURCE,FSTYPE,OPTIONS").lower().split(",")
    found = []
    for source, mp, fstype, options, *_ in _mount_rows(state):
        if target is not None and mp != target:
            continue
        dev = _device(host, source) or {}
        row = {"target": mp, "source": source, "fstype": fstype, "options": options,
               "uuid": dev.get("uuid")}
        found.append({c: row.get(c) for c in columns})
    if not found:
        return 1
    print(json.dumps({"filesystems": found}, indent=3))
    return 0


def _lsblk(host: Mapping[str, Any], argv: Sequence[str]) -> int:
    columns = (_after(argv, "--output") or "NAME").lower().split(",")
    disks: dict[str, list[dict[str, Any]]] = {}
    for dev in host.get("devices", ()):
        row = {"name": dev["name"], "uuid": dev["uuid"], "fstype": dev["fstype"]}
        disks.setdefault(dev["disk"], []).append({c: row.get(c) for c in columns})
    out = []
    for disk, parts in disks.items():
        top: dict[str, Any] = {c: {"name": disk}.get(c) for c in columns}
        top["children"] = parts
        out.append(top)
    print(json.dumps({"blockdevices": out}, indent=3))
    return 0


def _smartctl(host: Mapping[str, Any], argv: Sequence[str]) -> int:
    device = argv[-1]
    spec = host.get("smart", {}).get(device)
    if spec is None:
        doc = json.loads((DATA / "smartctl_open_failed.json").read_text())
        doc["smartctl"]["messages"] = [{"string": f"Smartctl open device: {device} failed: "
                                                  "No such device", "severity": "error"}]
        status = 2
    else:
        doc = json.loads((DATA / spec.get("template", "smartctl_ata.json")).read_text())
        status = int(spec.get("exit", 0))
        if "passed" in spec:
            doc["smart_status"]["passed"] = spec["passed"]
        if "temperature" in spec:
            doc["temperature"] = {"current": spec["temperature"]}
            if "nvme_smart_health_information_log" in doc:
                doc["nvme_smart_health_information_log"]["temperature"] = spec["temperature"]
    doc["device"]["name"] = device
    doc["smartctl"]["argv"] = list(argv)
    doc["smartctl"]["exit_status"] = status
    print(json.dumps(doc, indent=2))
    return status


def main(tool: str, state_dir: str, argv: Sequence[str]) -> int:
    """One run of fake ``tool`` with ``argv`` (``argv[0]`` is the launcher's path)."""
    state = Path(state_dir)
    args = [tool, *argv[1:]]
    _record(state, args)
    host: dict[str, Any] = json.loads((state / "host.json").read_text())
    if tool in host.get("hang", ()):
        time.sleep(HANG_S)
        return 0
    failure = host.get("fail", {}).get(tool)
    if failure is not None:
        print(failure[1], file=sys.stderr)
        return int(failure[0])
    if tool == "mount":
        return _mount(state, host, args)
    if tool == "umount":
        return _umount(state, host, args)
    if tool == "findmnt":
        return _findmnt(state, host, args)
    if tool == "lsblk":
        return _lsblk(host, args)
    if tool == "smartctl":
        return _smartctl(host, args)
    if tool == "sensors":
        print((DATA / "sensors.json").read_text())
        return 0
    print(f"{tool}: not faked", file=sys.stderr)
    return 127
