"""Test doubles for the fenced root CLI: a runner that records argv lists, runs nothing."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import attrs

from felhom_agent.privileged import RunResult

DATA = Path(__file__).resolve().parent / "data"


@attrs.define
class Scripted:
    """The canned outcome for one program."""

    returncode: int = 0
    stdout: bytes = b""
    stderr: bytes = b""


@attrs.define
class RecordingRunner:
    """Records every argv it is asked to run and answers from a per-program script."""

    local: bool = True
    script: dict[str, Scripted] = attrs.field(factory=dict)
    calls: list[tuple[str, ...]] = attrs.field(factory=list)
    timeouts: list[float] = attrs.field(factory=list)

    def run(self, argv: Sequence[str], *, timeout_s: float) -> RunResult:
        """Record the call; return the scripted result for ``argv[0]`` (default: success)."""
        args = tuple(argv)
        self.calls.append(args)
        self.timeouts.append(timeout_s)
        out = self.script.get(args[0], Scripted())
        return RunResult(args, out.returncode, out.stdout, out.stderr)
