"""The poller: one line per state change of a failing driver, the device's figures, stalls."""

from __future__ import annotations

import asyncio
import time

from structlog.testing import capture_logs

from edge_agent.model import LinkState, Quality, Sample
from edge_agent.poller import Poller


class FakeDriver:
    """A driver whose next reads the test scripts: samples, an exception, or a hang."""

    def __init__(self, *script: list[Sample] | Exception | None) -> None:
        self.script = list(script)
        self.link = LinkState.DOWN
        self.closed = False

    @property
    def name(self) -> str:
        return "plc-1"

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


async def run(poller: Poller, seconds: float) -> None:
    poller.start()
    await asyncio.sleep(seconds)
    await poller.stop()


async def test_a_driver_raising_on_every_poll_logs_once_not_per_poll() -> None:
    driver = FakeDriver(RuntimeError("bug"), RuntimeError("bug"), RuntimeError("bug"), GOOD)
    with capture_logs() as logged:
        poller = Poller(driver, 0.01, lambda p, s: None)
        await run(poller, 0.2)
    events = [line["event"] for line in logged if line["event"].startswith("poll_")]
    assert events == ["poll_failed", "poll_recovered"]
    assert logged[0]["device"] == "plc-1"
    figures = poller.snapshot(time.monotonic())
    assert figures.errors == 3
    assert figures.polls > 3
    assert driver.closed


async def test_reconnects_count_every_link_up_after_the_first() -> None:
    seen: list[list[Sample]] = []
    five = asyncio.Event()

    def on_poll(poller: Poller, samples: list[Sample]) -> None:
        poller.note_link()  # as the runtime does
        seen.append(samples)
        if len(seen) == 5:
            five.set()

    poller = Poller(FakeDriver(GOOD, DOWN, GOOD, DOWN, GOOD), 0.01, on_poll)
    poller.start()
    await five.wait()
    await poller.stop()
    figures = poller.snapshot(time.monotonic())
    assert figures.reconnects == 2
    assert figures.errors == 2, "the polls where every tag was bad"
    assert figures.latency.count == figures.polls


async def test_a_read_that_hangs_is_stuck_after_the_limit() -> None:
    poller = Poller(FakeDriver(None), 1.0, lambda p, s: None)
    poller.start()
    await asyncio.sleep(0.05)
    assert not poller.stuck(time.monotonic(), after_s=1.0)
    assert poller.stuck(time.monotonic() + 2.0, after_s=1.0)
    await poller.stop()


async def test_a_waiting_poller_is_not_stuck() -> None:
    poller = Poller(FakeDriver(GOOD), 60.0, lambda p, s: None)
    poller.start()
    await asyncio.sleep(0.05)
    assert not poller.stuck(time.monotonic() + 3600, after_s=1.0)
    await poller.stop()
