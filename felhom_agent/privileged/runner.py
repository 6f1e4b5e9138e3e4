"""How a fenced command is run: locally (``subprocess``) or on the PVE host over SSH (``paramiko``).

Both runners take an argv list and a timeout and return a :class:`RunResult`; neither raises on
a non-zero exit status (``smartctl`` reports disk trouble in its status bits while its output is
still valid), so the caller decides what a status means. Both raise :class:`CommandTimeout` past
the deadline and wrap every library exception in this package's errors.

* :class:`LocalRunner` — the agent runs on the host: ``Popen`` with the argv list (never a
  shell), stdin from ``/dev/null``, a minimal fixed environment (nothing of the agent's own
  environment leaks to ``pct``, notably not ``NOTIFY_SOCKET``), its own session so a timeout
  kills the whole process group (``pct create`` forks ``tar``).
* :class:`SshRunner` — the agent runs off-host: key authentication only (no agent, no key
  search, no password), the server's host key must be in the configured ``known_hosts`` file
  (a :class:`paramiko.RejectPolicy` subclass refuses everything else before authentication, so a
  command can never reach an impostor), each argv word ``shlex.quote``d because the remote side
  hands the command line to the login shell. One connection per command: the three operations
  are rare and this keeps the runner thread-safe and free of reconnect logic.

The runners themselves run any argv: the allow-list lives in
:class:`felhom_agent.privileged.facade.Privileged`, the only caller outside tests.
"""

from __future__ import annotations

import contextlib
import os
import select
import shlex
import signal
import stat
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Final, NoReturn, Protocol

import attrs
import paramiko

from felhom_agent.privileged.errors import (
    CommandTimeout,
    PrivilegedDisabled,
    PrivilegedError,
    ProgramNotFound,
    RefusedArgument,
    RunnerError,
    SshAuthFailed,
    SshConnectError,
    SshError,
    SshHostKeyRejected,
)

__all__ = ["DEFAULT_ENV", "DisabledRunner", "LocalRunner", "RunResult", "Runner", "SshRunner"]

#: The whole environment of a locally started command.
DEFAULT_ENV: Final[Mapping[str, str]] = {
    "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
    "LC_ALL": "C",
    "LANG": "C",
}


@attrs.frozen
class RunResult:
    """What a finished command left: its exit status and its output (bytes, undecoded)."""

    argv: tuple[str, ...]
    returncode: int
    stdout: bytes = attrs.field(repr=False)
    stderr: bytes = attrs.field(repr=False)

    def stderr_text(self) -> str:
        """Standard error decoded leniently, for error messages."""
        return self.stderr.decode("utf-8", errors="replace")


class Runner(Protocol):
    """Runs one argv to completion within a timeout."""

    @property
    def local(self) -> bool:
        """True if commands run on this machine (so local files such as fstab are the host's)."""
        ...

    def run(self, argv: Sequence[str], *, timeout_s: float) -> RunResult:
        """Run ``argv``; raise :class:`CommandTimeout` past ``timeout_s`` seconds."""
        ...


def _checked_argv(argv: Sequence[str]) -> tuple[str, ...]:
    """A non-empty tuple of NUL-free strings; ``exec`` cannot carry anything else."""
    args = tuple(argv)
    if not args or any(type(a) is not str or "\x00" in a for a in args):
        raise RefusedArgument("argv", args, "must be a non-empty list of NUL-free strings")
    return args


class LocalRunner:
    """Run commands on this host with ``subprocess`` (argv, no shell, timeout).

    Args:
        env: the complete environment for the child (default :data:`DEFAULT_ENV`).
        path: the child's ``PATH`` instead of the environment's (the composition root passes
            the daemon's own ``PATH``: the fenced tools are found where the daemon finds
            programs); nothing else of the daemon's environment is passed on.
        kill_grace_s: after a timeout kills the process group, how long to wait for it to
            be reaped.
    """

    def __init__(self, *, env: Mapping[str, str] | None = None, path: str | None = None,
                 kill_grace_s: float = 5.0) -> None:
        self._env = dict(DEFAULT_ENV if env is None else env)
        if path:
            self._env["PATH"] = path
        self._kill_grace_s = kill_grace_s

    @property
    def local(self) -> bool:
        """Always True."""
        return True

    def run(self, argv: Sequence[str], *, timeout_s: float) -> RunResult:
        """Run ``argv`` and collect its output.

        Raises:
            RefusedArgument: ``argv`` is empty or holds a NUL.
            RunnerError: the program cannot be started (missing, not executable).
            CommandTimeout: it ran past ``timeout_s``; its process group was killed.
        """
        args = _checked_argv(argv)
        try:
            proc = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                env=self._env, cwd="/", close_fds=True, start_new_session=True,
            )
        except FileNotFoundError as err:
            raise ProgramNotFound(f"cannot start {args[0]}: {err.strerror} (not on PATH "
                                  f"{self._env.get('PATH', '')})", program=args[0]) from err
        except OSError as err:
            raise RunnerError(f"cannot start {args[0]}: {err.strerror}", program=args[0]) from err
        try:
            stdout, stderr = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self._kill(proc)
            raise CommandTimeout(f"{args[0]} ran longer than {timeout_s:g} s and was killed",
                                 program=args[0]) from None
        except BaseException:
            self._kill(proc)
            raise
        return RunResult(args, proc.returncode, stdout, stderr)

    def _kill(self, proc: subprocess.Popen[bytes]) -> None:
        # start_new_session made the child a group leader: kill its helpers (tar...) too.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        try:
            proc.communicate(timeout=self._kill_grace_s)
        except subprocess.TimeoutExpired:
            # A grandchild that left the group still holds the pipes; stop reading them.
            for pipe in (proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=self._kill_grace_s)


class DisabledRunner:
    """The runner for ``proxmox.privileged.mode = off``: refuses every command."""

    @property
    def local(self) -> bool:
        """False: nothing runs here."""
        return False

    def run(self, argv: Sequence[str], *, timeout_s: float) -> RunResult:
        """Always raises :class:`PrivilegedDisabled`."""
        raise PrivilegedDisabled("the fenced root CLI is off (proxmox.privileged.mode = off)")


class _RejectUnknownHost(paramiko.RejectPolicy):
    """RejectPolicy that raises our typed error, naming the key so an operator can check it."""

    def __init__(self, known_hosts: Path) -> None:
        self._known_hosts = known_hosts

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str,
                         key: paramiko.PKey) -> NoReturn:
        raise SshHostKeyRejected(
            f"host key {key.get_name()} {key.fingerprint} of {hostname} is not in "
            f"{self._known_hosts}; verify it out of band and add it there"
        )


class SshRunner:
    """Run commands on a remote PVE host as ``user`` over SSH (paramiko, key auth only).

    Args:
        host: the host name or address.
        port: the SSH port.
        user: the remote user (root: the operations need it).
        key_file: the private key (OpenSSH format, no passphrase); refused when group- or
            world-accessible, as OpenSSH does.
        known_hosts: the only source of trusted host keys (the system files are not read).
        connect_timeout_s: bound for TCP connect, banner, authentication and channel opening.
        max_output_bytes: stdout plus stderr beyond this aborts the command.
        clock: monotonic clock (injectable).
    """

    def __init__(self, *, host: str, key_file: Path, known_hosts: Path, port: int = 22,
                 user: str = "root", connect_timeout_s: float = 10.0,
                 max_output_bytes: int = 16 * 1024 * 1024,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not host or host.startswith("-") or any(c.isspace() for c in host):
            raise RefusedArgument("ssh_host", host, "must be a host name or address")
        self._host = host
        self._port = port
        self._user = user
        self._key_file = key_file
        self._known_hosts = known_hosts
        self._connect_timeout_s = connect_timeout_s
        self._max_output = max_output_bytes
        self._clock = clock

    @property
    def local(self) -> bool:
        """Always False: files on this machine are not the remote host's."""
        return False

    def run(self, argv: Sequence[str], *, timeout_s: float) -> RunResult:
        """Run ``argv`` remotely; every word is ``shlex.quote``d for the remote shell.

        Raises:
            SshHostKeyRejected: the host key is unknown or differs from ``known_hosts``.
            SshAuthFailed: the server refused the key.
            SshConnectError: connection refused, unreachable or timed out.
            SshError: any other SSH failure (unreadable key or known_hosts, protocol error).
            CommandTimeout: the command ran past ``timeout_s`` (the channel is closed; the
                remote process may outlive it).
        """
        args = _checked_argv(argv)
        command = " ".join(shlex.quote(a) for a in args)
        deadline = self._clock() + timeout_s
        client = paramiko.SSHClient()
        try:
            self._connect(client)
            return self._execute(client, args, command, deadline, timeout_s)
        except PrivilegedError:
            raise
        except paramiko.BadHostKeyException as err:
            raise SshHostKeyRejected(
                f"host key of {self._host} differs from {self._known_hosts}: possible "
                "impostor, or the host was reinstalled; verify out of band"
            ) from err
        except paramiko.AuthenticationException as err:
            raise SshAuthFailed(
                f"{self._user}@{self._host} refused key {self._key_file}"
            ) from err
        except paramiko.SSHException as err:
            raise SshError(f"ssh to {self._host}:{self._port} failed: {err}") from err
        except OSError as err:  # refused, unreachable, socket timeout, NoValidConnectionsError
            raise SshConnectError(
                f"cannot connect to {self._host}:{self._port}: {err.strerror or err}"
            ) from err
        except EOFError as err:  # the server hung up mid-handshake
            raise SshConnectError(
                f"{self._host}:{self._port} closed the connection during the handshake"
            ) from err
        finally:
            client.close()

    def _connect(self, client: paramiko.SSHClient) -> None:
        try:
            key_mode = self._key_file.stat().st_mode
            client.load_host_keys(str(self._known_hosts))
        except OSError as err:
            raise SshError(f"cannot read {err.filename}: {err.strerror}") from err
        if stat.S_IMODE(key_mode) & 0o077:
            raise SshError(f"{self._key_file} is accessible by group or others; "
                           f"chmod 600 {self._key_file}")
        client.set_missing_host_key_policy(_RejectUnknownHost(self._known_hosts))
        t = self._connect_timeout_s
        client.connect(
            hostname=self._host, port=self._port, username=self._user,
            key_filename=str(self._key_file), allow_agent=False, look_for_keys=False,
            timeout=t, banner_timeout=t, auth_timeout=t, channel_timeout=t,
        )

    def _execute(self, client: paramiko.SSHClient, args: tuple[str, ...], command: str,
                 deadline: float, timeout_s: float) -> RunResult:
        transport = client.get_transport()
        if transport is None:
            raise SshError(f"ssh to {self._host}: no transport after connect")
        channel = transport.open_session(timeout=self._connect_timeout_s)
        try:
            channel.exec_command(command)
            channel.shutdown_write()  # no stdin: a command waiting for input sees EOF
            out, err = bytearray(), bytearray()
            while True:
                while channel.recv_ready():
                    out += channel.recv(65536)
                while channel.recv_stderr_ready():
                    err += channel.recv_stderr(65536)
                if len(out) + len(err) > self._max_output:
                    raise RunnerError(f"{args[0]} wrote more than {self._max_output} bytes",
                                      program=args[0])
                if (channel.exit_status_ready() and not channel.recv_ready()
                        and not channel.recv_stderr_ready()):
                    break
                remaining = deadline - self._clock()
                if remaining <= 0:
                    raise CommandTimeout(
                        f"{args[0]} on {self._host} ran longer than {timeout_s:g} s; "
                        "the session was closed", program=args[0])
                # The channel's pipe becomes readable on new stdout/stderr data, EOF or close,
                # so this waits without polling.
                select.select([channel], [], [], remaining)
            return RunResult(args, channel.recv_exit_status(), bytes(out), bytes(err))
        finally:
            channel.close()
