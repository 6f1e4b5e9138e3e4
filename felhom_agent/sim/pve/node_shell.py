"""The node's root shell, for the one command the agent runs there: ``pct create``.

On a real node ``pct create`` runs the create code as ``root@pam`` (the CLI's environment), so
every root-only branch passes -- notably ``features: keyctl=1``, which no API token may set.
:func:`pct` emulates that command against the simulated node: the same checks the API's
create makes about the vmid, the template volume and the storage, but no permission check,
synchronous (``pct`` waits for its worker), and the exit status and stderr text of the CLI.

Only ``pct create VMID OSTEMPLATE [--option value]...`` is understood; anything else exits 255
with ``pct``'s usage complaint. The test harness reaches this through a fake ``pct`` program
(:meth:`felhom_agent.sim.pve.PveSimulator.pct`); the API never does.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any, Final

import attrs

from felhom_agent.sim.pve.runtime import NodeRuntime
from felhom_agent.sim.pve.state import Guest

__all__ = ["ShellResult", "pct"]

#: The options ``pct create`` takes that the simulator models (others are refused).
_OPTIONS: Final = frozenset({"hostname", "rootfs", "memory", "cores", "net0", "unprivileged",
                             "features", "swap", "ostype", "arch", "description", "onboot",
                             "pool", "storage"})


@attrs.frozen
class ShellResult:
    """What the command left: exit status, stdout and stderr."""

    returncode: int
    stdout: str = ""
    stderr: str = ""


def _fail(message: str, code: int = 255) -> ShellResult:
    return ShellResult(code, "", message.rstrip("\n") + "\n")


def _mac(vmid: int) -> str:
    rnd = random.Random(vmid * 7919)  # noqa: S311 - a made-up MAC, not security relevant
    return "BC:24:11:" + ":".join(f"{rnd.randrange(256):02X}" for _ in range(3))


def _parse(argv: Sequence[str]) -> tuple[int, str, dict[str, str]] | ShellResult:
    if len(argv) < 2 or argv[0] != "pct" or argv[1] != "create":
        return _fail("ERROR: unknown command 'pct " + " ".join(argv[1:2]) + "'\n"
                     "USAGE: pct <COMMAND> [ARGS] [OPTIONS]")
    if len(argv) < 4 or not argv[2].isdigit():
        return _fail("400 not enough arguments\npct create <vmid> <ostemplate> [OPTIONS]")
    options: dict[str, str] = {}
    rest = list(argv[4:])
    while rest:
        flag = rest.pop(0)
        name = flag.removeprefix("--")
        if not flag.startswith("--") or name not in _OPTIONS or not rest or name in options:
            return _fail(f"400 unable to parse option\n{flag}: invalid or repeated option")
        options[name] = rest.pop(0)
    return int(argv[2]), argv[3], options


def pct(rt: NodeRuntime, argv: Sequence[str]) -> ShellResult:
    """Run ``argv`` (``["pct", "create", ...]``) as root on the simulated node."""
    parsed = _parse(argv)
    if isinstance(parsed, ShellResult):
        return parsed
    vmid, ostemplate, opts = parsed
    state = rt.state
    with state.cond:
        existing = state.guests.get(vmid)
        if existing is not None or vmid in state.other_node_guests:
            word = existing.kind_word if existing is not None else "VM"
            return _fail(f"unable to create CT {vmid} - {word} {vmid} already exists on node "
                         f"'{rt.node}'")
        tstore, _, tname = ostemplate.partition(":")
        st = state.storages.get(tstore)
        if st is None:
            return _fail(f"storage '{tstore}' does not exist")
        if not tname.startswith("vztmpl/") or not st.has_content("vztmpl"):
            return _fail(f"unable to create CT {vmid} - volume '{ostemplate}' content type "
                         "needs to be 'vztmpl'")
        rootfs = opts.get("rootfs", f"{opts.get('storage', 'local')}:8")
        rstore, _, size = rootfs.partition(":")
        rst = state.storages.get(rstore)
        if rst is None or not rst.has_content("rootdir"):
            return _fail(f"unable to create CT {vmid} - storage '{rstore}' does not support "
                         "container directories")
        config: dict[str, Any] = {
            "arch": opts.get("arch", "amd64"),
            "ostype": opts.get("ostype", tname.removeprefix("vztmpl/").split("-", 1)[0]),
            "hostname": opts.get("hostname", f"CT{vmid}"),
            "memory": int(opts.get("memory", "512")),
            "swap": int(opts.get("swap", "512")),
            "cores": int(opts.get("cores", "1")),
            "unprivileged": int(opts.get("unprivileged", "1")),
            "rootfs": f"{rstore}:vm-{vmid}-disk-0,size={size or '8'}G",
        }
        if "features" in opts:
            config["features"] = opts["features"]
        if "net0" in opts:
            net = opts["net0"]
            if "hwaddr=" not in net:
                net += f",hwaddr={_mac(vmid)}"
            config["net0"] = net + ",type=veth"
        for key in ("description", "onboot"):
            if key in opts:
                config[key] = opts[key]
        state.guests[vmid] = Guest(vmid=vmid, type="lxc", status="stopped", config=config,
                                   pool=opts.get("pool"))
        state.cond.notify_all()
    return ShellResult(0, f"extracting archive '{ostemplate}'\nTotal bytes read: 0\n"
                       f"Detected container architecture: {config['arch']}\n", "")
