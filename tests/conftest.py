"""Suite-wide configuration: the hypothesis profiles, the ``shared_crosscheck`` marker and its
line in the terminal summary.

Hypothesis profiles:

* ``ci`` (the default, and what CI runs): derandomized, so a run is reproducible and a
  failure is the same on every machine; no per-example deadline and no "generation too slow"
  health check (both measure the machine, not the code: the suite shares small CI runners);
  a modest number of examples; the blob to reproduce a failure is printed.
* ``random``: for long randomised runs -- ``HYPOTHESIS_PROFILE=random scripts/test`` --
  fresh random examples every run, ten times as many, with the example database kept so a
  failure found once is replayed first next time.

Tests that need a different budget than the profile's default write
``settings(max_examples=examples(n))`` (:func:`tests.support.hypo.examples`), so the long
profile scales them too.

The tests marked ``shared_crosscheck`` compare the project with reference material outside
the repository (see :mod:`tests.shared_dir`). Without that directory they are skipped with a
reason and the summary says ``NOT RUN``; with it the summary says how many ran.
"""

from __future__ import annotations

import os

import pytest
from _pytest.terminal import TerminalReporter
from hypothesis import HealthCheck, settings

from tests.shared_dir import ENV_VAR, MARK, SHARED_DIR, SKIP_REASON, SharedDirError, locate
from tests.support.hypo import CI_EXAMPLES, RANDOM_FACTOR

settings.register_profile(
    "ci",
    deadline=None,
    derandomize=True,
    database=None,
    max_examples=CI_EXAMPLES,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "random",
    deadline=None,
    derandomize=False,
    max_examples=CI_EXAMPLES * RANDOM_FACTOR,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or "ci")


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
