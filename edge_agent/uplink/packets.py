"""What a broker says it takes (its CONNACK), and the size of a PUBLISH packet. Pure.

A broker's Maximum Packet Size covers the whole packet: the fixed header,
the topic, the packet id, the properties and the payload (after gzip). A
packet over it is a protocol error: the broker closes the connection (MQTT 5
brokers may first send DISCONNECT 0x95; Mosquitto 2.0.11 does not), so the
agent must never send one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

SPEC_MAX_PAYLOAD = 256 * 1024
"""uplink-v1: no payload is larger, whatever the broker takes."""


@dataclass(frozen=True, slots=True)
class Announced:
    """What the broker announced in its CONNACK (MQTT 5); MQTT 3.1.1 announces nothing."""

    receive_maximum: int = 65535
    maximum_packet_size: int | None = None
    """None: no limit announced."""
    retain_available: bool = True
    maximum_qos: int = 2
    topic_alias_maximum: int = 0
    """The agent sends no topic aliases, whatever the broker allows."""
    server_keep_alive: int | None = None
    """The keep-alive the broker imposes (paho then uses it)."""

    @classmethod
    def from_properties(cls, properties: Any) -> Announced:
        """From paho's CONNACK properties (None for MQTT 3.1.1)."""

        def get(name: str) -> int | None:
            value = getattr(properties, name, None)
            return None if value is None else int(value)

        qos = get("MaximumQoS")
        return cls(
            receive_maximum=get("ReceiveMaximum") or 65535,
            maximum_packet_size=get("MaximumPacketSize"),
            retain_available=get("RetainAvailable") != 0,
            maximum_qos=2 if qos is None else qos,
            topic_alias_maximum=get("TopicAliasMaximum") or 0,
            server_keep_alive=get("ServerKeepAlive"),
        )

    def as_log(self) -> dict[str, object]:
        """For the `mqtt_connected` line: what the broker announced."""
        return {
            "receive_maximum": self.receive_maximum,
            "maximum_packet_size": self.maximum_packet_size,
            "retain_available": self.retain_available,
            "maximum_qos": self.maximum_qos,
            "topic_alias_maximum": self.topic_alias_maximum,
            "server_keep_alive": self.server_keep_alive,
        }


def publish_size(topic: str, payload: int, mqtt5: bool) -> int:
    """Bytes of a QoS 1 PUBLISH of `payload` bytes on `topic`, as paho sends it (MQTT 5:
    an empty property list)."""
    remaining = 2 + len(topic.encode()) + 2 + (1 if mqtt5 else 0) + payload
    return 1 + _varint_size(remaining) + remaining


def payload_room(topic: str, announced: Announced, mqtt5: bool, *, gzip: bool) -> int:
    """The largest payload, before gzip, that a PUBLISH on `topic` may carry: the spec's
    256 KiB, or less where the broker's Maximum Packet Size says so. With gzip, room is
    kept for what deflate adds to data it cannot compress (zlib's deflateBound, plus the
    gzip header and trailer)."""
    limit = announced.maximum_packet_size
    if limit is None:
        return SPEC_MAX_PAYLOAD
    room = limit - publish_size(topic, 0, mqtt5) - (_varint_size(limit) - 1)
    if gzip:
        room -= (room >> 12) + (room >> 14) + 32
    return max(min(room, SPEC_MAX_PAYLOAD), 0)


def _varint_size(value: int) -> int:
    """Bytes of MQTT's variable byte integer for `value`."""
    size = 1
    while value >= 128:
        value >>= 7
        size += 1
    return size
