"""What a report's `ts` means (the spec): the time of the read that confirmed the value.

Against the project's asyncua simulator, which, like a real server, keeps a constant's
SourceTimestamp from when it was written, and can stamp changes hours off the true time
(`set_clock_offset`), as a PLC on local time taken for UTC does.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from opcua_helpers import device, tag
from opcua_sim import (
    Sim,
    opcua_sim_fixture,  # noqa: F401  # registers the fixture opcua_sim
)
from polling import read_until
from structlog.testing import capture_logs

from edge_agent.drivers.opcua.driver import OpcuaDriver
from edge_agent.model import Quality, Sample

pytestmark = pytest.mark.asyncio(loop_scope="session")

EIGHT_HOURS_S = 8 * 3600.0


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@pytest.fixture
async def drivers() -> AsyncIterator[list[OpcuaDriver]]:
    made: list[OpcuaDriver] = []
    yield made
    for driver in made:
        await driver.close()


async def test_a_constant_read_by_polling_is_stamped_with_the_read_not_its_last_change(
    opcua_sim: Sim, drivers: list[OpcuaDriver]
) -> None:
    """The constant's SourceTimestamp is from the server's start; each poll's report is
    current at the read, so heartbeats and statistics run on the time it was read."""
    driver = OpcuaDriver(device(opcua_sim.endpoint("plant"), [tag("T.CO", "s=Mine.Vent.CO")]))
    drivers.append(driver)
    await read_until(driver, lambda s: s[0].quality is Quality.GOOD)
    for _ in range(2):
        before = now_ms()
        (sample,) = await driver.read()
        assert (sample.value, sample.quality) == (4.5, Quality.GOOD)
        assert before <= sample.ts_ms <= now_ms()


async def test_a_subscription_from_a_clock_8h_off_is_stamped_on_arrival_counted_and_logged(
    opcua_sim: Sim, drivers: list[OpcuaDriver]
) -> None:
    server = opcua_sim.simulator["plant"]
    config = device(
        opcua_sim.endpoint("plant"),
        [tag("T.COUNT", "s=Mine.Vent.COUNT")],
        mode="subscribe",
        publishing_interval="100ms",
    )
    driver = OpcuaDriver(config)
    drivers.append(driver)
    try:
        with capture_logs() as logs:
            server.set_clock_offset(EIGHT_HOURS_S)
            sent: list[Sample] = []
            deadline = time.monotonic() + 10
            while driver.timestamps_replaced < 2 and time.monotonic() < deadline:
                sent += [s for s in await driver.read() if s.quality is Quality.GOOD]
                await asyncio.sleep(0.2)
            assert driver.timestamps_replaced >= 2, "two changes stamped 8 h ahead"
            assert sent, "the counter's changes were handed on"
            late = [s for s in sent if s.ts_ms > now_ms() + 60_000]
            assert late == [], "a timestamp 8 h ahead was sent"
            server.set_clock_offset(0)
            replaced = driver.timestamps_replaced
            deadline = time.monotonic() + 10
            while not any(e["event"] == "device_clock_agrees" for e in logs):
                assert time.monotonic() < deadline, "no change stamped right came"
                await driver.read()
                await asyncio.sleep(0.2)
            assert driver.timestamps_replaced <= replaced + 1  # one may have been on its way
        events = [e["event"] for e in logs if e["event"].startswith("device_clock")]
        assert events == ["device_clock_skewed", "device_clock_agrees"]
        skewed = next(e for e in logs if e["event"] == "device_clock_skewed")
        assert 28_700 <= skewed["skew_s"] <= 28_900
    finally:
        server.set_clock_offset(0)


async def test_an_unchanged_value_in_a_subscription_is_current_as_of_the_last_publish(
    opcua_sim: Sim, drivers: list[OpcuaDriver]
) -> None:
    """The constant's heartbeat carries the time the server last answered a Publish
    (data or keep-alive): recent, and never after the read that hands it on."""
    config = device(
        opcua_sim.endpoint("plant"),
        [tag("T.CO", "s=Mine.Vent.CO")],
        mode="subscribe",
        publishing_interval="100ms",
        keepalive_count=2,
    )
    driver = OpcuaDriver(config)
    drivers.append(driver)
    first = await read_until(driver, lambda s: bool(s) and s[0].quality is Quality.GOOD)
    for _ in range(5):
        await read_until(driver, lambda s: True, within=1)
        (sample,) = await driver.read()
        after = now_ms()
        assert sample.value == 4.5
        assert sample.ts_ms <= after
        assert after - sample.ts_ms <= 1_000  # within a keep-alive (200 ms) and some slack
        assert sample.ts_ms >= first[0].ts_ms


async def test_a_subscriptions_keepalive_is_sized_to_half_the_report_interval(
    opcua_sim: Sim, drivers: list[OpcuaDriver]
) -> None:
    """No keepalive_count: three publishing intervals of 100 ms fit in half of 0.6 s. The
    simulator grants what is asked, so no keep-alive is logged as too long."""
    config = device(
        opcua_sim.endpoint("plant"),
        [tag("T.CO", "s=Mine.Vent.CO")],
        mode="subscribe",
        publishing_interval="100ms",
    )
    driver = OpcuaDriver(config, report_every=0.6)
    drivers.append(driver)
    with capture_logs() as logs:
        await read_until(driver, lambda s: bool(s) and s[0].quality is Quality.GOOD)
    (up,) = [e for e in logs if e["event"] == "link_up"]
    assert up["keepalive"] == 0.3
    assert [e for e in logs if e["event"] == "keepalive_too_long"] == []
