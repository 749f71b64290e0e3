"""What a broker announces and refuses, on a real Mosquitto 2.0.11: Maximum Packet Size,
Retain Available, ACL refusals, MQTT 3.1.1's silence, and no false "cloned gateway".

The uplink runs in-process here, on a real store, so a test can prepare what the
store holds (messages packed before a failover, a long loss ledger) exactly.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import structlog
from conftest import ENTERPRISE, GATEWAY, PREFIX
from stores import OneMessage

from edge_agent.demo.broker import Mosquitto
from edge_agent.demo.platform import PlatformSubscriber, Received
from edge_agent.model import Quality, Reading
from edge_agent.store import Loss, Store, StoreSettings
from edge_agent.uplink.envelope import Identity
from edge_agent.uplink.mqtt import REFUSED_RETRY_S, Uplink
from edge_agent.uplink.settings import BrokerAddress, UplinkSettings

T0 = 1_764_441_000_000
PACKET_LIMIT = 2000


def settings(port: int, **changes: Any) -> UplinkSettings:
    fields: dict[str, Any] = {
        "brokers": (BrokerAddress("127.0.0.1", port),),
        "reconnect_min_s": 0.2,
        "reconnect_max_s": 1.0,
        "linger_s": 0.1,
    }
    return UplinkSettings(**(fields | changes))


@asynccontextmanager
async def running(store: Store, uplink_settings: UplinkSettings) -> AsyncIterator[Uplink]:
    identity = Identity(PREFIX, ENTERPRISE, GATEWAY)
    uplink = Uplink(uplink_settings, identity, store, lambda: {"plc-1": "up"}, "test")
    task = asyncio.create_task(uplink.run())
    try:
        yield uplink
    finally:
        await uplink.stop()
        await task


async def until(check: Callable[[], bool], within_s: float, what: str) -> None:
    deadline = time.monotonic() + within_s
    while not check():
        assert time.monotonic() < deadline, f"no {what} within {within_s} s"
        await asyncio.sleep(0.05)


def readings(messages: list[Received]) -> list[tuple[str, int]]:
    return [
        (item["tag"], item["ts"]) for m in messages if m.kind == "rt" for item in m.body["items"]
    ]


async def test_every_message_fits_the_broker_packet_size_and_nothing_is_lost(
    tmp_path: Path,
) -> None:
    """Messages packed before a failover to a broker with a smaller Maximum Packet Size are
    split under new `seq`s, the old ones declared skipped; new messages are packed within
    it; `state` leaves out its oldest loss entries to fit and says how many."""
    broker = Mosquitto(tmp_path / "broker", extra=f"max_packet_size {PACKET_LIMIT}\n")
    broker.start()
    platform = PlatformSubscriber(broker.port, PREFIX, client_id="platform-limits")
    platform.start()
    store = Store(StoreSettings(tmp_path / "store.db"), (500, 64 * 1024))
    await store.open()
    try:
        for n in range(120):  # more than state's 100 entries, and far more than fit 2,000 bytes
            store.record_loss(Loss(f"poll skipped {n}", items=1, first_ms=T0 + n, last_ms=T0 + n))
        sent = [(f"HZ01.T{n % 40:02d}", T0 + n) for n in range(1200)]
        for tag, ts in sent:
            store.add_reading(Reading(tag, "HZ01", ts, ts / 7, Quality.GOOD))
        # Packed under the old broker's 64 KiB, never acknowledged: too large for this one.
        packed_before = await store.take(OneMessage(slots=2), set(), T0 + 10_000, 0)
        assert [len(m.items_json) > PACKET_LIMIT for m in packed_before] == [True, True]
        for tag, ts in sent[:200]:  # and new ones after the failover
            store.add_reading(Reading(tag, "HZ01", ts + 60_000, 1.5, Quality.GOOD))
        sent += [(tag, ts + 60_000) for tag, ts in sent[:200]]

        with structlog.testing.capture_logs() as logs:
            async with running(store, settings(broker.port)) as uplink:
                await until(lambda: len(readings(platform.messages)) >= len(sent), 30, "readings")
                await until(lambda: drained(platform.messages), 10, "state with backlog 0")
                assert uplink.stats.connects == 1, logs
    finally:
        await store.close()
        platform.stop()
        broker.stop()

    messages = platform.messages
    assert sorted(readings(messages)) == sorted(sent), "every reading, once"
    state = [m for m in messages if m.kind == "state" and m.body.get("online")][-1].body
    skipped = {e["seq"][0] for e in state["losses"] if "re-packed" in str(e["reason"])}
    assert skipped == {m.seq for m in packed_before}
    received = {m.body["seq"] for m in messages if m.kind == "rt"}
    assert received | skipped == set(range(1, max(received) + 1)), "no undeclared seq gap"
    assert state["losses_trimmed"] > 0
    assert state["losses_total"]["entries"] == 122
    connected = next(e for e in logs if e["event"] == "mqtt_connected")
    assert connected["maximum_packet_size"] == PACKET_LIMIT
    assert not [e for e in logs if "taken_over" in e["event"]]


def drained(messages: list[Received]) -> bool:
    states = [m for m in messages if m.kind == "state" and m.body.get("online")]
    return bool(states) and states[-1].body["backlog"] == 0


async def test_an_item_too_large_for_any_packet_is_declared_lost_not_resent(
    tmp_path: Path,
) -> None:
    """A string value longer than the broker's packet size can never be delivered: it is
    declared in `state.losses` and the readings after it go on."""
    broker = Mosquitto(tmp_path / "broker", extra=f"max_packet_size {PACKET_LIMIT}\n")
    broker.start()
    platform = PlatformSubscriber(broker.port, PREFIX, client_id="platform-large")
    platform.start()
    store = Store(StoreSettings(tmp_path / "store.db"), (500, 64 * 1024))
    await store.open()
    try:
        store.add_reading(Reading("HZ01.MSG", "HZ01", T0, "x" * 3000, Quality.GOOD))
        store.add_reading(Reading("HZ01.T01", "HZ01", T0 + 1, 2.5, Quality.GOOD))
        async with running(store, settings(broker.port)):
            await until(lambda: ("HZ01.T01", T0 + 1) in readings(platform.messages), 15, "T01")
            await until(lambda: drained(platform.messages), 10, "state with backlog 0")
    finally:
        await store.close()
        platform.stop()
        broker.stop()
    state = [m for m in platform.messages if m.kind == "state" and m.body.get("online")][-1]
    lost = [e for e in state.body["losses"] if "larger than" in str(e["reason"])]
    assert lost == [
        {
            "reason": "rt item larger than the broker's maximum packet size",
            "items": 1,
            "first": T0,
            "last": T0,
        }
    ]
    assert ("HZ01.MSG", T0) not in readings(platform.messages)


ACL_DENY_READINGS = (
    "topic readwrite safety/v1/+/+/state\n"
    "topic readwrite safety/v1/+/+/meta\n"
    "topic read safety/v1/#\n"
)


async def test_an_acl_refusal_is_no_clone_and_delivery_resumes_within_30_s(
    tmp_path: Path,
) -> None:
    """Mosquitto 2.0.11 answers a denied publish with PUBACK 0x87 or closes the connection
    without a word: the messages stay in the store, the refusal is a log line per reason
    (not one per message) and the cause /healthz shows, no clone is suspected, and once the
    ACL allows the topic again everything arrives within REFUSED_RETRY_S."""
    acl = tmp_path / "acl"
    acl.write_text(ACL_DENY_READINGS)
    broker = Mosquitto(tmp_path / "broker", extra=f"acl_file {acl}\n")
    broker.start()
    platform = PlatformSubscriber(broker.port, PREFIX, client_id="platform-acl")
    platform.start()
    store = Store(StoreSettings(tmp_path / "store.db"), (20, 64 * 1024))
    await store.open()
    sent = [(f"HZ01.T{n % 10}", T0 + n) for n in range(200)]
    try:
        for tag, ts in sent:
            store.add_reading(Reading(tag, "HZ01", ts, 1.0, Quality.GOOD))
        with structlog.testing.capture_logs() as logs:
            async with running(store, settings(broker.port)) as uplink:
                await until(lambda: uplink.stats.refused >= 10, 10, "ten refusals")
                assert str(uplink.stats.refusal).endswith("(rt)")
                acl.write_text("topic readwrite safety/v1/#\n")
                assert broker.pid is not None
                os.kill(broker.pid, signal.SIGHUP)  # Mosquitto reads its ACL file again
                allowed = time.monotonic()
                await until(lambda: len(readings(platform.messages)) >= len(sent), 40, "all")
                assert time.monotonic() - allowed <= REFUSED_RETRY_S + 5
                assert uplink.stats.refusal is None
    finally:
        await store.close()
        platform.stop()
        broker.stop()
    assert sorted(set(readings(platform.messages))) == sorted(sent)
    refused_lines = [e for e in logs if e["event"] == "mqtt_publish_refused"]
    assert len(refused_lines) == len({e["reason"] for e in refused_lines}), refused_lines
    print("\n".join(f"{e['event']}: {e.get('reason')}" for e in logs if "mqtt" in e["event"]))
    assert not [e for e in logs if "taken_over" in e["event"]]
    states = [m.body["online"] for m in platform.messages if m.kind == "state"]
    assert all(states[:-1]), "offline only at the stop: the will was never sent"


async def test_mqtt_3_1_1_cannot_tell_a_denied_publish_from_a_delivered_one(
    tmp_path: Path,
) -> None:
    """Pinned: on MQTT 3.1.1 Mosquitto acknowledges a publish its ACL denies with a plain
    PUBACK, so the message is deleted as delivered. The agent says so at connect."""
    acl = tmp_path / "acl"
    acl.write_text(ACL_DENY_READINGS)
    broker = Mosquitto(tmp_path / "broker", extra=f"acl_file {acl}\n")
    broker.start()
    platform = PlatformSubscriber(broker.port, PREFIX, client_id="platform-311")
    platform.start()
    store = Store(StoreSettings(tmp_path / "store.db"), (20, 64 * 1024))
    await store.open()
    try:
        store.add_reading(Reading("HZ01.T1", "HZ01", T0, 1.0, Quality.GOOD))
        with structlog.testing.capture_logs() as logs:
            async with running(store, settings(broker.port, mqtt5=False)) as uplink:
                await until(lambda: uplink.stats.acked >= 1, 10, "the PUBACK")
                await until(lambda: drained(platform.messages), 10, "state with backlog 0")
    finally:
        await store.close()
        platform.stop()
        broker.stop()
    assert not readings(platform.messages), "denied, yet acknowledged: lost on 3.1.1"
    (warning,) = [e for e in logs if e["event"] == "mqtt_3_1_1_in_use"]
    assert "acknowledge the message" in warning["cannot"]


async def test_a_close_for_an_oversized_publish_blames_that_publish_not_a_clone(
    tmp_path: Path,
) -> None:
    """MQTT 3.1.1 announces no packet size, and Mosquitto 2.0.11 closes the connection on
    an oversized packet without a word: the close blames the publish just sent, which is
    set aside, and smaller messages go on; no "cloned gateway"."""
    broker = Mosquitto(tmp_path / "broker", extra=f"max_packet_size {PACKET_LIMIT}\n")
    broker.start()
    platform = PlatformSubscriber(broker.port, PREFIX, client_id="platform-close")
    platform.start()
    store = Store(StoreSettings(tmp_path / "store.db"), (500, 64 * 1024))
    await store.open()
    try:
        for n in range(300):  # one message of about 15 kB
            store.add_reading(Reading(f"HZ01.T{n % 30:02d}", "HZ01", T0 + n, 1.0, Quality.GOOD))
        with structlog.testing.capture_logs() as logs:
            async with running(store, settings(broker.port, mqtt5=False)) as uplink:
                await until(lambda: uplink.stats.connects >= 1, 10, "a connection")
                await until(
                    lambda: any(e["event"] == "mqtt_close_blamed_publish" for e in logs),
                    10,
                    "the close blaming the publish",
                )
                store.add_reading(Reading("HZ01.SMALL", "HZ01", T0 + 999, 2.0, Quality.GOOD))
                await until(
                    lambda: ("HZ01.SMALL", T0 + 999) in readings(platform.messages),
                    15,
                    "the small message after it",
                )
    finally:
        await store.close()
        platform.stop()
        broker.stop()
    assert not [e for e in logs if "taken_over" in e["event"]]


async def test_a_broker_without_retained_messages_gets_an_unretained_will(
    tmp_path: Path,
) -> None:
    """Mosquitto with `retain_available false` refuses a retained will (CONNACK 0x9A): the
    agent connects again at once with an unretained one, and says what the platform loses."""
    broker = Mosquitto(tmp_path / "broker", extra="retain_available false\n")
    broker.start()
    platform = PlatformSubscriber(broker.port, PREFIX, client_id="platform-noretain")
    platform.start()
    store = Store(StoreSettings(tmp_path / "store.db"), (20, 64 * 1024))
    await store.open()
    try:
        store.add_reading(Reading("HZ01.T1", "HZ01", T0, 1.0, Quality.GOOD))
        with structlog.testing.capture_logs() as logs:
            async with running(store, settings(broker.port)):
                await until(lambda: bool(readings(platform.messages)), 10, "the reading")
                await until(lambda: drained(platform.messages), 10, "state with backlog 0")
    finally:
        await store.close()
        platform.stop()
        broker.stop()
    assert [e["event"] for e in logs if "retain" in e["event"]] == ["mqtt_retain_unavailable"]
    assert not [m for m in platform.messages if m.retained]


async def test_a_refused_state_waits_its_turn_and_the_readings_go_on(tmp_path: Path) -> None:
    """Mosquitto refuses `state` (ACL, PUBACK 0x87) and closes: only `state` is to blame, and
    it is tried again only after REFUSED_RETRY_S, on a new connection too, so the readings
    get through at once."""
    acl = tmp_path / "acl"
    acl.write_text("topic readwrite safety/v1/+/+/rt\ntopic readwrite safety/v1/+/+/meta\n")
    broker = Mosquitto(tmp_path / "broker", extra=f"acl_file {acl}\n")
    broker.start()
    platform = PlatformSubscriber(broker.port, PREFIX, client_id="platform-state")
    platform.start()
    store = Store(StoreSettings(tmp_path / "store.db"), (20, 64 * 1024))
    await store.open()
    sent = [(f"HZ01.T{n % 10}", T0 + n) for n in range(100)]
    try:
        for tag, ts in sent:
            store.add_reading(Reading(tag, "HZ01", ts, 1.0, Quality.GOOD))
        with structlog.testing.capture_logs() as logs:
            async with running(store, settings(broker.port)) as uplink:
                await until(lambda: len(readings(platform.messages)) >= len(sent), 10, "readings")
                assert uplink.stats.refused == 1
    finally:
        await store.close()
        platform.stop()
        broker.stop()
    assert not [e for e in logs if "taken_over" in e["event"]]
    assert not platform.of_kind("state")


async def test_an_idle_uplink_with_a_backfill_rate_sleeps(tmp_path: Path) -> None:
    """With `backfill_rate` set, an idle uplink woke every 10 ms to ask the store for work
    (20 ms of CPU a second per gateway): it wakes early only while back-fill is in debt."""
    broker = Mosquitto(tmp_path / "broker")
    broker.start()
    store = Store(StoreSettings(tmp_path / "store.db"), (20, 64 * 1024))
    await store.open()
    takes = 0
    take = store.take

    async def counted(*args: Any) -> Any:
        nonlocal takes
        takes += 1
        return await take(*args)

    store.take = counted  # type: ignore[method-assign]
    try:
        async with running(store, settings(broker.port, backfill_rate=20_000)) as uplink:
            await until(lambda: uplink.stats.connected, 10, "a connection")
            await asyncio.sleep(0.5)
            before = takes
            await asyncio.sleep(2.0)
            idle_takes = takes - before
    finally:
        await store.close()
        broker.stop()
    assert idle_takes <= 1.5 * 2.0 / 0.1, f"{idle_takes} store calls in 2 s (linger 0.1 s)"


async def test_a_back_log_held_by_the_backfill_rate_is_told_once_not_each_round_trip(
    tmp_path: Path,
) -> None:
    """A `state` is due at once when the back-log drains; with back-fill waiting on its
    rate, the window empties after every message without the back-log draining."""
    broker = Mosquitto(tmp_path / "broker")
    broker.start()
    store = Store(StoreSettings(tmp_path / "store.db"), (20, 64 * 1024))
    await store.open()
    for n in range(2000):  # back-fill: stored before the uplink connects
        store.add_reading(Reading(f"HZ01.T{n % 50}", "HZ01", T0 + n, float(n), Quality.GOOD))
    await store.flush()
    try:
        async with running(store, settings(broker.port, backfill_rate=2_000)) as uplink:
            states = 0
            publish_state = uplink._publish_state

            async def counted(*args: Any) -> None:
                nonlocal states
                states += 1
                await publish_state(*args)

            uplink._publish_state = counted  # type: ignore[method-assign]
            await until(lambda: uplink.stats.connected, 10, "a connection")
            await asyncio.sleep(3.0)
            assert store.backlog(0).messages > 0, "the back-log is still draining"
    finally:
        await store.close()
        broker.stop()
    assert states <= 2, f"{states} states in 3 s while the back-log drained at its rate"
