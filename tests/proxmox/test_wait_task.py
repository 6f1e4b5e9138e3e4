"""wait_task and the poll policy, against a scripted status source and a fake clock."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable

import pytest

from felhom_agent.proxmox import (
    AuthError,
    Dispatch,
    ParameterError,
    PollPolicy,
    ServerError,
    TaskFailed,
    TaskOutcome,
    TaskResult,
    TaskStatus,
    TaskTimeout,
    TaskUnknown,
    TransportError,
    Upid,
    UpidError,
    complete,
    parse_upid,
    wait_task,
)
from tests.support.clock import FakeClock

UPID = "UPID:pve2:00001234:00005678:6650A1B2:qmstart:100:agent@pve!a:"


class ScriptedTask:
    """A task that runs until ``end_at`` then stops with ``exitstatus``; records polled UPIDs."""

    def __init__(
        self,
        clock: FakeClock,
        end_at: float,
        exitstatus: str = "OK",
        error: Callable[[float], Exception | None] = lambda t: None,
    ) -> None:
        self.clock = clock
        self.end_at = end_at
        self.exitstatus = exitstatus
        self.error = error
        self.polled: list[Upid] = []

    def task_status(self, upid: Upid) -> TaskStatus:
        self.polled.append(upid)
        err = self.error(self.clock.now)
        if err is not None:
            raise err
        if self.clock.now >= self.end_at:
            return TaskStatus(upid=upid, status="stopped", exitstatus=self.exitstatus)
        return TaskStatus(upid=upid, status="running", exitstatus=None)


def _wait(task: ScriptedTask, clock: FakeClock, timeout_s: float = 60.0) -> TaskResult:
    return wait_task(task, UPID, timeout_s=timeout_s, clock=clock, sleep=clock.sleep)


def test_policy_is_fast_first_then_proportional_and_capped() -> None:
    """The first delay is first_s; later delays grow with the task's age up to cap_s."""
    p = PollPolicy(first_s=0.1, base_s=0.1, growth=0.25, cap_s=5.0)
    assert p(0, 0.0) == 0.1
    assert p(3, 1.0) == pytest.approx(0.35)
    assert p(10, 1000.0) == 5.0
    assert p(1, -5.0) == pytest.approx(0.1)


@pytest.mark.parametrize(("duration", "max_polls"), [(0.2, 3), (1.0, 7), (5.0, 12)])
def test_default_policy_poll_counts(duration: float, max_polls: int) -> None:
    """With the default policy a task of 0.2 s / 1 s / 5 s is seen within 3 / 7 / 12 polls."""
    clock = FakeClock()
    result = wait_task(
        ScriptedTask(clock, duration), UPID, timeout_s=60, clock=clock, sleep=clock.sleep
    )
    assert result.polls <= max_polls
    assert result.waited_s - duration <= 0.1 * duration + 0.5 * (0.1 + 0.25 * duration)


def test_ok_is_success() -> None:
    """exitstatus OK is plain success, with poll count and waited time reported."""
    clock = FakeClock()
    result = _wait(ScriptedTask(clock, 1.0), clock)
    assert result.outcome is TaskOutcome.OK
    assert result.exitstatus == "OK"


def test_warnings_are_success_with_count() -> None:
    """'WARNINGS: 2' is success-with-warnings, never a failure."""
    clock = FakeClock()
    result = wait_task(
        ScriptedTask(clock, 0.3, "WARNINGS: 2"), UPID, timeout_s=5, clock=clock, sleep=clock.sleep
    )
    assert (result.outcome, result.warnings) == (TaskOutcome.WARNINGS, 2)


def test_error_text_is_task_failed() -> None:
    """Any other exitstatus raises TaskFailed carrying PVE's text and the UPID."""
    clock = FakeClock()
    with pytest.raises(TaskFailed) as info:
        _wait(ScriptedTask(clock, 0.3, "VM 100 already running"), clock)
    assert info.value.exitstatus == "VM 100 already running"
    assert info.value.upid == UPID


@pytest.mark.parametrize("status", ["unexpected status", ""])
def test_unexpected_status_is_unknown(status: str) -> None:
    """'unexpected status' (or none) means the outcome is unknown, not failed or succeeded."""
    clock = FakeClock()
    with pytest.raises(TaskUnknown):
        _wait(ScriptedTask(clock, 0.3, status), clock)


def test_polls_the_node_named_in_the_upid() -> None:
    """The status is read via the UPID (node pve2), whatever node the client is for."""
    clock = FakeClock()
    task = ScriptedTask(clock, 0.2)
    _wait(task, clock)
    assert {u.node for u in task.polled} == {"pve2"}


def test_deadline_raises_still_running_with_upid() -> None:
    """Past the deadline the task is reported still running (TaskTimeout), with its UPID."""
    clock = FakeClock()
    with pytest.raises(TaskTimeout) as info:
        _wait(ScriptedTask(clock, 100.0), clock, timeout_s=3.0)
    assert info.value.upid == UPID
    assert info.value.last_status == "running"
    assert isinstance(info.value, TimeoutError)
    assert clock.now == pytest.approx(3.0)  # the last sleep is clamped to the deadline


def test_malformed_upid_raises_before_polling() -> None:
    """A malformed UPID is an error, never polled."""
    clock = FakeClock()
    task = ScriptedTask(clock, 0.0)
    with pytest.raises(UpidError):
        wait_task(task, "UPID:garbage", timeout_s=5, clock=clock, sleep=clock.sleep)
    assert task.polled == []


def _no_such_task() -> ParameterError:
    return ParameterError("Parameter verification failed.", errors={"upid": "no such task"})


def test_brief_no_such_task_is_tolerated() -> None:
    """'no such task' right after dispatch is treated as not started yet."""
    clock = FakeClock()
    task = ScriptedTask(clock, 1.0, error=lambda t: _no_such_task() if t < 0.5 else None)
    assert _wait(task, clock).outcome is TaskOutcome.OK


def test_persistent_no_such_task_is_raised() -> None:
    """'no such task' beyond the grace period is a real error."""
    clock = FakeClock()
    task = ScriptedTask(clock, 100.0, error=lambda t: _no_such_task())
    with pytest.raises(ParameterError):
        wait_task(
            task, UPID, timeout_s=60, clock=clock, sleep=clock.sleep, no_such_task_grace_s=2.0
        )
    assert 2.0 <= clock.now < 5.0


def test_transient_poll_errors_are_tolerated() -> None:
    """A dropped connection or 5xx while polling does not end the wait."""
    clock = FakeClock()
    errs: list[Exception] = [TransportError("reset"), ServerError("502", status=502)]
    task = ScriptedTask(clock, 0.5, error=lambda t: errs.pop() if errs else None)
    assert _wait(task, clock).outcome is TaskOutcome.OK


def test_auth_error_while_polling_is_raised() -> None:
    """A non-transient error (401) ends the wait immediately."""
    clock = FakeClock()
    task = ScriptedTask(clock, 5.0, error=lambda t: AuthError("no", status=401))
    with pytest.raises(AuthError):
        _wait(task, clock)
    assert len(task.polled) == 1


def test_cancel_ends_the_wait_as_still_running() -> None:
    """Setting cancel (shutdown) ends the wait with TaskTimeout, never success or failure."""
    clock = FakeClock()
    cancel = threading.Event()

    def sleep(seconds: float) -> None:
        clock.sleep(seconds)
        cancel.set()

    with pytest.raises(TaskTimeout, match="interrupted"):
        wait_task(
            ScriptedTask(clock, 10.0), UPID, timeout_s=60, clock=clock, sleep=sleep, cancel=cancel
        )


def test_dual_mode_null_is_synchronous_success() -> None:
    """A mutation answering null completes synchronously, with no polling at all."""
    clock = FakeClock()
    task = ScriptedTask(clock, 0.0)
    dispatch = Dispatch.from_data(None)
    result = complete(task, dispatch, timeout_s=5, clock=clock, sleep=clock.sleep)
    assert result.outcome is TaskOutcome.SYNCHRONOUS
    assert task.polled == []


def test_dual_mode_upid_is_waited_on() -> None:
    """A mutation answering a UPID is waited on until the task stops."""
    clock = FakeClock()
    task = ScriptedTask(clock, 0.3, "TASK ERROR-free text")
    dispatch = Dispatch.from_data(UPID)
    assert dispatch.upid == parse_upid(UPID)
    with pytest.raises(TaskFailed):
        complete(task, dispatch, timeout_s=5, clock=clock, sleep=clock.sleep)


@pytest.mark.parametrize("data", ["OK", 1, {"upid": UPID}, "UPID:bad"])
def test_dual_mode_rejects_other_answers(data: object) -> None:
    """Anything but null or a well-formed UPID from a mutation is an error."""
    with pytest.raises(UpidError):
        Dispatch.from_data(data)


def test_round_trips_do_not_shift_the_poll_schedule() -> None:
    """Polls stay on the policy's absolute schedule even when each poll takes 30 ms."""
    clock = FakeClock()
    times: list[float] = []

    class Slow(ScriptedTask):
        def task_status(self, upid: Upid) -> TaskStatus:
            times.append(round(clock.now, 6))
            clock.now += 0.03
            return super().task_status(upid)

    policy = PollPolicy(first_s=0.1, base_s=0.1, growth=0.0, cap_s=5.0)
    wait_task(Slow(clock, 0.45), UPID, timeout_s=5, policy=policy, clock=clock, sleep=clock.sleep)
    assert times == [0.1, 0.2, 0.3, 0.4, 0.5]


def test_overrunning_poll_is_followed_by_half_a_delay() -> None:
    """A poll slower than the interval is followed by a half-delay pause, never a burst."""
    clock = FakeClock()
    times: list[float] = []

    class VerySlow(ScriptedTask):
        def task_status(self, upid: Upid) -> TaskStatus:
            times.append(round(clock.now, 6))
            clock.now += 0.5
            return super().task_status(upid)

    policy = PollPolicy(first_s=0.1, base_s=0.1, growth=0.0, cap_s=5.0)
    wait_task(
        VerySlow(clock, 1.5), UPID, timeout_s=5, policy=policy, clock=clock, sleep=clock.sleep
    )
    gaps = [round(b - a, 6) for a, b in itertools.pairwise(times)]
    assert all(gap >= 0.55 for gap in gaps)
