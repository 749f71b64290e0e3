"""The task supervisor: no task ends unnoticed, a core task that keeps failing ends the agent."""

from __future__ import annotations

import asyncio
import contextlib

from structlog.testing import capture_logs

from edge_agent.supervisor import CORE_FAILURES, TaskSupervisor


def supervisor(fatal: list[str]) -> TaskSupervisor:
    return TaskSupervisor(fatal.append, restart_first_s=0.01, restart_cap_s=0.02)


class Flaky:
    """A task body that fails `fails` times, then runs until cancelled."""

    def __init__(self, fails: int, error: Exception | None = None) -> None:
        self.fails = fails
        self.runs = 0
        self.error = error or RuntimeError("bug")
        self.running = asyncio.Event()

    async def __call__(self) -> None:
        self.runs += 1
        if self.runs <= self.fails:
            raise self.error
        self.running.set()
        await asyncio.Event().wait()


async def test_a_task_that_raises_is_logged_counted_and_restarted() -> None:
    fatal: list[str] = []
    tasks = supervisor(fatal)
    work = Flaky(fails=3)
    with capture_logs() as logged:
        tasks.start("poll:plc-1", work)
        await asyncio.wait_for(work.running.wait(), 5)
    assert work.runs == 4
    assert tasks.failures() == {"poll:plc-1": 3}
    failed = [line for line in logged if line["event"] == "task_failed"]
    assert len(failed) == 1, "the same reason again is not logged again"
    assert failed[0]["task"] == "poll:plc-1"
    assert isinstance(failed[0]["exc_info"], RuntimeError)
    assert fatal == []
    assert await tasks.stop("poll:plc-1")


async def test_a_task_that_returns_while_it_should_run_is_a_failure() -> None:
    tasks = supervisor([])
    ran = asyncio.Event()
    runs = 0

    async def returns() -> None:
        nonlocal runs
        runs += 1
        if runs == 2:
            ran.set()

    tasks.start("statistician", returns)
    await asyncio.wait_for(ran.wait(), 5)
    assert tasks.failures()["statistician"] >= 1
    await tasks.stop("statistician")


async def test_a_task_told_to_end_by_itself_may_return() -> None:
    tasks = supervisor([])
    stop = asyncio.Event()

    async def until_stopped() -> None:
        await stop.wait()

    with capture_logs() as logged:
        tasks.start("uplink", until_stopped, core=True)
        await asyncio.sleep(0)
        tasks.ending("uplink")
        stop.set()
        await asyncio.sleep(0.05)
    assert tasks.failures() == {"uplink": 0}
    assert logged == []


async def test_a_core_task_that_keeps_failing_gives_up_and_says_why() -> None:
    fatal: list[str] = []
    tasks = supervisor(fatal)
    work = Flaky(fails=100, error=OSError("disk I/O error"))
    tasks.start("committer", work, core=True)
    for _ in range(200):
        if fatal:
            break
        await asyncio.sleep(0.01)
    assert work.runs == CORE_FAILURES, "not restarted after giving up"
    (reason,) = fatal
    assert "committer" in reason
    assert "disk I/O error" in reason


async def test_a_device_poller_never_gives_up() -> None:
    fatal: list[str] = []
    tasks = supervisor(fatal)
    work = Flaky(fails=3 * CORE_FAILURES)
    tasks.start("poll:plc-1", work)
    await asyncio.wait_for(work.running.wait(), 5)
    assert fatal == []
    await tasks.stop("poll:plc-1")


async def test_failure_and_restart_hooks_run_and_a_failing_hook_is_contained() -> None:
    seen: list[str] = []
    tasks = supervisor([])
    work = Flaky(fails=2)

    def on_failure(error: BaseException) -> None:
        seen.append(f"failed: {error}")
        raise ValueError("a broken hook")

    with capture_logs() as logged:
        tasks.start("poll:plc-1", work, on_failure=on_failure, on_restart=lambda: seen.append("up"))
        await asyncio.wait_for(work.running.wait(), 5)
    assert seen == ["failed: bug", "up", "failed: bug", "up"]
    assert [line["event"] for line in logged].count("task_hook_failed") == 2
    await tasks.stop("poll:plc-1")


async def test_a_task_that_swallows_its_cancellation_does_not_hang_the_stop() -> None:
    tasks = supervisor([])
    swallowing, released = asyncio.Event(), asyncio.Event()

    async def stubborn() -> None:
        while not released.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                swallowing.set()
                await asyncio.sleep(0.05)

    tasks.start("stubborn", stubborn)
    await swallowing.wait()
    with capture_logs() as logged:
        assert not await tasks.stop("stubborn", within_s=0.1)
    assert logged[-1]["event"] == "task_stop_timed_out"
    released.set()  # so the test's own event loop can close
