"""The package layout is the architecture: imports flow one way, and kinds are defined once.

``docs/architecture.md`` ("Package map") draws the layers this test enforces. A package may
import its own modules and any package of a *lower* layer, never one of its own layer or
above; only the composition root and the programs on top of it read the configuration.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from felhom_agent.kinds.registry import REGISTRY, SIGNED_KINDS

ROOT = Path(__file__).resolve().parent.parent / "felhom_agent"

#: Lowest first. A name is a top-level module or package of ``felhom_agent``.
LAYERS: tuple[frozenset[str], ...] = (
    frozenset({"", "errors", "secret", "durable", "tlspin", "log", "strictjson", "utc",
               "fingerprint", "vmids", "storageids", "backoff", "guestsock_helper"}),
    frozenset({"core", "proxmox", "authz", "privileged", "config", "sim"}),
    frozenset({"backup", "host"}),
    frozenset({"kinds"}),
    frozenset({"planning", "state"}),
    frozenset({"execution"}),
    frozenset({"signedops", "guestapi"}),
    frozenset({"hub"}),
    frozenset({"compose"}),
    frozenset({"daemon"}),
    frozenset({"cli"}),
    frozenset({"__main__"}),
)
#: The only packages that may read the configuration object.
CONFIG_READERS = frozenset({"config", "compose", "daemon", "cli", "__main__"})
#: Packages that are their own world (the simulated PVE host and hub): base imports only.
SELF_CONTAINED = frozenset({"sim"})


def _layer(name: str) -> int:
    for i, layer in enumerate(LAYERS):
        if name in layer:
            return i
    raise AssertionError(f"felhom_agent.{name} is in no layer: add it to LAYERS and the docs")


def _top(dotted: str) -> str:
    parts = dotted.split(".")
    return parts[1] if len(parts) > 1 else ""


def _modules() -> Iterator[tuple[Path, str]]:
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT)
        yield path, rel.parts[0].removesuffix(".py") if len(rel.parts) > 1 else rel.stem


def _imports(path: Path) -> Iterator[tuple[int, str]]:
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        for name in names:
            if name == "felhom_agent" or name.startswith("felhom_agent."):
                yield node.lineno, name


def test_every_package_has_a_layer() -> None:
    """A new package must be placed in the layering (and in docs/architecture.md)."""
    for _path, pkg in _modules():
        _layer("" if pkg == "__init__" else pkg)


def test_imports_flow_one_way() -> None:
    """No package imports a package of its own layer or a higher one (no cycles possible)."""
    bad: list[str] = []
    for path, pkg in _modules():
        src = "" if pkg == "__init__" else pkg
        for line, name in _imports(path):
            dst = _top(name)
            if dst == src:
                continue
            if src in SELF_CONTAINED and _layer(dst) != 0:
                bad.append(f"{path.relative_to(ROOT)}:{line} {name} (sim imports base only)")
            elif _layer(dst) == _layer(src) == 0:
                continue  # the base modules are leaves of one package (errors, secret, ...)
            elif src and _layer(dst) >= _layer(src):
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    assert not bad, "imports against the layering:\n" + "\n".join(bad)


def test_only_the_composition_root_and_programs_read_the_config() -> None:
    """Domain packages take plain values; the config object stops at the composition root."""
    bad = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for path, pkg in _modules()
        for line, name in _imports(path)
        if _top(name) == "config" and pkg not in CONFIG_READERS
    ]
    assert not bad, "\n".join(bad)


def _kind_names() -> frozenset[str]:
    return frozenset(REGISTRY) | SIGNED_KINDS


def _string_members(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Dict):
        elts: list[ast.expr | None] = list(node.keys)
    elif isinstance(node, ast.Set | ast.List | ast.Tuple):
        elts = list(node.elts)
    else:
        return []
    return [e.value for e in elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]


def test_no_other_table_of_kinds_exists() -> None:
    """Outside the registry no literal collection names two or more kinds.

    A second table (an allow-list, a class map, task types per kind, a param schema per kind)
    is how the signed-op allow-list drifted from the classifier before; every such fact is a
    field of the kind's registry entry instead. The simulator is PVE's side and not scanned.
    """
    names = _kind_names()
    registry = ROOT / "kinds" / "registry.py"
    bad: list[str] = []
    for path, pkg in _modules():
        if path == registry or pkg in SELF_CONTAINED:
            continue
        tree = ast.parse(path.read_text(), str(path))
        exports = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Assign)
                   and any(isinstance(t, ast.Name) and t.id == "__all__" for t in n.targets)}
        for node in ast.walk(tree):
            if id(node) in exports:
                continue  # the names a module exports are not a table
            hits = sorted({s for s in _string_members(node) if s in names})
            if len(hits) >= 2:
                bad.append(f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', 0)} {hits}")
    assert not bad, "tables of kinds outside kinds/registry.py:\n" + "\n".join(bad)


def test_the_scan_would_find_a_second_table() -> None:
    """The scan above is not vacuous: the registry itself is found by it."""
    tree = ast.parse((ROOT / "kinds" / "registry.py").read_text())
    found = [n for n in ast.walk(tree) if isinstance(n, ast.Call)
             and any(isinstance(a, ast.Constant) and a.value in _kind_names()
                     for a in n.args)]
    assert len(found) >= len(REGISTRY)
    table = ast.parse('X = {"guest.start": 1, "guest.destroy": 2}').body[0]
    assert isinstance(table, ast.Assign)
    assert len({s for s in _string_members(table.value) if s in _kind_names()}) == 2
