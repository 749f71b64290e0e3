"""Outages of the `outage` server: a restart, a stall (a hung server or black-holed network),
and subscriptions the server forgot. Its tags go q=2 while it is away and come back after."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from opcua_helpers import by_tag, device, tag
from opcua_sim import (
    Sim,
    opcua_sim_fixture,  # noqa: F401  # registers the fixture opcua_sim
)
from polling import read_until
from structlog.testing import capture_logs

from edge_agent.demo.proxy import Proxy
from edge_agent.drivers.opcua.driver import OpcuaDriver
from edge_agent.model import LinkState, Quality

pytestmark = pytest.mark.asyncio(loop_scope="session")


def counter(sim: Sim, **fields: Any) -> OpcuaDriver:
    return OpcuaDriver(device(sim.endpoint("outage"), [tag("V.COUNT", "s=Vent.COUNT")], **fields))


def good(samples: list[Any]) -> bool:
    return bool(samples) and all(s.quality is Quality.GOOD for s in samples)


def down(samples: list[Any]) -> bool:
    return bool(samples) and all(s.quality is Quality.COMM and s.value is None for s in samples)


@pytest.mark.parametrize("mode", ["poll", "subscribe"])
async def test_a_server_restart_reads_q2_while_down_and_resumes(opcua_sim: Sim, mode: str) -> None:
    """The server closes every session (subscriptions die with them), is away 1.5 s, comes back:
    the link goes down, tags are q=2 meanwhile, and a new session (and subscription) brings
    the counter back, rising."""
    driver = counter(opcua_sim, mode=mode, publishing_interval="100ms", keepalive_count=3)
    try:
        before = await read_until(driver, good)
        restart = asyncio.create_task(opcua_sim.simulator["outage"].restart(down_for=1.5))
        await read_until(driver, down, within=5)
        assert driver.link is LinkState.DOWN
        await restart
        after = await read_until(driver, good, within=10)
        assert driver.link is LinkState.UP
        assert after[-1].value > before[-1].value  # type: ignore[operator]
    finally:
        await driver.close()


async def test_a_stalled_server_costs_bounded_reads_and_the_link_returns(opcua_sim: Sim) -> None:
    """The server accepts nothing and answers nothing: each read is bounded by the timeout (and
    the connect timeout), the tags are q=2; once it answers again, so does the driver."""
    server = opcua_sim.simulator["outage"]
    driver = counter(opcua_sim, timeout="500ms", connect_timeout="1s")
    try:
        await read_until(driver, good)
        await server.stall(True)
        longest = 0.0
        try:
            for _ in range(4):
                started = time.monotonic()
                samples = await driver.read()
                longest = max(longest, time.monotonic() - started)
                assert down(samples)
                await asyncio.sleep(0.2)
        finally:
            await server.stall(False)
        assert longest < 2.5  # a request timeout plus closing within one more
        assert driver.link is LinkState.DOWN
        await read_until(driver, good, within=10)
        assert driver.link is LinkState.UP
    finally:
        await driver.close()


async def test_a_subscription_the_server_forgot_is_made_again(opcua_sim: Sim) -> None:
    """The session stays but its subscription is gone (no data, no keep-alive): the watchdog
    says so within about 1.25 keep-alive periods plus the timeout, and a new one delivers."""
    driver = counter(
        opcua_sim, mode="subscribe", publishing_interval="100ms", keepalive_count=3, timeout="500ms"
    )
    try:
        first = by_tag(await read_until(driver, lambda s: "V.COUNT" in by_tag(s)))
        with capture_logs() as logs:
            assert await opcua_sim.simulator["outage"].drop_subscriptions() >= 1
            await read_until(driver, down, within=5)
            later = await read_until(
                driver,
                lambda s: good(s) and s[-1].value != first["V.COUNT"].value,
                within=5,
            )
        events = [e["event"] for e in logs]
        assert "subscription_stale" in events
        assert "subscription_made_again" in events
        assert "link_down" not in events
        assert later[-1].quality is Quality.GOOD
    finally:
        await driver.close()


@pytest.mark.parametrize("mode", ["poll", "subscribe"])
async def test_a_black_holed_network_is_bounded_and_the_link_returns(
    opcua_sim: Sim, mode: str
) -> None:
    """The route to the server goes silent (edge_agent.demo.proxy: nothing forwarded, nothing
    closed): reads stay bounded, the tags are q=2, and once packets flow again the driver
    reconnects and the counter rises."""
    port = int(opcua_sim.endpoint("outage").rsplit(":", 1)[1])
    with Proxy(port) as route:
        endpoint = f"opc.tcp://127.0.0.1:{route.port}"
        driver = OpcuaDriver(
            device(
                endpoint,
                [tag("V.COUNT", "s=Vent.COUNT")],
                mode=mode,
                publishing_interval="100ms",
                keepalive_count=3,
                timeout="500ms",
                connect_timeout="1s",
            )
        )
        try:
            before = await read_until(driver, good)
            route.pause()
            started = time.monotonic()
            await read_until(driver, down, within=10)
            assert time.monotonic() - started < 6
            assert driver.link is LinkState.DOWN
            route.resume()
            after = await read_until(driver, good, within=15)
            assert driver.link is LinkState.UP
            assert after[-1].value > before[-1].value  # type: ignore[operator]
        finally:
            await driver.close()
