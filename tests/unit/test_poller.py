"""The poller: one line per state change of a failing driver, the device's figures, stalls."""

from __future__ import annotations

import asyncio
import time

from structlog.testing import capture_logs

from edge_agent.model import LinkState, Quality, Sample
from edge_agent.poller import STALL_AFTER_S, OnPoll, Poller


class FakeDriver:
    """A driver whose next reads the test scripts: samples, an exception, or a hang."""

    def __init__(self, *script: list[Sample] | Exception | None) -> None:
        self.script = list(script)
        self.link = LinkState.DOWN
        self.closed = False

    @property
    def name(self) -> str:
        return "plc-1"

    @property
    def link_reason(self) -> str | None:
        return None if self.link is LinkState.UP else "connection: connect refused"

    async def read(self) -> list[Sample]:
        step = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if step is None:
            await asyncio.Event().wait()  # hangs
        if isinstance(step, Exception):
            raise step
        assert step is not None
        self.link = LinkState.UP if any(not s.quality.is_bad for s in step) else LinkState.DOWN
        return step

    async def close(self) -> None:
        self.closed = True


GOOD = [Sample("HZ01.A", 1, 1.0, Quality.GOOD)]
DOWN = [Sample.bad("HZ01.A", 1, Quality.COMM)]


def poller_of(
    driver: FakeDriver,
    interval_s: float,
    on_poll: OnPoll | None = None,
    summary_every_s: float = 300.0,
) -> Poller:
    return Poller(
        driver,
        interval_s,
        on_poll or (lambda p, s: None),
        lambda *missed: None,
        summary_every_s=summary_every_s,
    )


async def run(poller: Poller, seconds: float) -> None:
    task = asyncio.create_task(poller.run())
    await asyncio.sleep(seconds)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await poller.close()


async def test_a_driver_raising_on_every_poll_logs_once_not_per_poll() -> None:
    driver = FakeDriver(RuntimeError("bug"), RuntimeError("bug"), RuntimeError("bug"), GOOD)
    with capture_logs() as logged:
        poller = poller_of(driver, 0.01)
        await run(poller, 0.2)
    events = [line["event"] for line in logged if line["event"].startswith("poll_")]
    assert events == ["poll_failed", "poll_recovered"]
    assert logged[0]["device"] == "plc-1"
    figures = poller.snapshot(time.monotonic())
    assert figures.errors == 3
    assert figures.polls > 3
    assert driver.closed


async def test_a_dead_device_logs_once_then_a_summary_per_period_then_its_recovery() -> None:
    """A driver that cannot reach its device does not raise; its link says it is down. 30
    polls so, summed up every 0.1 s (5 min in the field), then one that answers."""
    driver = FakeDriver(*[DOWN] * 30, GOOD)
    with capture_logs() as logged:
        poller = poller_of(driver, 0.01, summary_every_s=0.1)
        await run(poller, 0.45)
    lines = [line for line in logged if line["event"].startswith("poll_")]
    first, *summaries, recovered = lines
    assert (first["event"], first["reason"]) == ("poll_failed", "connection: connect refused")
    assert summaries, "no summary while the device was dead"
    assert {s["event"] for s in summaries} == {"poll_still_failing"}
    assert {s["reason"] for s in summaries} == {"connection: connect refused"}
    assert all(s["count"] > 0 and s["window_s"] >= 0 for s in summaries)
    assert (recovered["event"], recovered["failures"]) == ("poll_recovered", 30)
    assert {line["device"] for line in lines} == {"plc-1"}
    assert [line["log_level"] for line in lines] == ["warning"] * (len(lines) - 1) + ["info"]


async def test_reconnects_count_every_link_up_after_the_first() -> None:
    seen: list[list[Sample]] = []
    five = asyncio.Event()

    def on_poll(poller: Poller, samples: list[Sample]) -> None:
        poller.note_link()  # as the runtime does
        seen.append(samples)
        if len(seen) == 5:
            five.set()

    poller = poller_of(FakeDriver(GOOD, DOWN, GOOD, DOWN, GOOD), 0.01, on_poll)
    task = asyncio.create_task(poller.run())
    await five.wait()
    task.cancel()
    figures = poller.snapshot(time.monotonic())
    assert figures.reconnects == 2
    assert figures.errors == 2, "the polls where every tag was bad"
    assert figures.latency.count == figures.polls


async def test_a_read_that_hangs_past_its_interval_and_the_stall_limit_is_not_alive() -> None:
    poller = poller_of(FakeDriver(None), 1.0)
    task = asyncio.create_task(poller.run())
    await asyncio.sleep(0.05)
    assert poller.alive(time.monotonic())
    assert not poller.alive(time.monotonic() + 1.0 + STALL_AFTER_S + 1)
    task.cancel()


async def test_a_waiting_poller_is_alive_until_its_loop_misses_a_whole_stall() -> None:
    poller = poller_of(FakeDriver(GOOD), 60.0)
    task = asyncio.create_task(poller.run())
    await asyncio.sleep(0.05)
    assert poller.alive(time.monotonic() + 60)
    assert not poller.alive(time.monotonic() + 60 + STALL_AFTER_S + 1)
    task.cancel()


async def test_a_halted_poller_reads_as_down_and_alive() -> None:
    poller = poller_of(FakeDriver(GOOD), 1.0)
    poller.halt()
    assert poller.link is LinkState.DOWN
    assert poller.halted_at_ms is not None
    assert poller.alive(time.monotonic() + 3600)


class Slow(FakeDriver):
    """Each read takes the next of `seconds` (the last one again once they run out)."""

    def __init__(self, *seconds: float) -> None:
        super().__init__(GOOD)
        self.seconds = list(seconds)
        self.started: list[float] = []

    async def read(self) -> list[Sample]:
        self.started.append(time.monotonic())
        took = self.seconds.pop(0) if len(self.seconds) > 1 else self.seconds[0]
        await asyncio.sleep(took)
        return GOOD


async def test_a_poll_that_runs_past_deadlines_tells_which_it_skipped() -> None:
    missed: list[tuple[int, int, int]] = []
    poller = Poller(Slow(0.35), 0.1, lambda p, s: None, lambda p, n, a, b: missed.append((n, a, b)))
    task = asyncio.create_task(poller.run())
    await asyncio.sleep(0.5)
    task.cancel()
    # Polled at 0 (until 0.35), then at once for 0.3, whose interval had begun: 0.1 and
    # 0.2 went by whole before a poll could start.
    ((count, first_ms, last_ms), *_) = missed
    assert count == 2
    assert last_ms - first_ms == 100


async def test_a_poll_that_ran_past_the_next_deadline_is_followed_at_once() -> None:
    missed: list[int] = []
    driver = Slow(0.15, 0.01)
    poller = Poller(driver, 0.1, lambda p, s: None, lambda p, n, a, b: missed.append(n))
    task = asyncio.create_task(poller.run())
    await asyncio.sleep(0.25)
    task.cancel()
    first, catch_up, on_grid = driver.started[:3]
    assert catch_up - first < 0.17  # for the deadline at 0.1, not skipped to 0.2
    assert 0.19 < on_grid - first < 0.25  # and back on the grid
    assert missed == []


async def test_while_it_may_not_catch_up_a_late_poll_waits_for_the_grid() -> None:
    missed: list[int] = []
    driver = Slow(0.15, 0.01)
    poller = Poller(
        driver,
        0.1,
        lambda p, s: None,
        lambda p, n, a, b: missed.append(n),
        may_catch_up=lambda: False,
    )
    task = asyncio.create_task(poller.run())
    await asyncio.sleep(0.25)
    task.cancel()
    first, second = driver.started[:2]
    assert 0.19 < second - first < 0.25  # the deadline at 0.1 went by: skipped
    assert missed == [1]
