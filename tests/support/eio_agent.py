"""The real program with one disk fault: ``fdatasync`` fails with EIO on one file, once armed.

``python -m tests.support.eio_agent --eio-file NAME --arm PATH -- --config C`` runs
``felhom_agent.cli.main`` (what ``python -m felhom_agent`` runs) with the given arguments,
after wrapping :func:`os.fdatasync`: while the file ``PATH`` exists, syncing a descriptor
whose file is named ``NAME`` (checked through ``/proc/self/fd``) raises
``OSError(EIO)`` -- what the kernel reports when a disk write-back failed. Every other file,
and that file before the test arms the fault, syncs normally; nothing else in the program is
changed, so the daemon, its composition and its exit status are the production ones.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from felhom_agent.cli import main as agent_main

if TYPE_CHECKING:
    from _typeshed import FileDescriptorLike


def install(file_name: str, arm: Path) -> None:
    """Wrap ``os.fdatasync`` so it fails on ``file_name`` while ``arm`` exists."""
    real = os.fdatasync

    def fdatasync(fd: FileDescriptorLike) -> None:
        if arm.exists():
            num = fd if isinstance(fd, int) else fd.fileno()
            try:
                target = os.readlink(f"/proc/self/fd/{num}")
            except OSError:
                target = ""
            if Path(target).name == file_name:
                raise OSError(errno.EIO, os.strerror(errno.EIO))
        real(fd)

    os.fdatasync = fdatasync


def main(argv: list[str] | None = None) -> int:
    """Install the fault, then run the program with the arguments after ``--``."""
    parser = argparse.ArgumentParser(prog="eio_agent")
    parser.add_argument("--eio-file", required=True, help="the file name whose syncs fail")
    parser.add_argument("--arm", type=Path, required=True,
                        help="the fault is active while this file exists")
    parser.add_argument("rest", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    rest = args.rest[1:] if args.rest[:1] == ["--"] else args.rest
    install(args.eio_file, args.arm)
    return agent_main(rest)


if __name__ == "__main__":
    sys.exit(main())
