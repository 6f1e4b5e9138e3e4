"""The structural fence between the API client and the fenced root CLI.

See ``docs/architecture.md`` ("The fenced root CLI").

``felhom_agent/proxmox/`` (all Proxmox access over HTTPS) must never start a process;
``felhom_agent/privileged/`` (the root CLI operations) must never speak HTTP or open a socket,
and the helper program of operation 4 (``felhom_agent/guestsock_helper.py``) imports only the
standard library parts it needs and never connects anywhere. Two halves:

* a static scan (``ast``) of every module of each package for forbidden imports (including
  ``from`` imports, relative imports resolved, ``__import__``/``importlib.import_module`` with
  a literal name) and, on the API side, ``os`` process functions (``os.system``, ``os.popen``,
  ``os.exec*``, ``os.spawn*``, ``os.fork``...) however ``os`` is aliased; a dynamic import
  whose name is not a literal is a violation too, since it cannot be checked;
* a runtime check in a fresh interpreter (``tests/privileged/fence_probe.py``) that patches
  the forbidden entry points to record and raise, then imports and exercises each side.

The scanner is tested on planted modules, so a passing scan means something.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import attrs
import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE_ROOT = REPO / "felhom_agent"
PROBE = REPO / "tests" / "privileged" / "fence_probe.py"

#: Modules the API side must not import (a prefix match: ``multiprocessing.pool`` too).
API_FORBIDDEN = frozenset({
    "subprocess", "_posixsubprocess", "paramiko", "pty", "multiprocessing", "posix",
    "asyncio.subprocess", "pexpect", "fabric", "invoke", "felhom_agent.privileged",
})
#: ``os`` attributes that start or replace processes.
API_OS_FORBIDDEN = re.compile(r"system|popen|fork|forkpty|exec\w*|spawn\w*|posix_spawn\w*")
#: Names whose import from a module is forbidden on the API side.
API_NAMES_FORBIDDEN = frozenset({
    ("concurrent.futures", "ProcessPoolExecutor"),
    ("asyncio", "create_subprocess_exec"),
    ("asyncio", "create_subprocess_shell"),
})
#: Modules the privileged side must not import: HTTP clients and raw socket/TLS access.
PRIV_FORBIDDEN = frozenset({
    "requests", "urllib3", "http", "urllib.request", "httpx", "aiohttp", "socket", "ssl",
    "socketserver", "xmlrpc", "ftplib", "felhom_agent.proxmox",
})


@attrs.frozen
class Violation:
    """One forbidden use found by the scan."""

    path: str
    lineno: int
    what: str

    def __str__(self) -> str:
        return f"{self.path}:{self.lineno}: {self.what}"


def _matches(name: str, forbidden: Iterable[str]) -> str | None:
    for bad in forbidden:
        if name == bad or name.startswith(bad + "."):
            return bad
    return None


def _module_name(path: Path, root: Path) -> str:
    """Dotted name of ``path``, ``root`` being ``.../felhom_agent/<package>``."""
    parts = list(path.relative_to(root.parent.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The absolute module an ImportFrom refers to (relative levels resolved)."""
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


@attrs.frozen
class Rules:
    """What one side of the fence may not use."""

    forbidden: frozenset[str]
    os_forbidden: re.Pattern[str] | None = None
    names_forbidden: frozenset[tuple[str, str]] = frozenset()


def scan_source(source: str, *, path: str, module: str, is_package: bool,
                rules: Rules) -> list[Violation]:
    """Return every forbidden import or ``os`` process call in one module's source."""
    forbidden, os_forbidden = rules.forbidden, rules.os_forbidden
    names_forbidden = rules.names_forbidden
    tree = ast.parse(source, filename=path)
    found: list[Violation] = []
    os_aliases: set[str] = set()

    def flag(node: ast.AST, what: str) -> None:
        found.append(Violation(path, getattr(node, "lineno", 0), what))

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if (bad := _matches(alias.name, forbidden)) is not None:
                    flag(node, f"import {alias.name} (forbidden: {bad})")
                if alias.name == "os" or (alias.name.startswith("os.") and not alias.asname):
                    os_aliases.add(alias.asname or "os")  # "import os.path" binds "os"
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(node, module, is_package)
            if (bad := _matches(base, forbidden)) is not None:
                flag(node, f"from {base} import ... (forbidden: {bad})")
                continue
            for alias in node.names:
                full = f"{base}.{alias.name}"
                if (bad := _matches(full, forbidden)) is not None:
                    flag(node, f"from {base} import {alias.name} (forbidden: {bad})")
                if (base, alias.name) in names_forbidden:
                    flag(node, f"from {base} import {alias.name}")
                if os_forbidden is not None and base == "os" and (
                        alias.name == "*" or os_forbidden.fullmatch(alias.name)):
                    flag(node, f"from os import {alias.name}")
        elif isinstance(node, ast.Call):
            func = node.func
            fname = (func.id if isinstance(func, ast.Name)
                     else func.attr if isinstance(func, ast.Attribute) else "")
            if fname in ("__import__", "import_module"):
                arg = node.args[0] if node.args else None
                if not (isinstance(arg, ast.Constant) and isinstance(arg.value, str)):
                    flag(node, f"{fname}() with a non-literal name cannot be checked")
                elif (bad := _matches(arg.value, forbidden)) is not None:
                    flag(node, f"{fname}({arg.value!r}) (forbidden: {bad})")
            if (fname == "getattr" and os_forbidden is not None and len(node.args) >= 2
                    and isinstance(node.args[1], ast.Constant)
                    and isinstance(node.args[1].value, str)
                    and os_forbidden.fullmatch(node.args[1].value)):
                flag(node, f"getattr(..., {node.args[1].value!r})")
    if os_forbidden is not None:
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in os_aliases and os_forbidden.fullmatch(node.attr)):
                flag(node, f"{node.value.id}.{node.attr}")
    return found


def scan_package(root: Path, rules: Rules) -> tuple[int, list[Violation]]:
    """Scan every ``.py`` file below ``root``; return (modules scanned, violations)."""
    files = sorted(root.rglob("*.py")) if root.is_dir() else []
    violations: list[Violation] = []
    for file in files:
        violations += scan_source(
            file.read_text(encoding="utf-8"), path=str(file.relative_to(root.parent)),
            module=_module_name(file, root), is_package=file.name == "__init__.py",
            rules=rules,
        )
    return len(files), violations


API_RULES = Rules(API_FORBIDDEN, API_OS_FORBIDDEN, API_NAMES_FORBIDDEN)
PRIV_RULES = Rules(PRIV_FORBIDDEN)


def test_api_client_never_imports_process_machinery() -> None:
    """No module under felhom_agent/proxmox imports subprocess/paramiko/pty/multiprocessing or
    uses os.system/popen/exec*/spawn*/fork (whatever exists of the package is scanned)."""
    _count, violations = scan_package(PACKAGE_ROOT / "proxmox", API_RULES)
    assert violations == [], "\n".join(map(str, violations))


#: What the helper of operation 4 may import: the standard library's process-local parts.
HELPER_ALLOWED = frozenset({"__future__", "ctypes", "json", "os", "re", "socket", "stat", "sys"})


def test_the_guest_socket_helper_is_stdlib_only_and_never_connects() -> None:
    """The helper of operation 4 (run as root inside a container's mount namespace) imports
    only the modules it needs -- nothing of the agent, no HTTP, no TLS -- and never calls
    ``connect``: it binds one socket and hands it over the descriptor it inherited."""
    helper = PACKAGE_ROOT / "guestsock_helper.py"
    tree = ast.parse(helper.read_text(encoding="utf-8"))
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0])
        elif isinstance(node, ast.Attribute):
            assert node.attr not in ("connect", "connect_ex", "create_connection"), node.lineno
    assert imported <= HELPER_ALLOWED, imported - HELPER_ALLOWED
    assert "socket" in imported  # the scan is not vacuous


def test_privileged_never_imports_http() -> None:
    """No module under felhom_agent/privileged imports requests/urllib3/http/socket/ssl."""
    count, violations = scan_package(PACKAGE_ROOT / "privileged", PRIV_RULES)
    assert count >= 8  # the scan is not vacuous
    assert violations == [], "\n".join(map(str, violations))


PLANTED_API = [
    ("import subprocess\n", "import subprocess"),
    ("import subprocess as sp\n", "import subprocess"),
    ("from subprocess import run\n", "from subprocess"),
    ("import multiprocessing.pool\n", "multiprocessing"),
    ("import paramiko\n", "paramiko"),
    ("from paramiko.client import SSHClient\n", "paramiko"),
    ("import pty\n", "pty"),
    ("import os\nos.system('id')\n", "os.system"),
    ("import os as o\no.popen('id')\n", "o.popen"),
    ("import os\nos.execv('/bin/sh', [])\n", "os.execv"),
    ("import os\nos.spawnlp(0, 'x')\n", "os.spawnlp"),
    ("import os\nos.fork()\n", "os.fork"),
    ("import os.path\nos.forkpty()\n", "os.forkpty"),
    ("import os\nos.posix_spawn('x', [], {})\n", "os.posix_spawn"),
    ("from os import system\n", "from os import system"),
    ("from os import *\n", "from os import *"),
    ("import os\ngetattr(os, 'system')('id')\n", "getattr"),
    ("__import__('subprocess')\n", "__import__('subprocess')"),
    ("import importlib\nimportlib.import_module('paramiko')\n", "import_module('paramiko')"),
    ("import importlib\nname = 'sub' + 'process'\nimportlib.import_module(name)\n",
     "non-literal"),
    ("from concurrent.futures import ProcessPoolExecutor\n", "ProcessPoolExecutor"),
    ("from ..privileged import runner\n", "felhom_agent.privileged"),
    ("def f():\n    import subprocess\n    return subprocess\n", "import subprocess"),
]


@pytest.mark.parametrize(("source", "expected"), PLANTED_API)
def test_scanner_catches_planted_process_use(tmp_path: Path, source: str, expected: str) -> None:
    """A forbidden process import or os call planted in a tmp API module is found by the scan."""
    package = tmp_path / "felhom_agent" / "proxmox"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text('"""clean"""\nimport json\n')
    (package / "sub" / "__init__.py").write_text("")
    (package / "sub" / "planted.py").write_text("from __future__ import annotations\n"
                                                 if "privileged" not in source else "")
    (package / "planted.py").write_text(source)
    _count, violations = scan_package(package, API_RULES)
    assert len(violations) >= 1
    assert all(v.path == "proxmox/planted.py" for v in violations)
    assert any(expected in v.what for v in violations), violations


PLANTED_PRIV = [
    ("import requests\n", "requests"),
    ("import requests.adapters\n", "requests"),
    ("from urllib3 import PoolManager\n", "urllib3"),
    ("import http.client\n", "http"),
    ("from http import client\n", "http"),
    ("from urllib.request import urlopen\n", "urllib.request"),
    ("from urllib import request\n", "urllib.request"),
    ("import socket\n", "socket"),
    ("import ssl\n", "ssl"),
    ("from felhom_agent.proxmox import ProxmoxClient\n", "felhom_agent.proxmox"),
    ("from ..proxmox.client import ProxmoxClient\n", "felhom_agent.proxmox"),
    ("__import__('requests')\n", "requests"),
]


@pytest.mark.parametrize(("source", "expected"), PLANTED_PRIV)
def test_scanner_catches_planted_http_use(tmp_path: Path, source: str, expected: str) -> None:
    """A forbidden HTTP/socket import planted in a tmp privileged module is found by the scan."""
    package = tmp_path / "felhom_agent" / "privileged"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "planted.py").write_text(source)
    _count, violations = scan_package(package, PRIV_RULES)
    assert [v.path for v in violations] == ["privileged/planted.py"]
    assert expected in violations[0].what


def test_scanner_accepts_clean_lookalikes(tmp_path: Path) -> None:
    """Harmless names that resemble forbidden ones are not flagged (no false positives)."""
    source = (
        "import os\nimport os.path\nimport subprocess_helpers\nimport httpish\n"
        "from urllib.parse import quote\nimport urllib.parse\n"
        "from . import sibling\nos.environ.get('X')\nos.path.join('a')\nos.getpid()\n"
        "class X:\n    def system(self) -> None: ...\nX().system()\n"
        "import importlib\nimportlib.import_module('json')\n"
    )
    for package_name, rules in (("proxmox", API_RULES), ("privileged", PRIV_RULES)):
        package = tmp_path / package_name / "felhom_agent" / package_name
        package.mkdir(parents=True)
        (package / "__init__.py").write_text("")
        (package / "clean.py").write_text(source)
        assert scan_package(package, rules) == (2, [])


def _probe(*args: str) -> dict[str, list[str]]:
    proc = subprocess.run([sys.executable, str(PROBE), *args], cwd=REPO, capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    result: dict[str, list[str]] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def test_runtime_probe_patches_are_effective() -> None:
    """The probe's patched entry points really record and refuse (so empty call lists mean it)."""
    api = _probe("selfcheck-api")
    assert {"subprocess.Popen", "paramiko.SSHClient.connect", "os.system", "os.popen",
            "os.fork", "os.execv", "pty.spawn"} <= set(api["calls"])
    priv = _probe("selfcheck-privileged")
    assert {"requests.Session.request", "urllib3.PoolManager.urlopen",
            "http.client.HTTPConnection.connect", "socket.socket.connect"} <= set(priv["calls"])
    assert len(api["exercised"]) == len(api["calls"])
    assert len(priv["exercised"]) == len(priv["calls"])


def test_api_side_starts_no_process_at_runtime() -> None:
    """Importing felhom_agent.proxmox and building a ProxmoxClient touches no process entry."""
    result = _probe("api")
    assert result["calls"] == []
    assert "import felhom_agent.proxmox" in result["exercised"]


def test_privileged_side_speaks_no_http_at_runtime(tmp_path: Path) -> None:
    """Importing felhom_agent.privileged and running every operation touches no HTTP entry."""
    result = _probe("privileged", str(tmp_path))
    assert result["calls"] == []
    programs = [line.split()[0] for line in result["exercised"] if not line.startswith("import")]
    assert programs == ["pct", "findmnt", "lsblk", "mkdir", "mount", "findmnt", "smartctl",
                        "sensors", "guestsock_helper.py"]
