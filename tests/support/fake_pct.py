"""A fake ``pct`` program on PATH: it records its argv and runs it in the simulated node's
root shell.

The fenced local runner starts ``pct`` by name on the daemon's ``PATH``: :attr:`FakePct.path`
puts the fake's directory first (for a ``LocalRunner(path=...)`` or the daemon's environment).
The fake is a small Python program that appends its argv (``argv[0]`` written as ``pct``) as
one JSON line to a record file and sends it over a Unix socket to :class:`FakePct`, which
runs it with :meth:`~felhom_agent.sim.pve.PveSimulator.pct` and answers the exit status, stdout and
stderr -- so a ``pct create`` through the agent's real runner creates the container in the
simulator, as on a node. Without a simulator (``sim=None``) it answers from ``script``.
"""

from __future__ import annotations

import json
import shutil
import socketserver
import sys
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from felhom_agent.sim.pve import PveSimulator

__all__ = ["FakePct"]

_PROGRAM = '''#!{python}
import json, socket, sys
argv = ["pct", *sys.argv[1:]]
with open({record!r}, "a") as fh:
    fh.write(json.dumps(argv) + "\\n")
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect({sock!r})
s.sendall(json.dumps(argv).encode() + b"\\n")
data = b""
while not data.endswith(b"\\n"):
    chunk = s.recv(65536)
    if not chunk:
        break
    data += chunk
answer = json.loads(data)
sys.stdout.write(answer["stdout"])
sys.stderr.write(answer["stderr"])
sys.exit(answer["returncode"])
'''


class FakePct:
    """The fake ``pct`` in ``directory`` and the socket server behind it.

    Args:
        directory: where the ``pct`` program, the record file and the socket are made.
        sim: the simulator whose node shell runs each command (None: answer ``script``).
        script: the answer without a simulator: ``{"returncode", "stdout", "stderr"}``.
    """

    def __init__(self, directory: Path, sim: PveSimulator | None = None,
                 script: Mapping[str, Any] | None = None) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.record = directory / "pct-calls.jsonl"
        # a short path: a Unix socket's name is limited to about 100 bytes
        self._sockdir = Path(tempfile.mkdtemp(prefix="pct-", dir="/tmp"))
        self.socket_path = self._sockdir / "pct.sock"
        self._sim = sim
        self._script = dict(script or {"returncode": 0, "stdout": "", "stderr": ""})
        program = directory / "pct"
        program.write_text(_PROGRAM.format(python=sys.executable, record=str(self.record),
                                           sock=str(self.socket_path)))
        program.chmod(0o755)
        outer = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                argv = json.loads(self.rfile.readline())
                self.wfile.write(json.dumps(outer.answer(argv)).encode() + b"\n")

        self._server = socketserver.UnixStreamServer(str(self.socket_path), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.1}, name="fake-pct",
                                        daemon=True)

    def answer(self, argv: list[str]) -> dict[str, Any]:
        """What the command answers: the simulator's node shell, else the script."""
        if self._sim is None:
            return self._script
        result = self._sim.pct(argv)
        return {"returncode": result.returncode, "stdout": result.stdout,
                "stderr": result.stderr}

    def calls(self) -> list[list[str]]:
        """Every argv the fake was started with, in order."""
        if not self.record.exists():
            return []
        return [json.loads(line) for line in self.record.read_text().splitlines()]

    @property
    def path(self) -> str:
        """A ``PATH`` that finds this fake first."""
        return f"{self.directory}:/usr/sbin:/usr/bin:/sbin:/bin"

    def __enter__(self) -> FakePct:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
        shutil.rmtree(self._sockdir, ignore_errors=True)
