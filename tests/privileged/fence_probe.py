"""Child-process probe for the runtime half of the fence (run by tests/test_fence.py).

It runs in a fresh interpreter so the packages under test are imported *after* the forbidden
entry points are patched: import-time side effects are covered too, and the parent's module
objects are left alone. Each patched entry point records its use (and raises); the probe prints
one JSON line ``{"calls": [...], "exercised": [...]}`` and the parent asserts ``calls`` is empty.

Modes:
  ``api``            patch process entry points, import every felhom_agent.proxmox module and
                     construct a ProxmoxClient against a dummy pinned https URL.
  ``privileged DIR`` patch HTTP entry points, import every felhom_agent.privileged module and
                     run all operations through a recording runner (fstab files in DIR), the
                     guest socket placement through a recording descriptor runner.
  ``selfcheck-api`` / ``selfcheck-privileged``: patch, then call every patched entry point on
                     purpose, proving the patches catch what they claim to.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import pkgutil
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
CALLS: list[str] = []
_OS_PROCESS = re.compile(r"system|popen|fork|forkpty|exec\w*|spawn\w*|posix_spawn\w*")


def _refuse(name: str) -> Callable[..., Any]:
    def refuse(*_args: object, **_kwargs: object) -> Any:
        CALLS.append(name)
        raise AssertionError(f"fence: {name} was used")

    return refuse


def _patch(owner: Any, attribute: str, name: str) -> Callable[..., Any]:
    setattr(owner, attribute, _refuse(name))
    patched: Callable[..., Any] = getattr(owner, attribute)
    return patched


def patch_process_entry_points() -> list[Callable[..., Any]]:
    """Make every way of starting a process record itself and raise."""
    import multiprocessing
    import pty
    import subprocess

    import paramiko

    patched = [
        _patch(subprocess, "Popen", "subprocess.Popen"),
        _patch(paramiko.SSHClient, "connect", "paramiko.SSHClient.connect"),
        _patch(paramiko.Transport, "start_client", "paramiko.Transport.start_client"),
        _patch(pty, "spawn", "pty.spawn"),
        _patch(pty, "fork", "pty.fork"),
        _patch(multiprocessing.Process, "start", "multiprocessing.Process.start"),
    ]
    for attribute in dir(os):
        if _OS_PROCESS.fullmatch(attribute) and callable(getattr(os, attribute)):
            patched.append(_patch(os, attribute, f"os.{attribute}"))
    return patched


def patch_http_entry_points() -> list[Callable[..., Any]]:
    """Make every way of speaking HTTP (or opening a socket) record itself and raise."""
    import http.client
    import socket
    import urllib.request

    import requests
    import requests.adapters
    import urllib3
    import urllib3.connectionpool

    return [
        _patch(requests.Session, "request", "requests.Session.request"),
        _patch(requests.adapters.HTTPAdapter, "send", "requests.adapters.HTTPAdapter.send"),
        _patch(urllib3.PoolManager, "urlopen", "urllib3.PoolManager.urlopen"),
        _patch(urllib3.connectionpool.HTTPConnectionPool, "urlopen",
               "urllib3.HTTPConnectionPool.urlopen"),
        _patch(http.client.HTTPConnection, "connect", "http.client.HTTPConnection.connect"),
        _patch(urllib.request, "urlopen", "urllib.request.urlopen"),
        _patch(socket, "create_connection", "socket.create_connection"),
        _patch(socket.socket, "connect", "socket.socket.connect"),
    ]


def _import_all(package_name: str) -> list[str]:
    package = importlib.import_module(package_name)
    names = [package_name]
    for info in pkgutil.walk_packages(package.__path__, prefix=package_name + "."):
        importlib.import_module(info.name)
        names.append(info.name)
    return names


def exercise_api() -> list[str]:
    """Import the API side and construct a client (no request is sent)."""
    exercised = [f"import {name}" for name in _import_all("felhom_agent.proxmox")]
    proxmox = importlib.import_module("felhom_agent.proxmox")
    client_cls = getattr(proxmox, "ProxmoxClient", None)
    if client_cls is None:
        return exercised
    from felhom_agent.secret import Secret

    candidates: dict[str, object] = {
        "api_url": "https://127.0.0.1:9", "url": "https://127.0.0.1:9",
        "base_url": "https://127.0.0.1:9", "node": "pve1", "token_id": "felhom@pve!agent",
        "token_secret": Secret("not-a-real-secret"),
        "tls_fingerprint": ":".join(["AB"] * 32), "fingerprint": ":".join(["AB"] * 32),
        "ca_file": None,
    }
    kwargs: dict[str, object] = {}
    for param in inspect.signature(client_cls).parameters.values():
        if param.name in candidates:
            kwargs[param.name] = candidates[param.name]
        elif param.default is inspect.Parameter.empty and param.kind not in (
                param.VAR_KEYWORD, param.VAR_POSITIONAL):
            raise SystemExit(f"ProxmoxClient needs an unknown argument {param.name!r}")
    client = client_cls(**kwargs)
    exercised.append("ProxmoxClient(...)")
    close = getattr(client, "close", None)
    if callable(close):
        close()
    return exercised


def exercise_privileged(workdir: Path) -> list[str]:
    """Import the privileged side and run every operation through a recording runner."""
    exercised = [f"import {name}" for name in _import_all("felhom_agent.privileged")]
    from felhom_agent.privileged import (
        NetSpec,
        PctCreate,
        Privileged,
        SmartRead,
        UsbMount,
        UsbUnmount,
    )
    from tests.privileged.priv_fakes import DATA, RecordingRunner, Scripted

    runner = RecordingRunner(script={
        "smartctl": Scripted(stdout=(DATA / "smartctl_nvme.json").read_bytes(), returncode=4),
        "sensors": Scripted(stdout=(DATA / "sensors.json").read_bytes()),
        "lsblk": Scripted(stdout=b'{"blockdevices": [{"name": "/dev/sdb", "uuid": "0123-ABCD",'
                                 b' "fstype": "vfat"}]}'),
    })
    priv = Privileged(runner, fstab_path=workdir / "fstab")
    priv.create_golden_ct(PctCreate(vmid=101, ostemplate="local:vztmpl/g.tar.zst",
                                    hostname="g1", storage="local-lvm",
                                    net0=NetSpec(bridge="vmbr0")))
    priv.mount_usb(UsbMount(source="UUID=0123-ABCD", mountpoint="/mnt/felhom/usb",
                            fstype="vfat"))
    priv.unmount_usb(UsbUnmount("/mnt/felhom/usb"))
    priv.read_smart(SmartRead("/dev/nvme0"))
    priv.read_sensors()
    exercised += [" ".join(call) for call in runner.calls]
    exercised += _exercise_guest_socket()
    return exercised


def _exercise_guest_socket() -> list[str]:
    """Operation 4 through a recording descriptor runner (its helper is never started)."""
    from felhom_agent.privileged.guestsock import GuestSocketPlacer, PlaceGuestSocket
    from felhom_agent.privileged.runner import RunResult

    calls: list[list[str]] = []

    class RecordingFdRunner:
        def run_with_fds(self, argv: Sequence[str], *, pass_fds: tuple[int, ...],
                         timeout_s: float) -> RunResult:
            calls.append(list(argv))
            return RunResult(tuple(argv), 0, b"", b"")

    read_end, write_end = os.pipe()
    try:
        GuestSocketPlacer(RecordingFdRunner(), python="/usr/bin/python3").place(
            PlaceGuestSocket(vmid=101, pid=4242, start=7, path="/run/felhom/agent.sock"),
            write_end)
    finally:
        os.close(read_end)
        os.close(write_end)
    return [" ".join([Path(argv[3]).name, *argv[4:]]) for argv in calls]


def main(argv: list[str]) -> int:
    """Run one probe mode; print the JSON result line."""
    sys.path.insert(0, str(REPO))
    mode = argv[0]
    exercised: list[str] = []
    if mode in ("api", "selfcheck-api"):
        patched = patch_process_entry_points()
        if mode == "api":
            exercised = exercise_api()
    elif mode in ("privileged", "selfcheck-privileged"):
        patched = patch_http_entry_points()
        if mode == "privileged":
            exercised = exercise_privileged(Path(argv[1]))
    else:
        raise SystemExit(f"unknown mode {mode}")
    if mode.startswith("selfcheck"):
        for entry in patched:
            try:
                entry()
            except AssertionError:
                exercised.append("refused")
    print(json.dumps({"calls": CALLS, "exercised": exercised}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
