"""The shipped systemd units: `systemd-analyze verify` and the settings the agent relies on.

`systemd-analyze verify` checks syntax, option names and values against the systemd on this
machine (Debian 12's 252, the one PVE 8 runs). The units name installed paths (the venv under
/opt, the script under /usr/local/sbin) that do not exist here, and verify rejects a missing
ExecStart binary, so each unit is rendered into a temp directory with those paths replaced by
real executables -- the replacement asserts the original path is present, so the test follows
the unit. The settings test reads the units with the tiny parser in ``unitfile.py``.
"""

from __future__ import annotations

import inspect
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from felhom_agent.config import KEYS
from felhom_agent.config._load import CREDENTIAL_NAMES
from felhom_agent.hub.client import HubClient
from tests.ops.conftest import PACKAGING, RUN_TIMEOUT_S, SELFTEST_SCRIPT
from tests.ops.unitfile import UnitFile, parse_unit

AGENT_UNIT = PACKAGING / "felhom-agent.service"
SELFTEST_UNIT = PACKAGING / "felhom-agent-selftest.service"
TIMER_UNIT = PACKAGING / "felhom-agent-selftest.timer"
UNITS = (AGENT_UNIT, SELFTEST_UNIT, TIMER_UNIT)

#: Installed path in the unit -> a real executable on this machine, for verify.
SUBSTITUTIONS = {
    AGENT_UNIT.name: ("/opt/felhom-agent/venv/bin/python", sys.executable),
    SELFTEST_UNIT.name: ("/usr/local/sbin/felhom-agent-selftest", str(SELFTEST_SCRIPT)),
}

#: The agent's drain grace for running jobs on SIGTERM (``docs/architecture.md``, "The queue",
#: rule 6; the daemon's default). TimeoutStopSec must exceed it plus the HTTP calls that may
#: be in flight.
DRAIN_GRACE_S = 30.0

#: Options that create a private mount namespace (a USB mount there is invisible to the
#: host), hide devices smartctl/mount need, or are inherited by pct/lxc and break them.
FORBIDDEN_IN_AGENT = {
    "PrivateMounts", "ProtectSystem", "ProtectHome", "PrivateTmp", "ReadOnlyPaths",
    "ReadWritePaths", "InaccessiblePaths", "TemporaryFileSystem", "BindPaths",
    "BindReadOnlyPaths", "ProtectKernelTunables", "ProtectKernelModules", "ProtectKernelLogs",
    "ProtectControlGroups", "ProtectProc", "ProcSubset", "RootDirectory", "RootImage",
    "MountAPIVFS", "PrivateDevices", "ProtectClock", "DeviceAllow", "DevicePolicy",
    "RestrictNamespaces", "NoNewPrivileges", "RestrictSUIDSGID", "MemoryDenyWriteExecute",
    "PrivateNetwork", "PrivateUsers", "DynamicUser", "User", "Group", "LogNamespace",
    "CapabilityBoundingSet", "SystemCallFilter", "ProtectHostname",
}

_SPAN = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|sec|min|m|h)?$")
_UNIT_S = {None: 1.0, "s": 1.0, "sec": 1.0, "ms": 0.001, "min": 60.0, "m": 60.0, "h": 3600.0}


def timespan_s(value: str) -> float:
    """Seconds of a systemd time span like ``120s``, ``10min`` or ``90`` (no compound forms)."""
    match = _SPAN.match(value.strip())
    assert match, f"unsupported time span {value!r}"
    return float(match.group(1)) * _UNIT_S[match.group(2)]


def _systemd_analyze() -> str:
    found = shutil.which("systemd-analyze") or "/usr/bin/systemd-analyze"
    assert Path(found).exists(), "systemd-analyze missing: run scripts/test (installs systemd)"
    return found


def _render(tmp: Path) -> Path:
    """Copy all units into ``tmp`` with installed paths replaced by real executables."""
    for unit in UNITS:
        text = unit.read_text()
        if unit.name in SUBSTITUTIONS:
            old, new = SUBSTITUTIONS[unit.name]
            assert old in text, f"{unit.name} no longer runs {old}; update SUBSTITUTIONS"
            text = text.replace(old, new)
        (tmp / unit.name).write_text(text)
    return tmp


def _verify(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_systemd_analyze(), "verify", "--man=no", "--generators=no", str(path)],
        capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False,
    )


@pytest.fixture(scope="module")
def agent() -> UnitFile:
    """The parsed agent unit."""
    return parse_unit(AGENT_UNIT)


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_systemd_analyze_verify_is_clean(tmp_path: Path, unit: Path) -> None:
    """`systemd-analyze verify` accepts each unit with no warning about it."""
    rendered = _render(tmp_path) / unit.name
    res = _verify(rendered)
    complaints = [line for line in (res.stdout + res.stderr).splitlines()
                  if str(tmp_path) in line or unit.name in line or unit.stem in line]
    assert res.returncode == 0, res.stdout + res.stderr
    assert complaints == []


def test_verify_catches_a_broken_unit(tmp_path: Path) -> None:
    """The verify check is not vacuous: a misspelt option in the agent unit is reported."""
    _render(tmp_path)
    broken = tmp_path / AGENT_UNIT.name
    broken.write_text(broken.read_text().replace("KillMode=mixed", "KilMode=mixed"))
    res = _verify(broken)
    assert "Unknown key" in res.stdout + res.stderr and "KilMode" in res.stdout + res.stderr


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_every_option_has_a_comment_above_it(unit: Path) -> None:
    """Each option line is directly preceded by a comment saying why it is set."""
    bare = [f"{a.lineno}: {a.key}" for a in parse_unit(unit).assignments if not a.commented]
    assert bare == []


def test_agent_is_notify_with_main_only_access(agent: UnitFile) -> None:
    """Type=notify (not notify-reload: PVE 8 runs systemd 252) and NotifyAccess=main."""
    assert agent.get("Service", "Type") == "notify"
    assert agent.get("Service", "NotifyAccess") == "main"


def test_agent_exec_start_dumps_stacks_on_watchdog(agent: UnitFile) -> None:
    """ExecStart runs `python -X faulthandler -m felhom_agent` and the watchdog sends SIGABRT."""
    argv = agent.get("Service", "ExecStart").split()
    assert argv[0].endswith("/python")
    assert argv[1:5] == ["-X", "faulthandler", "-m", "felhom_agent"]
    assert argv[argv.index("--config") + 1] == "/etc/felhom-agent/config.json"
    assert agent.get("Service", "WatchdogSignal") == "SIGABRT"


def _http_timeouts_s() -> tuple[float, float]:
    """(hub client default timeout, proxmox.timeout_s default) from the code itself."""
    hub = inspect.signature(HubClient.__init__).parameters["timeout_s"].default
    pve = next(k.default for k in KEYS if k.dotted == "proxmox.timeout_s")
    assert isinstance(hub, float | int) and isinstance(pve, float | int)
    return float(hub), float(pve)


def test_watchdog_fits_one_poll_cycle(agent: UnitFile) -> None:
    """WatchdogSec exceeds one PVE call plus one hub call at their HTTP timeouts."""
    hub_s, pve_s = _http_timeouts_s()
    assert timespan_s(agent.get("Service", "WatchdogSec")) > hub_s + pve_s


def test_stop_timeout_exceeds_drain_grace_plus_hub_timeout(agent: UnitFile) -> None:
    """TimeoutStopSec > drain grace + hub HTTP timeout, so systemd never cuts a drain short."""
    hub_s, _ = _http_timeouts_s()
    assert timespan_s(agent.get("Service", "TimeoutStopSec")) > DRAIN_GRACE_S + hub_s
    assert agent.get("Service", "KillMode") == "mixed"


def test_restart_on_failure_is_rate_limited(agent: UnitFile) -> None:
    """Restart=on-failure with a pause, and a start limit in [Unit] so a crash loop stops."""
    assert agent.get("Service", "Restart") == "on-failure"
    assert timespan_s(agent.get("Service", "RestartSec")) >= 5
    burst = int(agent.get("Unit", "StartLimitBurst"))
    interval = timespan_s(agent.get("Unit", "StartLimitIntervalSec"))
    assert 1 < burst <= 10
    assert interval >= burst * timespan_s(agent.get("Service", "RestartSec"))
    assert "StartLimitBurst" not in agent.keys("Service")


def test_reload_sends_sighup(agent: UnitFile) -> None:
    """ExecReload signals the main process with SIGHUP (the agent reloads its config)."""
    assert agent.get("Service", "ExecReload").split() == ["/bin/kill", "-HUP", "$MAINPID"]


def test_credentials_match_the_config_loader(agent: UnitFile) -> None:
    """LoadCredential= names are exactly the credential names the config loader reads."""
    loaded = {v.split(":", 1)[0] for v in agent.values("Service", "LoadCredential")}
    assert loaded == set(CREDENTIAL_NAMES.values())
    assert not [v for v in agent.values("Service", "Environment")
                if re.search(r"(?i)token|secret|password", v)]


def test_state_directory_and_umask(agent: UnitFile) -> None:
    """StateDirectory=felhom-agent (mode 0700) and UMask=0077 keep state private."""
    assert agent.get("Service", "StateDirectory") == "felhom-agent"
    assert agent.get("Service", "StateDirectoryMode") == "0700"
    assert agent.get("Service", "UMask") == "0077"


def test_no_hardening_that_hides_mounts_or_devices(agent: UnitFile) -> None:
    """No mount-namespace, device or inherited-seccomp option that breaks pct/mount/smartctl."""
    assert agent.keys("Service") & FORBIDDEN_IN_AGENT == set()
    assert {"LockPersonality", "SystemCallArchitectures", "RestrictRealtime"} <= agent.keys(
        "Service")


def test_agent_starts_after_network_and_pve(agent: UnitFile) -> None:
    """The agent wants network-online and starts after it and the PVE API."""
    assert "network-online.target" in agent.get("Unit", "Wants").split()
    after = agent.get("Unit", "After").split()
    assert {"network-online.target", "pveproxy.service"} <= set(after)
    assert agent.get("Install", "WantedBy") == "multi-user.target"


def test_selftest_service_and_timer() -> None:
    """The timer starts the oneshot selftest service periodically; the service has a timeout."""
    service, timer = parse_unit(SELFTEST_UNIT), parse_unit(TIMER_UNIT)
    assert service.get("Service", "Type") == "oneshot"
    assert timespan_s(service.get("Service", "TimeoutStartSec")) > 2 * 120
    argv = service.get("Service", "ExecStart").split()
    assert argv[0].endswith("/felhom-agent-selftest")
    assert "--hub" in argv
    loaded = {v.split(":", 1)[0] for v in service.values("Service", "LoadCredential")}
    assert loaded == set(CREDENTIAL_NAMES.values())
    assert timer.get("Timer", "Unit") == SELFTEST_UNIT.name
    assert timer.get("Timer", "OnCalendar")
    assert timer.get("Timer", "Persistent") == "true"
    assert timer.get("Install", "WantedBy") == "timers.target"


def test_packaging_holds_only_the_shipped_files() -> None:
    """packaging/ holds the three units, nothing else (the install guide is in the README)."""
    assert sorted(p.name for p in PACKAGING.iterdir()) == sorted(u.name for u in UNITS)
