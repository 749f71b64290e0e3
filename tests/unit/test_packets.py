"""PUBLISH sizes and the room a broker's Maximum Packet Size leaves: the arithmetic behind
every fit, checked against the bytes paho queues and against gzip at its worst."""

from __future__ import annotations

import gzip
import os

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.uplink.packets import Announced, payload_room, publish_size

TOPIC = "safety/v1/91370200MA3C00000K/GW-0001/alarm"


@pytest.mark.parametrize("mqtt5", [True, False])
def test_publish_size_is_what_paho_queues(mqtt5: bool) -> None:
    protocol = paho.MQTTv5 if mqtt5 else paho.MQTTv311
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="c", protocol=protocol)
    client._sock = object()  # paho builds a PUBLISH only on a connected client
    queued: list[bytes] = []

    def queue(command: int, packet: bytearray, *rest: object) -> None:
        queued.append(bytes(packet))

    client._packet_queue = queue  # type: ignore[method-assign]
    for payload in (0, 1, 100, 127, 128, 16_000, 16_384, 70_000, 2_100_000):
        client._send_publish(1, TOPIC.encode(), b"x" * payload, qos=1)
        assert len(queued.pop()) == publish_size(TOPIC, payload, mqtt5)
    client._sock = None


@pytest.mark.parametrize("limit", [200, 227, 2000, 16_384, 70_000, 300_000])
@pytest.mark.parametrize("mqtt5", [True, False])
def test_the_room_fits_a_packet_even_after_gzip_of_what_cannot_be_compressed(
    limit: int, mqtt5: bool
) -> None:
    announced = Announced(maximum_packet_size=limit)
    room = payload_room(TOPIC, announced, mqtt5, gzip=False)
    assert publish_size(TOPIC, room, mqtt5) <= limit
    zipped_room = payload_room(TOPIC, announced, mqtt5, gzip=True)
    worst = gzip.compress(os.urandom(zipped_room), compresslevel=5, mtime=0)
    assert publish_size(TOPIC, len(worst), mqtt5) <= limit


def test_without_an_announced_limit_the_spec_payload_limit_holds() -> None:
    assert payload_room(TOPIC, Announced(), True, gzip=True) == 256 * 1024
    assert payload_room(TOPIC, Announced(maximum_packet_size=10**9), True, gzip=False) == 256 * 1024


def test_what_the_broker_announced_is_read_from_its_connack() -> None:
    class Connack:
        ReceiveMaximum = 20
        MaximumPacketSize = 2000
        RetainAvailable = 0
        MaximumQoS = 1
        TopicAliasMaximum = 10

    announced = Announced.from_properties(Connack())
    assert announced == Announced(20, 2000, False, 1, 10, None)
    assert Announced.from_properties(None) == Announced()
