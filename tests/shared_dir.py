"""Where the optional shared reference directory is: the one place that decides it.

Some tests are cross-checks against reference material kept outside this repository (the
official PVE API schema subsets the simulator must agree with, and an independent table of
SSHSIG vectors). They are marked ``shared_crosscheck`` and run only when that directory is
found:

1. at the path in the environment variable :data:`ENV_VAR`, when it is set (a set variable
   that does not name a directory stops the run: see ``tests/conftest.py``), else
2. as ``shared/`` beside the repository (``<repo>/../shared``).

When it is absent only the marked tests are skipped, each with :data:`SKIP_REASON`, and the
pytest summary says that the cross-checks did not run. Every other test uses the project's
own data (for SSHSIG: ``tests/authz/vectors/``, made by ``scripts/gen-sshsig-vectors``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import pytest

__all__ = [
    "BESIDE_REPO",
    "CROSSCHECK",
    "ENV_VAR",
    "MARK",
    "SHARED_DIR",
    "SKIP_REASON",
    "SharedDirError",
    "locate",
    "shared_path",
]

#: The marker of the tests that read the shared directory.
MARK = "shared_crosscheck"
#: The marker itself: ``pytestmark = CROSSCHECK`` in a module of cross-checks.
CROSSCHECK = getattr(pytest.mark, MARK)
#: The environment variable that points at the shared directory.
ENV_VAR = "FELHOM_SHARED_DIR"
REPO = Path(__file__).resolve().parents[1]
#: Where the directory is looked for when :data:`ENV_VAR` is not set.
BESIDE_REPO = REPO.parent / "shared"


class SharedDirError(Exception):
    """:data:`ENV_VAR` is set but does not name a directory."""


def locate(environ: Mapping[str, str] = os.environ) -> Path | None:
    """The shared directory, or None when it is not there.

    Raises:
        SharedDirError: the variable is set (non-empty) but is not a directory.
    """
    given = environ.get(ENV_VAR, "")
    if given:
        path = Path(given).expanduser().resolve()
        if not path.is_dir():
            raise SharedDirError(f"{ENV_VAR}={given} is not a directory")
        return path
    return BESIDE_REPO.resolve() if BESIDE_REPO.is_dir() else None


def _locate_quietly() -> Path | None:
    try:
        return locate()
    except SharedDirError:
        return None  # tests/conftest.py turns this into a usage error before any test runs


#: The shared directory for this run (None: absent).
SHARED_DIR: Path | None = _locate_quietly()

#: Why a cross-check is skipped when the directory is absent.
SKIP_REASON = (
    f"cross-check against shared/ not run: no directory at {BESIDE_REPO} "
    f"and {ENV_VAR} is not set"
)


def shared_path(*parts: str) -> Path:
    """A path inside the shared directory; skips the calling test when the directory is absent.

    Only for tests marked ``shared_crosscheck`` (the marker already skips them when the
    directory is absent; this guards fixtures that might be reached some other way).
    """
    if SHARED_DIR is None:
        pytest.skip(SKIP_REASON)
    return SHARED_DIR.joinpath(*parts)
