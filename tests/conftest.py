"""Suite-wide hooks: the ``shared_crosscheck`` marker and its line in the terminal summary.

The tests marked ``shared_crosscheck`` compare the project with reference material outside
the repository (see :mod:`tests.shared_dir`). Without that directory they are skipped with a
reason and the summary says ``NOT RUN``; with it the summary says how many ran.
"""

from __future__ import annotations

import pytest
from _pytest.terminal import TerminalReporter

from tests.shared_dir import ENV_VAR, MARK, SHARED_DIR, SKIP_REASON, SharedDirError, locate


def pytest_configure(config: pytest.Config) -> None:
    """Register the marker; a set but wrong :data:`ENV_VAR` stops the run at once."""
    config.addinivalue_line(
        "markers",
        f"{MARK}: a cross-check against the shared reference directory ({ENV_VAR} or "
        "../shared); skipped, and reported as not run, when that directory is absent",
    )
    try:
        locate()
    except SharedDirError as err:
        raise pytest.UsageError(str(err)) from err


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Skip the cross-checks (and only them) when the shared directory is absent."""
    if SHARED_DIR is not None:
        return
    skip = pytest.mark.skip(reason=SKIP_REASON)
    for item in items:
        if item.get_closest_marker(MARK) is not None:
            item.add_marker(skip)


def crosscheck_summary(ran: int, failed: int, skipped: int) -> str:
    """The summary line for the cross-checks of this run."""
    if SHARED_DIR is None:
        count = f"; {skipped} skipped" if skipped else ""
        return (
            f"cross-checks against shared/: NOT RUN (no shared dir: set {ENV_VAR} "
            f"or put it beside the repo{count})"
        )
    outcome = f"ran {ran}" + (f", {failed} failed" if failed else "")
    return f"cross-checks against shared/ ({SHARED_DIR}): {outcome}"


def pytest_terminal_summary(terminalreporter: TerminalReporter) -> None:
    """Say whether the cross-checks against the shared directory ran, and how many."""
    ran: set[str] = set()
    failed: set[str] = set()
    skipped: set[str] = set()
    for reports in terminalreporter.stats.values():
        for report in reports:
            if not isinstance(report, pytest.TestReport) or MARK not in report.keywords:
                continue
            if report.skipped:
                skipped.add(report.nodeid)
            else:
                ran.add(report.nodeid)
                if report.failed:
                    failed.add(report.nodeid)
    ran -= skipped  # skipped in the call after a passing setup: did not run
    if ran or skipped or SHARED_DIR is None:
        terminalreporter.write_line(crosscheck_summary(len(ran), len(failed), len(skipped)))
