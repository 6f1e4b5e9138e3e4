"""The code cites only the repository's own documents, and everything it cites exists.

A person who clones the repository must be able to follow every reference in a comment or
docstring. So, in the package, the tests, the scripts, ``docs/`` and the README:

* no citation of a document outside the repository (the reference design, the PVE fact
  sheets, the research notes) and no bare section sign: a design fact is written down in
  ``docs/`` in the project's own words and cited as ``docs/<name>.md`` ("Heading"); a public
  standard is cited as "RFC 4251, section 5";
* every ``docs/<name>.md`` cited exists, and every ("Heading") cited with it is a heading of
  that document (the same for ``README`` ("Heading"));
* every target id (``T1`` … ``T14``) is a row of ``docs/control-core.md`` ("Targets").

The data directory of the optional cross-checks (``../shared`` beside the repository, see
``tests/shared_dir.py``) is a data location, not a document, and may be named.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"
THIS = Path(__file__).resolve()

#: Where citations are checked: directories scanned recursively, and single files.
SCANNED_DIRS = ("felhom_agent", "tests", "scripts", "docs")
SCANNED_FILES = ("README.md",)
#: Text files that hold prose; extensionless files count only under ``scripts/``.
TEXT_SUFFIXES = frozenset({".py", ".md", ".sh", ".rst", ".txt", ".cfg", ".toml", ".ini"})

#: What a citation of something outside the repository looks like.
OUTSIDE: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("a bare section sign (cite docs/<name>.md (\"Heading\"), or 'RFC n, section m')",
     re.compile("\u00a7")),
    ("the reference design", re.compile(r"reference design|host-agent\.md", re.IGNORECASE)),
    ("a design document by number", re.compile(r"\bdoc 0\d\b", re.IGNORECASE)),
    ("the PVE fact sheets outside the repository",
     re.compile(r"API-FACTS|BACKUP-FACTS", re.IGNORECASE)),
    ("the research notes outside the repository",
     re.compile(r"[a-z-]*-anchors\b|sshsig-facts|ecosystem(\.md| notes)", re.IGNORECASE)),
    ("a document path outside the repository",
     re.compile(r"(?:\.\./|\bshared/)[\w./-]*\.md\b|/work/")),
)

_CONT = re.compile(r"[ \t]*\n[ \t]*(?:#+[ \t]*)?")
_DOC_REF = re.compile(r"\bdocs/([A-Za-z0-9_.-]+\.md)\b")
_DOC_HEADING = re.compile(r"\bdocs/([A-Za-z0-9_.-]+\.md)`*\s*(?:\(\s*|,\s*)\"([^\"\n]{1,80})\"")
_README_HEADING = re.compile(r"\bREADME(?:\.md)?`*\s*\(\s*\"([^\"\n]{1,80})\"")
#: A further heading of the same document: ``("A", "B" and "C")``.
_MORE_HEADINGS = re.compile(r"\s*(?:,|and)\s*\"([^\"\n]{1,80})\"")
_TARGET = re.compile(r"\bT([1-9][0-9]?)\b")
_HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t]*#*[ \t]*$", re.MULTILINE)
_TARGET_ROW = re.compile(r"^\|\s*T([0-9]+)\s*\|", re.MULTILINE)


def _scanned() -> Iterator[Path]:
    """Every scanned file except this test (whose examples are citations on purpose)."""
    for top in SCANNED_DIRS:
        for path in sorted((REPO / top).rglob("*")):
            if not path.is_file() or "__pycache__" in path.parts or path == THIS:
                continue
            if path.suffix in TEXT_SUFFIXES or (top == "scripts" and path.suffix == ""):
                yield path
    for name in SCANNED_FILES:
        yield REPO / name


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")


def _joined(text: str) -> str:
    """The text with wrapped lines joined (comment markers and indentation dropped), so a
    citation split over two lines of a comment or docstring is still one citation."""
    return _CONT.sub(" ", text)


def _headings(path: Path) -> frozenset[str]:
    return frozenset(" ".join(h.split()) for h in _HEADING.findall(_text(path)))


def outside_citations(text: str) -> list[str]:
    """``"line n: what (matched text)"`` for every citation of something outside the repo."""
    found: list[str] = []
    for what, pattern in OUTSIDE:
        for m in pattern.finditer(text):
            line = text.count("\n", 0, m.start()) + 1
            found.append(f"line {line}: {what} ({m.group(0)!r})")
    return found


def heading_citations(text: str) -> list[tuple[str, str]]:
    """``(document, heading)`` for every ``docs/<name>.md`` ("Heading") and README citation."""
    joined = _joined(text)
    found: list[tuple[str, str, int]] = [
        (m.group(1), m.group(2), m.end()) for m in _DOC_HEADING.finditer(joined)]
    found += [("README.md", m.group(1), m.end()) for m in _README_HEADING.finditer(joined)]
    cites: list[tuple[str, str]] = []
    for doc, heading, first_end in sorted(found, key=lambda f: f[2]):
        cites.append((doc, " ".join(heading.split())))
        pos = first_end
        while more := _MORE_HEADINGS.match(joined, pos):
            cites.append((doc, " ".join(more.group(1).split())))
            pos = more.end()
    return cites


def test_no_citation_points_outside_the_repository() -> None:
    """Comments, docstrings, scripts and docs cite only what a fresh clone contains."""
    bad = [f"{path.relative_to(REPO)} {hit}"
           for path in _scanned()
           for hit in outside_citations(_text(path))]
    assert not bad, ("citations of documents outside the repository (write the fact into "
                     "docs/ and cite it there):\n" + "\n".join(bad))


def test_every_cited_document_exists() -> None:
    """Each ``docs/<name>.md`` named anywhere is a file of the repository."""
    bad = sorted({f"{path.relative_to(REPO)}: docs/{name}"
                  for path in _scanned()
                  for name in _DOC_REF.findall(_text(path))
                  if not (DOCS / name).is_file()})
    assert not bad, "cited documents that do not exist:\n" + "\n".join(bad)


def test_every_cited_heading_exists() -> None:
    """Each ("Heading") cited with a document is a heading of that document."""
    headings: dict[str, frozenset[str]] = {}
    bad: list[str] = []
    for path in _scanned():
        for doc, heading in heading_citations(_text(path)):
            target = REPO / doc if doc == "README.md" else DOCS / doc
            if not target.is_file():
                continue  # reported by test_every_cited_document_exists
            if doc not in headings:
                headings[doc] = _headings(target)
            if heading not in headings[doc]:
                bad.append(f"{path.relative_to(REPO)}: {doc} (\"{heading}\")")
    assert not bad, "cited sections that are not headings of their document:\n" + "\n".join(
        sorted(set(bad)))


def test_every_target_id_is_defined() -> None:
    """``T<n>`` in code, scripts and docs is a row of docs/control-core.md ("Targets")."""
    defined = {int(n) for n in _TARGET_ROW.findall(_text(DOCS / "control-core.md"))}
    assert defined, "docs/control-core.md defines no targets"
    bad = sorted({f"{path.relative_to(REPO)}: T{n}"
                  for path in _scanned()
                  for n in _TARGET.findall(_text(path))
                  if int(n) not in defined})
    assert not bad, "target ids not defined in docs/control-core.md (\"Targets\"):\n" + (
        "\n".join(bad))


def test_architecture_has_the_sections_the_code_cites() -> None:
    """The sections a newcomer is sent to are there, under these exact names."""
    required = {"Threads", "Data path", "Package map", "Kinds", "Composition", "Durable state",
                "The queue", "Waiting for tasks", "Where each rule lives"}
    missing = required - _headings(DOCS / "architecture.md")
    assert not missing, f"docs/architecture.md lacks the sections {sorted(missing)}"


def test_the_scans_would_find_what_they_look_for() -> None:
    """The checks above are not vacuous: planted citations are found."""
    planted = "\n".join([
        "# see design \u00a77 and the reference design",
        "# host-agent.md, API-FACTS \u00a7e, control-core-anchors item 6, sshsig-facts",
        "# ../shared/design/ecosystem.md and doc 04",
    ])
    found = outside_citations(planted)
    assert len(found) >= 9, found
    assert outside_citations("# the cross-check data in ../shared/pve/schema.json") == []
    assert outside_citations("# SSH strings (RFC 4251, section 5)") == []
    wrapped = ('"""See ``docs/pve-facts.md`` ("Config round\n    trip") and\n'
               '# ``docs/x.md``, "Y"."""')
    assert heading_citations(wrapped) == [("pve-facts.md", "Config round trip"),
                                          ("x.md", "Y")]
    assert heading_citations('README ("Command line")') == [("README.md", "Command line")]
    assert heading_citations('(``docs/a.md`` ("B", "C" and "D"))') == [
        ("a.md", "B"), ("a.md", "C"), ("a.md", "D")]
