"""Sessions do not leak: each is closed when the driver lets it go, and times out soon on
the server when its CloseSession cannot arrive, so a server that caps sessions (the
`limited` server: LIMITED_SESSIONS) always has room for the plant's HMI."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from asyncua import Client
from opcua_helpers import device, tag
from opcua_sim import (
    LIMITED_SESSIONS,
    Sim,
    opcua_sim_fixture,  # noqa: F401  # registers the fixture opcua_sim
)
from polling import read_until

from edge_agent.demo.proxy import Proxy
from edge_agent.drivers.opcua.driver import OpcuaDriver
from edge_agent.drivers.opcua.session import SESSION_TIMEOUT_MIN
from edge_agent.model import LinkState, Quality

pytestmark = pytest.mark.asyncio(loop_scope="session")

COUNTER = [tag("V.COUNT", "s=Vent.COUNT")]


def good(samples: list[Any]) -> bool:
    return bool(samples) and all(s.quality is Quality.GOOD for s in samples)


def down(samples: list[Any]) -> bool:
    return bool(samples) and all(s.quality is Quality.COMM for s in samples)


async def sessions_at_most(sim: Sim, most: int, within: float) -> int:
    """The server's session count once it is `most` or less, or when `within` s have passed."""
    server = sim.simulator["limited"]
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:  # the count has no event to wait on: look every 100 ms
        if server.sessions() <= most:
            break
        await asyncio.sleep(0.1)
    return server.sessions()


async def test_stop_and_a_one_shot_read_close_their_session(opcua_sim: Sim) -> None:
    """A subscribed session (which a server keeps past a lost connection) is gone from the
    server as soon as the driver closes, as is `read_all`'s; the session timeout asked for is
    the short one, not asyncua's hour."""
    server = opcua_sim.simulator["limited"]
    before = await sessions_at_most(opcua_sim, 0, within=SESSION_TIMEOUT_MIN + 2)
    config = device(server.endpoint, COUNTER, mode="subscribe", publishing_interval="100ms")
    driver = OpcuaDriver(config)
    try:
        await read_until(driver, lambda s: "V.COUNT" in {x.tag for x in s})
        assert server.sessions() == before + 1
        assert driver._session is not None
        assert driver._session.client.session_timeout == SESSION_TIMEOUT_MIN * 1000
    finally:
        await driver.close()
    assert server.sessions() == before
    survey = await OpcuaDriver(config).read_all()
    assert survey.failure is None
    assert server.sessions() == before


async def test_ten_black_holed_reconnects_leave_room_for_another_client(opcua_sim: Sim) -> None:
    """Ten times the route goes silent until the driver gives its session up, then comes back
    with the old connections forgotten (a NAT or firewall that dropped them): the CloseSession
    never arrives and the server keeps each subscribed session until it times out. With the
    driver's short session timeout the server soon holds at most two sessions and another
    client connects; with asyncua's hour the eight-session server filled up and refused even
    the driver."""
    server = opcua_sim.simulator["limited"]
    await sessions_at_most(opcua_sim, 0, within=SESSION_TIMEOUT_MIN + 2)
    with Proxy(server.port) as route:
        config = device(
            f"opc.tcp://127.0.0.1:{route.port}",
            COUNTER,
            mode="subscribe",
            publishing_interval="100ms",
            keepalive_count=3,
            timeout="500ms",
            connect_timeout="1s",
        )
        driver = OpcuaDriver(config)
        try:
            for _ in range(10):
                await read_until(driver, good, within=10)
                route.pause()
                await read_until(driver, down, within=10)
                route.reset()
                route.resume()
            await read_until(driver, good, within=10)
            assert driver.link is LinkState.UP
            assert await sessions_at_most(opcua_sim, 2, within=SESSION_TIMEOUT_MIN + 2) <= 2
            hmi = Client(server.endpoint, timeout=2)
            await hmi.connect()
            await hmi.disconnect()
        finally:
            await driver.close()
    assert LIMITED_SESSIONS < 10, "the cap is what ten leaked sessions would exceed"
