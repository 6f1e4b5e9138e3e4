"""Running the program's CLI in-process, the way a shell would, with captured output."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

from felhom_agent.cli import main

__all__ = ["run_cli"]


def run_cli(argv: Sequence[str], env: Mapping[str, str] | None = None) -> tuple[int, str, str]:
    """Run ``felhom-agent ARGV`` in this process; return (exit status, stdout, stderr).

    ``env`` is the program's whole environment (empty by default, so nothing of the test
    runner's environment leaks into config loading).
    """
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), env=dict(env or {}), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()
