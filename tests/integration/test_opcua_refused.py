"""Tags refused at connect come back on their own while the session stays up.

The DCS engineer deploys a missing node minutes after the gateway connected: the
driver retries the refused tags (every RETRY_REFUSED_EVERY, lowered here) on the
live session, so they recover without a reconnect and without disturbing the
others. A server of this module's own, since nodes are added to it while it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, MutableMapping
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio
from asyncua import Node, Server, ua
from opcua_helpers import by_tag, device, tag
from opcua_sim import NAMESPACE
from polling import read_until
from structlog.testing import capture_logs

from edge_agent.drivers.opcua import driver as driver_module
from edge_agent.drivers.opcua.driver import OpcuaDriver
from edge_agent.model import LinkState, Quality, Sample

pytestmark = pytest.mark.asyncio(loop_scope="module")

RETRY = 0.3
"""The lowered retry interval of these tests, in seconds."""


@dataclass
class Plant:
    server: Server
    vent: Node
    """The folder Objects/Vent, in the plant namespace."""
    ns: int
    endpoint: str

    async def add(self, name: str, value: float) -> None:
        """Deploy the variable Vent.NAME (browse name NAME) into the running server."""
        await self.vent.add_variable(
            ua.NodeId(f"Vent.{name}", self.ns), ua.QualifiedName(name, self.ns), value
        )


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def plant() -> AsyncIterator[Plant]:
    """A server with Vent.COUNT, rising every 100 ms so that notifications keep coming."""
    server = Server()
    await server.init()
    server.set_endpoint("opc.tcp://127.0.0.1:0")
    ns = await server.register_namespace(NAMESPACE)
    vent = await server.nodes.objects.add_folder(
        ua.NodeId("Vent", ns), ua.QualifiedName("Vent", ns)
    )
    count = await vent.add_variable(
        ua.NodeId("Vent.COUNT", ns), ua.QualifiedName("COUNT", ns), 0, ua.VariantType.UInt32
    )
    await server.start()

    async def rise() -> None:
        for n in range(1, 2**31):
            await asyncio.sleep(0.1)
            await count.write_value(n, ua.VariantType.UInt32)

    rising = asyncio.create_task(rise())
    try:
        yield Plant(server, vent, ns, f"opc.tcp://127.0.0.1:{server.bserver.port}")
    finally:
        rising.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await rising
        await server.stop()


@pytest.fixture(autouse=True)
def quick_retry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(driver_module, "RETRY_REFUSED_EVERY", RETRY)


def events(
    logs: list[MutableMapping[str, Any]], event: str, code: str
) -> list[MutableMapping[str, Any]]:
    return [e for e in logs if e["event"] == event and e.get("tag") == code]


async def read_for(driver: OpcuaDriver, seconds: float) -> list[list[Sample]]:
    """Every read of `seconds`, one each 200 ms."""
    reads = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        reads.append(await driver.read())
        await asyncio.sleep(0.2)
    return reads


async def test_subscribe_picks_up_a_node_deployed_after_the_connect(plant: Plant) -> None:
    """A node missing at connect: its monitored item is refused (BadNodeIdUnknown) and its
    browse path does not resolve, both q=4. Once the node is added, both deliver within a
    retry, on the same session and subscription, while the counter never stops; a node that
    stays missing stays q=4 with one tag_bad line, however many retries pass."""
    tags = [
        tag("T.COUNT", "s=Vent.COUNT"),
        tag("T.LATE", "s=Vent.SUB"),
        tag("T.LATEPATH", "Vent/SUB"),
        tag("T.NEVER", "s=Vent.NEVER"),
        tag("T.NEVERPATH", "Vent/NEVER"),
    ]
    config = device(plant.endpoint, tags, mode="subscribe", publishing_interval="100ms")
    driver = OpcuaDriver(config)
    try:
        with capture_logs() as logs:
            first = by_tag(await read_until(driver, lambda s: "T.COUNT" in by_tag(s)))
            assert first["T.LATE"].quality is Quality.CONFIG
            assert first["T.LATEPATH"].quality is Quality.CONFIG
            subscribed, session = driver._subscribed, driver._session
            assert subscribed is not None
            assert session is not None
            before = await read_for(driver, 4 * RETRY)
            await plant.add("SUB", 7.5)
            after = await read_until(
                driver,
                lambda s: all(
                    by_tag(s).get(t, Sample.bad(t, 0, Quality.CONFIG)).value == 7.5
                    for t in ("T.LATE", "T.LATEPATH")
                ),
                within=3 * RETRY + 2,
            )
            counts = [by_tag(s).get("T.COUNT") for s in [*before, after]]
        assert all(c is not None and c.quality is Quality.GOOD for c in counts), counts
        assert counts[-1].value > first["T.COUNT"].value  # type: ignore[operator,union-attr]
        assert all(by_tag(s)["T.LATE"].quality is Quality.CONFIG for s in before)
        assert [e["reason"] for e in events(logs, "tag_bad", "T.LATE")] == [
            "monitored item refused: BadNodeIdUnknown"
        ]
        assert [e["reason"] for e in events(logs, "tag_bad", "T.LATEPATH")] == [
            "browse path /Vent/SUB not found (BadNoMatch)"
        ]
        for code in ("T.LATE", "T.LATEPATH"):
            assert len(events(logs, "tag_recovered", code)) == 1
        samples = by_tag(after)
        assert samples["T.NEVER"].quality is Quality.CONFIG
        assert samples["T.NEVERPATH"].quality is Quality.CONFIG
        assert len(events(logs, "tag_bad", "T.NEVER")) == 1
        assert len(events(logs, "tag_bad", "T.NEVERPATH")) == 1
        assert driver.link is LinkState.UP
        names = {e["event"] for e in logs}
        assert not names & {"link_down", "subscription_stale", "refused_retry_failed"}, names
        assert driver._subscribed is subscribed, "the same subscription"
        assert driver._session is not None
        assert driver._session.client is session.client, "the same connection"
    finally:
        await driver.close()


async def test_poll_picks_up_a_browse_path_and_a_namespace_that_appear_later(
    plant: Plant,
) -> None:
    """A browse path that does not resolve and a namespace URI the server does not have yet
    are q=4; once the node is deployed and the namespace registered, both read good on the
    same session, the good tag beside them reading good at every poll."""
    tags = [
        tag("T.COUNT", "s=Vent.COUNT"),
        tag("T.PATH", "Vent/POLLED"),
        tag("T.NSU", "nsu=urn:test:later;s=Later.X"),
        tag("T.NEVERPATH", "Vent/NEVER"),
    ]
    driver = OpcuaDriver(device(plant.endpoint, tags))
    try:
        with capture_logs() as logs:
            before = await read_for(driver, 4 * RETRY)
            session = driver._session
            assert session is not None
            await plant.add("POLLED", 1.25)
            later = await plant.server.register_namespace("urn:test:later")
            await plant.server.nodes.objects.add_variable(
                ua.NodeId("Later.X", later), ua.QualifiedName("X", later), 2.5
            )
            after = await read_until(
                driver,
                lambda s: by_tag(s)["T.PATH"].value == 1.25 and by_tag(s)["T.NSU"].value == 2.5,
                within=3 * RETRY + 2,
            )
        assert all(by_tag(s)["T.COUNT"].quality is Quality.GOOD for s in [*before, after])
        assert all(by_tag(s)["T.PATH"].quality is Quality.CONFIG for s in before)
        assert all(by_tag(s)["T.NSU"].quality is Quality.CONFIG for s in before)
        assert "no namespace 'urn:test:later'" in events(logs, "tag_bad", "T.NSU")[0]["reason"]
        for code in ("T.PATH", "T.NSU"):
            assert len(events(logs, "tag_bad", code)) == 1
            assert len(events(logs, "tag_recovered", code)) == 1
        assert by_tag(after)["T.NEVERPATH"].quality is Quality.CONFIG
        assert len(events(logs, "tag_bad", "T.NEVERPATH")) == 1
        assert driver.link is LinkState.UP
        assert not {e["event"] for e in logs} & {"link_down", "refused_retry_failed"}
        assert driver._session is not None
        assert driver._session.client is session.client, "the same connection"
    finally:
        await driver.close()
