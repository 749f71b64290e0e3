"""An uplink with nothing stored to send does not ask the store again every linger: it
waits for a commit (`Uplink.stored`) or an alarm, and what is committed then goes out
at once. On a real Mosquitto, with the uplink in-process on a real store."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import ENTERPRISE, GATEWAY, PREFIX

from edge_agent.demo.broker import Mosquitto
from edge_agent.demo.platform import PlatformSubscriber, Received
from edge_agent.model import Quality, Reading
from edge_agent.store import Store, StoreSettings
from edge_agent.uplink.envelope import Identity
from edge_agent.uplink.mqtt import Uplink
from edge_agent.uplink.settings import BrokerAddress, UplinkSettings

T0 = 1_764_441_000_000


def delivered(tag: str) -> Callable[[list[Received]], bool]:
    def check(messages: list[Received]) -> bool:
        return any(
            item["tag"] == tag for m in messages if m.kind == "rt" for item in m.body["items"]
        )

    return check


async def test_an_idle_uplink_waits_for_a_commit_and_sends_it_at_once(
    tmp_path: Path, broker: Mosquitto, platform: PlatformSubscriber
) -> None:
    store = Store(StoreSettings(tmp_path / "store.db"), (500, 64 * 1024))
    await store.open()
    store.add_reading(Reading("HZ01.T1", "HZ01", T0, 1.0, Quality.GOOD))
    settings = UplinkSettings(brokers=(BrokerAddress("127.0.0.1", broker.port),), linger_s=0.1)
    uplink = Uplink(settings, Identity(PREFIX, ENTERPRISE, GATEWAY), store, dict, "test")
    takes = 0
    take = store.take

    async def counted(*args: Any, **kwargs: Any) -> Any:
        nonlocal takes
        takes += 1
        return await take(*args, **kwargs)

    store.take = counted  # type: ignore[method-assign]
    running = asyncio.create_task(uplink.run())
    try:
        await asyncio.to_thread(platform.wait_for, delivered("HZ01.T1"), 10, "the first")
        await asyncio.sleep(0.5)  # its PUBACK, and the take after the window emptied
        before = takes
        await asyncio.sleep(1.5)
        assert takes - before <= 1, "no look every linger_s (0.1 s) with nothing stored"
        store.add_reading(Reading("HZ01.T2", "HZ01", T0 + 1, 2.0, Quality.GOOD))
        await store.flush()
        uplink.stored()
        await asyncio.to_thread(platform.wait_for, delivered("HZ01.T2"), 1.0, "at once")
    finally:
        await uplink.stop()
        await running
        await store.close()
