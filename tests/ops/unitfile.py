"""A tiny systemd unit-file reader for the packaging tests.

configparser cannot read unit files: systemd allows the same key several times in a section
(``LoadCredential=`` twice, ``After=`` lists), keys are case-sensitive, and the tests also need
to know whether each option line is preceded by a comment. This reader keeps every assignment
in order with its line number and the comment-ness of the line above it. It understands what
the shipped units use: ``[Section]`` headers, ``Key=Value`` lines, ``#``/``;`` comments and
blank lines; a line continued with a trailing backslash is joined like systemd does.
"""

from __future__ import annotations

from pathlib import Path

import attrs

__all__ = ["Assignment", "UnitFile", "UnitParseError", "parse_unit"]


class UnitParseError(ValueError):
    """The file is not a unit file this reader understands (line number in the message)."""


@attrs.frozen
class Assignment:
    """One ``Key=Value`` line: where it is and whether a comment line sits right above it."""

    section: str
    key: str
    value: str
    lineno: int
    commented: bool


@attrs.frozen
class UnitFile:
    """All assignments of a unit file, in file order."""

    path: Path
    assignments: tuple[Assignment, ...]

    def sections(self) -> list[str]:
        """Section names in order of first appearance."""
        seen: list[str] = []
        for a in self.assignments:
            if a.section not in seen:
                seen.append(a.section)
        return seen

    def values(self, section: str, key: str) -> list[str]:
        """Every value assigned to ``key`` in ``section`` (systemd allows repeats)."""
        return [a.value for a in self.assignments if a.section == section and a.key == key]

    def get(self, section: str, key: str) -> str:
        """The single value of ``key``; raises ``KeyError`` if absent or repeated."""
        found = self.values(section, key)
        if len(found) != 1:
            raise KeyError(f"{self.path.name}: [{section}] {key} set {len(found)} times")
        return found[0]

    def keys(self, section: str) -> set[str]:
        """The keys set in ``section``."""
        return {a.key for a in self.assignments if a.section == section}


def parse_unit(path: Path) -> UnitFile:
    """Read ``path``; raises :class:`UnitParseError` on a line that is none of the above."""
    section = ""
    out: list[Assignment] = []
    prev_comment = False
    pending = ""
    pending_line = 0
    for lineno, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if pending:
            line = pending + " " + raw.strip()
        else:
            line = raw.strip()
            pending_line = lineno
        if line.endswith("\\"):
            pending = line[:-1].rstrip()
            continue
        pending = ""
        if not line:
            prev_comment = False
            continue
        if line[0] in "#;":
            prev_comment = True
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            prev_comment = False
            continue
        key, sep, value = line.partition("=")
        if not sep or not section or not key.strip():
            raise UnitParseError(f"{path.name}:{pending_line}: not a Key=Value line: {raw!r}")
        out.append(Assignment(section, key.strip(), value.strip(), pending_line, prev_comment))
        prev_comment = False
    if pending:
        raise UnitParseError(f"{path.name}: file ends inside a continued line")
    return UnitFile(path, tuple(out))
