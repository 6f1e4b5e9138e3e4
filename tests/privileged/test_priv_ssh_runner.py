"""SshRunner against a real sshd on 127.0.0.1: quoting, strict host keys, key auth, timeouts."""

from __future__ import annotations

import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from felhom_agent.privileged import (
    CommandTimeout,
    RefusedArgument,
    RunnerError,
    SshAuthFailed,
    SshConnectError,
    SshError,
    SshHostKeyRejected,
    SshRunner,
)
from tests.privileged.sshd_server import SshdServer, keygen, running_sshd


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshdServer]:
    """One throwaway sshd for the module (starting one takes ~0.1 s, but keys add up)."""
    with running_sshd(tmp_path_factory.mktemp("sshd")) as server:
        yield server


def _runner(server: SshdServer, **overrides: object) -> SshRunner:
    kwargs: dict[str, object] = {
        "host": "127.0.0.1", "port": server.port, "user": server.user,
        "key_file": server.client_key, "known_hosts": server.known_hosts,
        "connect_timeout_s": 10.0,
    }
    kwargs.update(overrides)
    return SshRunner(**kwargs)  # type: ignore[arg-type]


def test_argv_is_quoted_for_the_remote_shell(sshd: SshdServer, tmp_path: Path) -> None:
    """Each argv word arrives literally: the remote shell sees no ;, $(), quotes or globs."""
    marker = tmp_path / "injected"
    words = ["a b; c", f"$(touch {marker})", "`id`", "it's", '"q"', "*", "x\ny", ""]
    result = _runner(sshd).run(["printf", "%s|\\n", *words], timeout_s=30)
    assert result.returncode == 0
    assert result.stdout.decode() == "".join(f"{w}|\n" for w in words)
    assert not marker.exists()


def test_printf_literal_output(sshd: SshdServer) -> None:
    """The brief's example: printf '%s\\n' 'a b; c' prints exactly that string."""
    result = _runner(sshd).run(["printf", "%s\n", "a b; c"], timeout_s=30)
    assert result.stdout == b"a b; c\n"


def test_exit_status_and_stderr_are_returned(sshd: SshdServer) -> None:
    """A remote failure returns its exit status and stderr instead of raising."""
    result = _runner(sshd).run(["sh", "-c", "echo to-out; echo to-err >&2; exit 7"],
                               timeout_s=30)
    assert (result.returncode, result.stdout, result.stderr) == (7, b"to-out\n", b"to-err\n")


def test_unknown_host_key_is_refused_before_the_command(sshd: SshdServer,
                                                         tmp_path: Path) -> None:
    """An empty known_hosts refuses the server (typed error naming the key); nothing runs."""
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    marker = tmp_path / "ran"
    with pytest.raises(SshHostKeyRejected) as info:
        _runner(sshd, known_hosts=empty).run(["touch", str(marker)], timeout_s=30)
    assert "SHA256:" in str(info.value)
    assert isinstance(info.value, PermissionError)
    assert not marker.exists()


def test_system_known_hosts_are_not_consulted(sshd: SshdServer, tmp_path: Path) -> None:
    """Only the configured file counts: a key trusted in ~/.ssh/known_hosts does not help."""
    empty = tmp_path / "known_hosts"
    empty.write_text("# nothing trusted here\n")
    home_known = Path.home() / ".ssh" / "known_hosts"
    assert not home_known.exists() or sshd.host_pub not in home_known.read_text()
    with pytest.raises(SshHostKeyRejected):
        _runner(sshd, known_hosts=empty).run(["true"], timeout_s=30)


def test_wrong_host_key_is_refused(sshd: SshdServer, tmp_path: Path) -> None:
    """A known_hosts entry with a different key for this host:port is refused; nothing runs."""
    other_pub = keygen(tmp_path / "impostor")
    wrong = tmp_path / "known_hosts"
    wrong.write_text(sshd.known_hosts_line(other_pub))
    marker = tmp_path / "ran"
    with pytest.raises(SshHostKeyRejected, match="differs"):
        _runner(sshd, known_hosts=wrong).run(["touch", str(marker)], timeout_s=30)
    assert not marker.exists()


def test_wrong_client_key_is_refused(sshd: SshdServer, tmp_path: Path) -> None:
    """A client key not in authorized_keys fails authentication; nothing runs."""
    keygen(tmp_path / "stranger")
    marker = tmp_path / "ran"
    with pytest.raises(SshAuthFailed) as info:
        _runner(sshd, key_file=tmp_path / "stranger").run(["touch", str(marker)], timeout_s=30)
    assert isinstance(info.value, PermissionError)
    assert not marker.exists()


def test_command_timeout(sshd: SshdServer) -> None:
    """A command past its deadline raises CommandTimeout (a TimeoutError)."""
    with pytest.raises(CommandTimeout) as info:
        _runner(sshd).run(["sleep", "5"], timeout_s=0.3)
    assert isinstance(info.value, TimeoutError)
    assert info.value.program == "sleep"


def test_output_cap(sshd: SshdServer) -> None:
    """Output beyond max_output_bytes aborts the command with RunnerError."""
    with pytest.raises(RunnerError, match="more than 1000 bytes"):
        _runner(sshd, max_output_bytes=1000).run(["head", "-c", "100000", "/dev/zero"],
                                                 timeout_s=30)


def test_group_readable_key_is_refused(sshd: SshdServer, tmp_path: Path) -> None:
    """A private key readable by group or others is refused, like OpenSSH does."""
    key = tmp_path / "loose_key"
    shutil.copy(sshd.client_key, key)
    key.chmod(0o640)
    with pytest.raises(SshError, match="chmod 600"):
        _runner(sshd, key_file=key).run(["true"], timeout_s=30)


def test_missing_known_hosts_is_an_error(sshd: SshdServer, tmp_path: Path) -> None:
    """A missing known_hosts file is an SshError, not a silent trust-on-first-use."""
    with pytest.raises(SshError, match="cannot read"):
        _runner(sshd, known_hosts=tmp_path / "absent").run(["true"], timeout_s=30)


def test_connection_refused_is_typed(sshd: SshdServer) -> None:
    """A closed port raises SshConnectError (a ConnectionError), not a socket/paramiko error."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]  # bound, not listening: connect is refused
        with pytest.raises(SshConnectError) as info:
            _runner(sshd, port=closed_port).run(["true"], timeout_s=30)
    assert isinstance(info.value, ConnectionError)
    assert not type(info.value.__cause__).__module__.startswith("felhom")


def test_runner_is_remote(sshd: SshdServer) -> None:
    """An SshRunner reports local=False, so local-file operations refuse to use it."""
    assert _runner(sshd).local is False


@pytest.mark.parametrize("host", ["", "-oProxyCommand=x", "pve 1"])
def test_hostile_host_is_refused(tmp_path: Path, host: str) -> None:
    """A host that is empty, option-like or has whitespace is refused at construction."""
    with pytest.raises(RefusedArgument):
        SshRunner(host=host, key_file=tmp_path / "k", known_hosts=tmp_path / "kh")
