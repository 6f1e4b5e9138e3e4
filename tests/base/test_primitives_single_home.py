"""Each shared primitive has one home: a second copy anywhere in ``felhom_agent/`` fails here.

The check reads the code, not the prose: every module is parsed, its docstrings dropped, and
the rest rendered back with :func:`ast.unparse` (which also drops comments and normalises
spacing, so ``2**n`` and ``2 ** n`` look alike). Each rule names the one module allowed to
hold the construct; a rule's exemptions are listed with the reason they are not a copy.
"""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

import attrs
import pytest

ROOT = Path(__file__).resolve().parents[2] / "felhom_agent"


@attrs.frozen
class Rule:
    """A construct that may appear only in ``home`` (and the ``exempt`` modules)."""

    name: str
    pattern: re.Pattern[str]
    home: str
    exempt: frozenset[str] = frozenset()


RULES = (
    Rule("strict-JSON hook", re.compile(r"\bobject_pairs_hook\b|\bparse_constant\b"),
         "strictjson.py"),
    # The SSH allowed_signers parser reads ssh-keygen's own YYYYMMDD[HHMM[SS]] form, and the PVE
    # simulator writes PVE's node-local backup file names and vzdump log stamps: foreign
    # formats in local time, not a second rendering of our UTC.
    Rule("UTC format string", re.compile(r"%Y|%H:?%M|%d[T ]%H"), "utc.py",
         frozenset({"authz/signers.py", "sim/pve/storage.py"})),
    Rule("UTC formatting call", re.compile(r"\.(strftime|isoformat|fromisoformat)\(|\bgmtime\("),
         "utc.py", frozenset({"sim/pve/storage.py"})),
    Rule("UTC parsing call", re.compile(r"\bstrptime\("), "utc.py",
         frozenset({"authz/signers.py"})),
    Rule("exponential backoff", re.compile(
        r"\b2(\.0)?\s*\*\*\s*[A-Za-z_(]|\bfactor\s*\*\*|\*\*\s*\(?\s*\w*"
        r"(attempt|failure|exponent|tries|retr)"), "backoff.py"),
    Rule("capped wait", re.compile(r"\bmin\(\s*(self\.)?\w*cap\w*\s*,"), "backoff.py"),
    Rule("proportional poll wait", re.compile(r"\bgrowth\s*\*"), "backoff.py"),
    Rule("jitter draw", re.compile(r"\brng\(\)\s*\*|\brandom\.uniform\("), "backoff.py"),
    # A digest joined as colon pairs or chunked in twos, the SSH ``SHA256:`` prefix, the
    # colon-pairs pattern. (The simulator's random MAC addresses join random bytes, not a
    # digest: ``for _ in range(3)`` is not matched.)
    Rule("fingerprint rendering", re.compile(
        r"':'\.join\(\(?f'\{\w+:02[xX]\}' for \w+ in (?!range\()"
        r"|\[\s*i\s*:\s*i\s*\+\s*2\s*\]|'SHA256:'|\[0-9A-Fa-f\]\{2\}\(\?::"),
        "fingerprint.py"),
    Rule("vmid range", re.compile(r"\b999_?999_?999\b"), "vmids.py"),
    # The simulator reproduces PVE's own schema pattern and message for its API, in PVE's
    # spelling; it is PVE's rule as PVE states it, not the agent's check.
    Rule("storage id rule", re.compile(
        r"\[A-Za-z\]\[A-Za-z0-9[._-]{3}\](\*|\{0,\d+\})\[A-Za-z0-9\]"
        r"|\[a-z\]\[a-z0-9[\\._-]{3,5}\]\*\[a-z0-9\]"), "storageids.py",
        frozenset({"sim/pve/routes.py"})),
    # Secret refuses to be pickled at all: the opposite of a pickling helper.
    Rule("pickling hook", re.compile(r"\bdef (__reduce__|__reduce_ex__|__getstate__)\b"),
         "errors.py", frozenset({"secret.py"})),
)


def _strip_docstrings(tree: ast.Module) -> ast.Module:
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if (body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                    and isinstance(body[0].value.value, str)):
                body[0] = ast.Pass()
    return tree


@cache
def _code() -> dict[str, str]:
    """Every module of the package as code only (no docstrings, no comments)."""
    out: dict[str, str] = {}
    for path in sorted(ROOT.rglob("*.py")):
        tree = _strip_docstrings(ast.parse(path.read_text(encoding="utf-8"), str(path)))
        out[path.relative_to(ROOT).as_posix()] = ast.unparse(tree)
    return out


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.name)
def test_the_primitive_lives_in_one_module(rule: Rule) -> None:
    """The construct appears in its home module and nowhere else."""
    code = _code()
    assert rule.pattern.search(code[rule.home]), f"{rule.name}: not found in {rule.home}"
    elsewhere = sorted(rel for rel, text in code.items()
                       if rel != rule.home and rel not in rule.exempt
                       and rule.pattern.search(text))
    assert elsewhere == [], f"a second {rule.name} in {elsewhere}; use felhom_agent/{rule.home}"


@pytest.mark.parametrize("snippet", [
    "json.loads(text, object_pairs_hook=hook)",
    "moment.strftime('%Y-%m-%dT%H:%M:%SZ')",
    "time.strftime('x', time.gmtime(t))",
    "self._sleep(0.1 * 2 ** attempt)",
    "delay = min(self.cap_s, self.first_s * self.factor ** n)",
    "return self.base_s + self.growth * age",
    "return base + rng() * (top - base)",
    "':'.join(f'{b:02X}' for b in digest)",
    "if not 100 <= vmid <= 999999999: pass",
    "STORAGE = re.compile(r'[A-Za-z][A-Za-z0-9_.-]*[A-Za-z0-9]')",
    "STORAGE = re.compile(r'(?i:[a-z][a-z0-9\\-_.]*[a-z0-9])')",
    "def __reduce__(self): return (f, ())",
])
def test_the_rules_catch_a_copy(snippet: str) -> None:
    """Each typical way of re-writing a primitive is caught by some rule (no blind spot)."""
    rendered = ast.unparse(ast.parse(snippet))
    assert any(rule.pattern.search(rendered) for rule in RULES), rendered
