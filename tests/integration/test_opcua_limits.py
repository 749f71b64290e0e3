"""Operation limits: every call the driver makes fits the server's, announced or found out.

The `limited` server (opcua_sim.py) allows 4 operations per Read, Browse,
TranslateBrowsePathsToNodeIds and CreateMonitoredItems and 6 monitored items
per subscription, and answers anything bigger as node-opcua and PLCs do
(BadTooManyOperations, BadTooManyMonitoredItems).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, MutableMapping
from typing import Any

import pytest
from opcua_helpers import by_tag, device, tag
from opcua_sim import (
    LIMIT,
    PER_SUBSCRIPTION,
    Sim,
    opcua_sim_fixture,  # noqa: F401  # registers the fixture opcua_sim
)
from polling import read_until
from structlog.testing import capture_logs

from edge_agent.drivers.opcua.driver import OpcuaDriver
from edge_agent.drivers.opcua.limits import Call
from edge_agent.drivers.simulator.opcua_server import OpcuaServer
from edge_agent.model import Quality, Sample

pytestmark = pytest.mark.asyncio(loop_scope="session")

# Ten constants V0..V9 (value i): four by NodeId, six by browse path.
TAGS = [tag(f"T.V{i}", f"s=Vent.V{i}") for i in range(4)] + [
    tag(f"T.V{i}", f"Vent/V{i}") for i in range(4, 10)
]
EXPECTED = {f"T.V{i}": (float(i), Quality.GOOD) for i in range(10)}


def values(samples: list[Sample]) -> dict[str, tuple[object, Quality]]:
    return {code: (s.value, s.quality) for code, s in by_tag(samples).items()}


def every_constant(samples: list[Sample]) -> bool:
    return values(samples) == EXPECTED


def learned(logs: list[MutableMapping[str, Any]]) -> dict[str, int]:
    """call -> the last size logged as found out."""
    return {e["call"]: e["size"] for e in logs if e["event"] == "operation_limit_learned"}


@pytest.fixture
async def limited(opcua_sim: Sim) -> OpcuaServer:
    return opcua_sim.simulator["limited"]


@pytest.fixture
async def hidden(limited: OpcuaServer) -> AsyncIterator[OpcuaServer]:
    """The limited server, its limits enforced but announced as 0 (no limit)."""
    await limited.announce_limits(False)
    try:
        yield limited
    finally:
        await limited.announce_limits(True)


async def test_poll_resolves_and_reads_ten_tags_in_calls_of_four(limited: OpcuaServer) -> None:
    """Six browse paths are translated and ten nodes read in calls of at most four (the
    server refuses none), and link_up shows the limits; before, a TranslateBrowsePaths of
    six failed the connect and every tag stayed q=2."""
    driver = OpcuaDriver(device(limited.endpoint, TAGS))
    refused = limited.refused_calls()
    try:
        with capture_logs() as logs:
            samples = await driver.read()
        assert values(samples) == EXPECTED
        assert limited.refused_calls() == refused
        up = next(e for e in logs if e["event"] == "link_up")
        assert up["limits"] == {
            "MaxNodesPerRead": LIMIT,
            "MaxNodesPerBrowse": LIMIT,
            "MaxNodesPerTranslateBrowsePathsToNodeIds": LIMIT,
            "MaxMonitoredItemsPerCall": LIMIT,
            "MaxNodesPerRegisterNodes": LIMIT,
            "MaxMonitoredItemsPerSubscription": PER_SUBSCRIPTION,
        }
        assert learned(logs) == {}
    finally:
        await driver.close()


async def test_subscribe_spreads_eleven_tags_over_subscriptions_of_six(
    limited: OpcuaServer,
) -> None:
    """Eleven monitored items: six in one subscription (CreateMonitoredItems of four, then
    two), five in a second; every tag delivers, the counter keeps rising, and the server
    refused no call; before, a CreateMonitoredItems of five was refused (`cannot subscribe`)."""
    tags = [*TAGS, tag("T.COUNT", "s=Vent.COUNT")]
    config = device(limited.endpoint, tags, mode="subscribe", publishing_interval="100ms")
    driver = OpcuaDriver(config)
    refused = limited.refused_calls()
    try:
        first = await read_until(driver, lambda s: len(by_tag(s)) == len(tags))
        assert {k: v for k, v in values(first).items() if k != "T.COUNT"} == EXPECTED
        later = await read_until(
            driver,
            lambda s: (
                "T.COUNT" in by_tag(s)
                and by_tag(s)["T.COUNT"].value != by_tag(first)["T.COUNT"].value
            ),
        )
        assert all(s.quality is Quality.GOOD for s in later)
        subscribed = driver._subscribed
        assert subscribed is not None
        assert [feed.items for feed in subscribed.feeds] == [PER_SUBSCRIPTION, 5]
        assert subscribed.refused == {}
        assert limited.refused_calls() == refused
    finally:
        await driver.close()


@pytest.mark.parametrize("mode", ["poll", "subscribe"])
async def test_limits_the_server_does_not_announce_are_found_out_once(
    hidden: OpcuaServer, mode: str
) -> None:
    """The server says 0 (no limit) but refuses more than four: each refused call is halved
    and sent again, every tag reads good, the size found out is logged once per kind of
    call, and a reconnect (the server restarts) starts from it: nothing more is refused."""
    config = device(hidden.endpoint, TAGS, mode=mode, publishing_interval="100ms")
    driver = OpcuaDriver(config)
    try:
        with capture_logs() as logs:
            await read_until(driver, every_constant)
        found = learned(logs)
        assert found["MaxNodesPerRead"] <= LIMIT  # the limits themselves are read first
        assert found["MaxNodesPerTranslateBrowsePathsToNodeIds"] <= LIMIT
        if mode == "subscribe":
            assert found["MaxMonitoredItemsPerCall"] <= LIMIT
        refused = hidden.refused_calls()
        assert refused > 0

        with capture_logs() as again:
            await hidden.restart()
            await read_until(driver, lambda s: all(x.quality is Quality.COMM for x in s))
            await read_until(driver, every_constant)
        assert "link_up" in [e["event"] for e in again]
        assert learned(again) == {}
        assert hidden.refused_calls() == refused
    finally:
        await driver.close()


async def test_a_subscription_limit_the_server_does_not_announce_is_found_out(
    hidden: OpcuaServer,
) -> None:
    """Items past the unannounced six per subscription are refused BadTooManyMonitoredItems:
    they go to a second subscription, and every tag delivers."""
    config = device(hidden.endpoint, TAGS, mode="subscribe", publishing_interval="100ms")
    driver = OpcuaDriver(config)
    try:
        with capture_logs() as logs:
            await read_until(driver, every_constant)
        assert learned(logs)["MaxMonitoredItemsPerSubscription"] == PER_SUBSCRIPTION
        subscribed = driver._subscribed
        assert subscribed is not None
        assert [feed.items for feed in subscribed.feeds] == [PER_SUBSCRIPTION, 4]
        assert driver._learned[Call.SUBSCRIPTION] == PER_SUBSCRIPTION
    finally:
        await driver.close()
