"""FileNonceStore: durable marks, replay across restarts, pruning, torn tails, fail closed."""

from __future__ import annotations

import logging
import os
import signal
import stat
import subprocess
import sys
import threading
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from felhom_agent.authz import FileNonceStore, NonceStoreError, OpRejected, Reason, reset_store
from felhom_agent.authz import nonces as nonces_mod
from felhom_agent.authz.envelope import SignedOp, parse_payload
from felhom_agent.durable import DurabilityError
from felhom_agent.kinds.registry import SIGNED_KINDS
from tests.authz.helpers import NOW, REPO, TIMEOUT_S, fmt, make_payload

SKEW = 120
LIFETIME = 900


def _op(counter: int, *, expires: datetime | None = None, **overrides: object) -> SignedOp:
    expires = expires or NOW + timedelta(minutes=10)
    return parse_payload(
        make_payload(
            counter,
            issued_at=fmt(expires - timedelta(minutes=11)),
            expires_at=fmt(expires),
            **overrides,
        ),
        kinds=SIGNED_KINDS,
    )


def _open(path: Path, now: datetime = NOW, *, read_only: bool = False) -> FileNonceStore:
    return FileNonceStore.open(
        path, now=now, max_clock_skew_s=SKEW, max_op_lifetime_s=LIFETIME, read_only=read_only
    )


def _mark(store: FileNonceStore, op: SignedOp, now: datetime = NOW) -> None:
    store.mark(op, signer="alice@ops", payload_sha256="0" * 64, now=now)


def _reason(store: FileNonceStore, op: SignedOp, now: datetime = NOW) -> Reason:
    with pytest.raises(OpRejected) as info:
        store.check(op, now)
    return info.value.reason


def test_new_store_is_private_and_has_header(tmp_path: Path) -> None:
    """A new store file is created owner-only with its format header, and accepts ops."""
    path = tmp_path / "nonces.log"
    store = _open(path)
    assert store.failure is None
    assert path.read_bytes() == nonces_mod.HEADER
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    store.check(_op(1), NOW)


def test_mark_then_replay_rejected_after_reopen(tmp_path: Path) -> None:
    """A marked nonce and op id are refused, in the same object and after reopening."""
    path = tmp_path / "nonces.log"
    store = _open(path)
    _mark(store, _op(1))
    assert _reason(store, _op(1)) == Reason.NONCE_REPLAY
    store.close()
    again = _open(path)
    assert len(again) == 1
    assert _reason(again, _op(2, nonce=_op(1).nonce)) == Reason.NONCE_REPLAY
    assert _reason(again, _op(3, op_id=_op(1).op_id)) == Reason.OP_ID_REPLAY
    again.check(_op(4), NOW)
    with pytest.raises(OpRejected):
        _mark(again, _op(1))


def test_accepted_record_is_found_by_op_id_after_reopen(tmp_path: Path) -> None:
    """``accepted(op_id)``: the record of a marked op (nonce, payload hash), also reopened."""
    path = tmp_path / "nonces.log"
    store = _open(path)
    assert store.accepted(_op(1).op_id) is None
    store.mark(_op(1), signer="alice@ops", payload_sha256="ab" * 32, now=NOW)
    store.close()
    again = _open(path)
    record = again.accepted(_op(1).op_id)
    assert record is not None
    assert (record.nonce, record.payload_sha256, record.accepted_at) == (
        _op(1).nonce, "ab" * 32, NOW)
    assert again.accepted(_op(2).op_id) is None


_CHILD = """
import sys
from datetime import UTC, datetime
from pathlib import Path
from felhom_agent.authz import FileNonceStore
from felhom_agent.authz.envelope import parse_payload
from felhom_agent.kinds.registry import SIGNED_KINDS
now = datetime(2026, 11, 26, 10, 5, tzinfo=UTC)
store = FileNonceStore.open(Path(sys.argv[1]), now=now, max_clock_skew_s=120,
                            max_op_lifetime_s=900)
assert store.failure is None, store.failure
op = parse_payload(sys.stdin.buffer.read(), kinds=SIGNED_KINDS)
store.mark(op, signer="alice@ops", payload_sha256="0" * 64, now=now)
print("marked", flush=True)
sys.stdin.close()
import threading
threading.Event().wait(60)
"""


def test_replay_rejected_after_process_killed(tmp_path: Path) -> None:
    """A nonce marked by a process that is then SIGKILLed is still refused by the next one."""
    path = tmp_path / "nonces.log"
    payload = make_payload(11)
    with subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=REPO,
    ) as child:
        assert child.stdin is not None and child.stdout is not None
        child.stdin.write(payload)
        child.stdin.close()
        assert child.stdout.readline() == b"marked\n"
        # While the child holds the lock, a second store refuses to run (one writer).
        locked = _open(path)
        assert locked.failure is not None and "locked" in locked.failure
        assert _reason(locked, _op(12)) == Reason.NONCE_STORE_UNAVAILABLE
        locked.close()
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=TIMEOUT_S)
    store = _open(path)
    assert store.failure is None
    assert _reason(store, parse_payload(payload, kinds=SIGNED_KINDS)) == Reason.NONCE_REPLAY


def test_expired_entries_pruned_at_open(tmp_path: Path) -> None:
    """Records past expiry plus skew are compacted away at open; live ones stay."""
    path = tmp_path / "nonces.log"
    store = _open(path)
    _mark(store, _op(1, expires=NOW + timedelta(minutes=1)), NOW - timedelta(seconds=30))
    _mark(store, _op(2, expires=NOW + timedelta(minutes=30)))
    store.close()
    later = NOW + timedelta(minutes=1, seconds=SKEW + 1)
    reopened = _open(path, now=later)
    assert len(reopened) == 1
    assert path.read_bytes().count(b"\n") == 2  # header + one record
    assert _reason(reopened, _op(2), later) == Reason.NONCE_REPLAY


def test_clock_guard_survives_when_everything_expired(tmp_path: Path) -> None:
    """With every record expired, the newest is kept so a restart still sees the clock go back."""
    path = tmp_path / "nonces.log"
    store = _open(path)
    _mark(store, _op(1, expires=NOW + timedelta(minutes=1)), NOW - timedelta(minutes=2))
    _mark(store, _op(2, expires=NOW + timedelta(minutes=2)), NOW)
    store.close()
    much_later = NOW + timedelta(days=1)
    with _open(path, now=much_later) as compacted:
        assert len(compacted) == 1
    restarted = _open(path, now=much_later)
    assert _reason(restarted, _op(3), NOW - timedelta(hours=1)) == Reason.CLOCK_MOVED_BACK


def test_compaction_when_file_grows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past the size threshold a mark compacts the file down to the live records."""
    monkeypatch.setattr(nonces_mod, "COMPACT_THRESHOLD", 2000)
    path = tmp_path / "nonces.log"
    store = _open(path)
    for i in range(20):
        now = NOW + timedelta(minutes=5 * i)
        _mark(store, _op(i, expires=now + timedelta(minutes=1)), now)
    assert path.stat().st_size < 2000 + 400
    assert len(store) < 20
    store.close()
    last = NOW + timedelta(minutes=95)
    reopened = _open(path, now=last)
    assert len(reopened) == 1  # only the newest op is still live
    assert _reason(reopened, _op(19, expires=last + timedelta(minutes=1)), last) == (
        Reason.NONCE_REPLAY
    )


def test_torn_tail_truncated_with_copy(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """An incomplete last frame is dropped (copy kept, WARNING logged), earlier ones kept."""
    path = tmp_path / "nonces.log"
    store = _open(path)
    _mark(store, _op(1))
    store.close()
    good = path.read_bytes()
    with path.open("ab") as handle:
        handle.write(b'1234abcd {"nonce":"ab')
    with caplog.at_level(logging.WARNING):
        reopened = _open(path)
    assert reopened.failure is None
    assert "torn" in caplog.text
    assert path.read_bytes() == good
    assert path.with_name("nonces.log.broken").read_bytes().startswith(good)
    assert _reason(reopened, _op(1)) == Reason.NONCE_REPLAY


def test_bad_checksum_on_last_frame_is_a_torn_tail(tmp_path: Path) -> None:
    """A complete last line whose checksum fails is treated as torn, not as corruption."""
    path = tmp_path / "nonces.log"
    store = _open(path)
    _mark(store, _op(1))
    _mark(store, _op(2))
    store.close()
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x01
    path.write_bytes(bytes(data))
    reopened = _open(path)
    assert reopened.failure is None
    assert len(reopened) == 1
    assert _reason(reopened, _op(1)) == Reason.NONCE_REPLAY


@pytest.mark.parametrize("damage", ["middle-record", "header", "directory", "huge"])
def test_corrupt_store_fails_closed(tmp_path: Path, damage: str) -> None:
    """Damage other than a torn tail refuses every op, naming the file and what to do."""
    path = tmp_path / "nonces.log"
    store = _open(path)
    _mark(store, _op(1))
    _mark(store, _op(2))
    store.close()
    data = path.read_bytes()
    if damage == "middle-record":
        first_record = len(nonces_mod.HEADER) + 12
        path.write_bytes(data[:first_record] + b"X" + data[first_record + 1 :])
    elif damage == "header":
        path.write_bytes(b"felhom-nonces v9\n" + data[len(nonces_mod.HEADER) :])
    elif damage == "directory":
        path.unlink()
        path.mkdir()
    else:
        with path.open("ab") as handle:
            handle.truncate(nonces_mod.MAX_FILE_SIZE + 1)
    broken = _open(path)
    assert broken.failure is not None
    assert str(path) in broken.failure
    assert "operator" in broken.failure
    for op in (_op(1), _op(3)):  # neither the replay nor a fresh op is accepted
        assert _reason(broken, op) == Reason.NONCE_STORE_UNAVAILABLE
        with pytest.raises(OpRejected):
            _mark(broken, op)


def test_empty_file_is_a_new_store(tmp_path: Path) -> None:
    """A zero-byte file (crash before the header was durable) holds no record: start fresh."""
    path = tmp_path / "nonces.log"
    path.touch()
    with _open(path, read_only=True) as ro:
        assert ro.failure is None
    with _open(path) as store:
        assert store.failure is None
        _mark(store, _op(1))
    assert path.read_bytes().startswith(nonces_mod.HEADER)


def test_clock_moved_back_refused(tmp_path: Path) -> None:
    """After an acceptance, ops are refused while the clock is far behind it (even compacted)."""
    path = tmp_path / "nonces.log"
    store = _open(path)
    _mark(store, _op(1), NOW)
    assert _reason(store, _op(2), NOW - timedelta(seconds=SKEW + 1)) == Reason.CLOCK_MOVED_BACK
    store.check(_op(2), NOW - timedelta(seconds=SKEW))
    store.close()
    assert _reason(_open(path), _op(2), NOW - timedelta(hours=1)) == Reason.CLOCK_MOVED_BACK


def test_concurrent_marks_accept_one(tmp_path: Path) -> None:
    """Two threads marking the same op at once: exactly one succeeds."""
    store = _open(tmp_path / "nonces.log")
    barrier = threading.Barrier(2, timeout=TIMEOUT_S)
    results: list[str] = []

    def worker() -> None:
        barrier.wait()
        try:
            _mark(store, _op(1))
            results.append("ok")
        except OpRejected as err:
            results.append(err.reason)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=TIMEOUT_S)
    assert sorted(results) == sorted(["ok", Reason.NONCE_REPLAY])


def test_failed_fsync_raises_and_fails_closed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failing fdatasync raises DurabilityError (not retried) and the store refuses after."""
    store = _open(tmp_path / "nonces.log")

    def broken_fdatasync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fdatasync", broken_fdatasync)
    with pytest.raises(DurabilityError):
        _mark(store, _op(1))
    monkeypatch.undo()
    assert _reason(store, _op(2)) == Reason.NONCE_STORE_UNAVAILABLE


def test_read_only_mode(tmp_path: Path) -> None:
    """Read-only: a missing file is empty and not created, a torn tail is left alone, no mark."""
    path = tmp_path / "nonces.log"
    ro = _open(path, read_only=True)
    assert ro.failure is None and not path.exists()
    with pytest.raises(NonceStoreError):
        _mark(ro, _op(1))
    store = _open(path)
    _mark(store, _op(1))
    with path.open("ab") as handle:
        handle.write(b"torn")
    data = path.read_bytes()
    ro = _open(path, read_only=True)  # no lock needed while the writer holds it
    assert ro.failure is None
    assert _reason(ro, _op(1)) == Reason.NONCE_REPLAY
    assert path.read_bytes() == data


def test_reset_only_after_every_op_expired(tmp_path: Path) -> None:
    """reset_store refuses while an op could still be live, then moves the file aside."""
    path = tmp_path / "nonces.log"
    store = _open(path)
    _mark(store, _op(1))
    store.close()
    path.write_bytes(b"garbage\n" + path.read_bytes())
    stamp = NOW.timestamp()
    os.utime(path, (stamp, stamp))
    safe = NOW + timedelta(seconds=LIFETIME + 2 * SKEW)
    with pytest.raises(NonceStoreError, match="refusing to reset"):
        reset_store(path, now=safe, max_clock_skew_s=SKEW, max_op_lifetime_s=LIFETIME)
    later = safe + timedelta(seconds=1)
    aside = reset_store(path, now=later, max_clock_skew_s=SKEW, max_op_lifetime_s=LIFETIME)
    assert aside.exists() and not path.exists()
    assert _open(path, now=later).failure is None
