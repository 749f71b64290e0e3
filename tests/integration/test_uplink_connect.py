"""A connect cannot outlive its timeout, and a protocol mismatch is named.

A connect used to run in a worker thread that no timeout could cancel: one
abandoned on its timeout (a slow DNS answer, a stalled TLS handshake) could
still reach the broker later, with the gateway's client id, and take the next
live session over. Every step now runs on the event loop and its socket is
closed when the time is up.
"""

from __future__ import annotations

import asyncio
import gc
import gzip
import json
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import structlog
from conftest import ENTERPRISE, GATEWAY, PREFIX

from edge_agent.demo.proxy import Proxy
from edge_agent.store import Store, StoreSettings
from edge_agent.uplink.envelope import Identity
from edge_agent.uplink.mqtt import Uplink
from edge_agent.uplink.probe import CONNECT_3_1_1
from edge_agent.uplink.session import ConnectFailed, Endpoint, Session, TlsFiles, Will
from edge_agent.uplink.settings import BrokerAddress, UplinkSettings

TIMEOUT_S = 1.0

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def fake_broker(handler: Handler) -> AsyncIterator[int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]


def session(port: int, *, tls: TlsFiles | None = None, host: str = "127.0.0.1") -> Session:
    endpoint = Endpoint(host, port, GATEWAY, True, 30, TIMEOUT_S, tls=tls)
    return Session(endpoint, Will("t/state", b"{}"), lambda mid, reason: None)


def open_descriptors() -> int:
    """Descriptors open now, after the collector closed what earlier tests left to it
    (otherwise one closed between two counts hides a leak, or fails a test that has none)."""
    gc.collect()
    return len(os.listdir("/proc/self/fd"))


async def test_a_stalled_tls_handshake_is_given_up_and_its_socket_closed() -> None:
    """The broker's side sees the connection closed at the timeout: nothing can follow."""
    closed_after: list[float] = []

    async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted = time.monotonic()
        await reader.read(4096)  # the ClientHello, never answered
        await reader.read()  # until the client closes
        closed_after.append(time.monotonic() - accepted)
        writer.close()

    async with fake_broker(stall) as port:
        before = open_descriptors()
        started = time.monotonic()
        with pytest.raises(ConnectFailed, match="within 1 s"):
            await session(port, tls=TlsFiles()).connect()
        assert time.monotonic() - started < TIMEOUT_S + 0.5
        await asyncio.sleep(0.2)
        assert closed_after, "the server must see the client close the stalled handshake"
        assert closed_after[0] < TIMEOUT_S + 0.5
        assert open_descriptors() == before, "no socket may leak"


async def test_a_name_that_takes_forever_to_resolve_is_given_up_at_the_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    loop = asyncio.get_running_loop()

    async def never(*args: object, **kwargs: object) -> list[object]:
        await asyncio.sleep(3600)
        return []

    monkeypatch.setattr(loop, "getaddrinfo", never)
    started = time.monotonic()
    with pytest.raises(ConnectFailed, match="within 1 s"):
        await session(1883, host="broker.invalid").connect()
    assert time.monotonic() - started < TIMEOUT_S + 0.5


async def test_a_connect_that_gets_no_connack_closes_its_socket() -> None:
    connections: list[bool] = []

    async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(4096)  # CONNECT, never answered
        connections.append(await reader.read() == b"")
        writer.close()

    async with fake_broker(mute) as port:
        before = open_descriptors()
        with pytest.raises(ConnectFailed, match="no CONNACK"):
            await session(port).connect()
        await asyncio.sleep(0.2)
        assert connections == [True]
        assert open_descriptors() == before


def protocol_level(connect: bytes) -> int:
    """The protocol level of a CONNECT: after the fixed header and the name "MQTT"."""
    at = 1
    while connect[at] & 0x80:
        at += 1
    return connect[at + 1 + 6]


async def speaks_3_1_1_only(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Like RabbitMQ 3.10: closes on an MQTT 5 CONNECT, answers a 3.1.1 one."""
    connect = await reader.read(4096)
    if protocol_level(connect) == 4:
        writer.write(bytes([0x20, 0x02, 0x00, 0x00]))
        await writer.drain()
        await reader.read()
    writer.close()


async def closes_everything(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read(4096)
    writer.close()


@pytest.mark.parametrize(
    ("broker", "named"), [(speaks_3_1_1_only, True), (closes_everything, False)]
)
async def test_an_mqtt_5_connect_to_a_3_1_1_broker_says_to_set_the_protocol(
    tmp_path: Path, broker: Handler, named: bool
) -> None:
    """Only a broker that answers an MQTT 3.1.1 CONNECT is said to speak 3.1.1 only."""
    store = Store(StoreSettings(tmp_path / "store.db"), (20, 64 * 1024))
    await store.open()
    async with fake_broker(broker) as port:
        settings = UplinkSettings(
            brokers=(BrokerAddress("127.0.0.1", port),), reconnect_max_s=0.5, connect_timeout_s=2
        )
        uplink = Uplink(settings, Identity(PREFIX, ENTERPRISE, GATEWAY), store, dict, "test")
        with structlog.testing.capture_logs() as logs:
            task = asyncio.create_task(uplink.run())
            await asyncio.sleep(1.5)
            await uplink.stop()
            await task
    await store.close()
    mismatch = [e for e in logs if e["event"] == "mqtt_protocol_mismatch"]
    assert bool(mismatch) is named, logs
    if named:
        assert 'set uplink.mqtt.protocol: "3.1.1"' in mismatch[0]["hint"]
        assert "MQTT 3.1.1 only" in mismatch[0]["hint"]


async def test_a_broker_out_of_reach_is_told_once_then_summed_up_then_its_return(
    tmp_path: Path, link: Proxy
) -> None:
    """Every retry fails, as on a dead route: `mqtt_connect_failed` once, a summary every
    0.3 s (5 min in the field) with the count, then `mqtt_connect_recovered` with the
    failures, before `mqtt_connected`."""
    store = Store(StoreSettings(tmp_path / "store.db"), (20, 64 * 1024))
    await store.open()
    settings = UplinkSettings(
        brokers=(BrokerAddress("127.0.0.1", link.port),),
        connect_timeout_s=0.1,
        reconnect_min_s=0.05,
        reconnect_max_s=0.1,
    )
    identity = Identity(PREFIX, ENTERPRISE, GATEWAY)
    uplink = Uplink(settings, identity, store, dict, "test", summary_every_s=0.3)
    link.pause()
    with structlog.testing.capture_logs() as logs:
        task = asyncio.create_task(uplink.run())
        await asyncio.sleep(1.0)
        link.resume()
        while not any(e["event"] == "mqtt_connected" for e in logs):
            assert not task.done(), logs
            await asyncio.sleep(0.05)
        await uplink.stop()
        await task
    await store.close()
    events = [e for e in logs if e["event"].startswith("mqtt_connect")]
    first, *summaries, recovered, connected = events
    assert first["event"] == "mqtt_connect_failed"
    assert "CONNACK" in first["reason"]
    assert len(summaries) >= 2
    assert {e["event"] for e in summaries} == {"mqtt_connect_still_failing"}
    assert recovered["event"] == "mqtt_connect_recovered"
    assert recovered["failures"] >= sum(s["count"] for s in summaries) > len(summaries)
    assert connected["event"] == "mqtt_connected"
    assert {e["broker"] for e in events[:-1]} == {f"127.0.0.1:{link.port}"}


def test_the_probe_never_uses_the_gateways_client_id() -> None:
    """An empty client id: the broker assigns one, so the probe cannot take a session over."""
    assert CONNECT_3_1_1[-2:] == b"\x00\x00"
    assert protocol_level(CONNECT_3_1_1) == 4


def test_with_gzip_the_will_is_compressed_too() -> None:
    """`batch.gzip` covers every payload, the will the broker sends for the agent included."""
    settings = UplinkSettings(brokers=(BrokerAddress("127.0.0.1", 1883),), gzip=True)
    uplink = Uplink(settings, Identity(PREFIX, ENTERPRISE, GATEWAY), None, dict, "test")  # type: ignore[arg-type]
    will = uplink._will()
    assert will.payload[:2] == b"\x1f\x8b"
    assert json.loads(gzip.decompress(will.payload)) == {
        "v": 1,
        "ent": ENTERPRISE,
        "gw": GATEWAY,
        "online": False,
    }
