"""A stand-in for the provincial platform: a subscriber that keeps everything it receives.

It has a fixed client id and a persistent session and subscribes before the
agent starts, so with a broker that keeps what it acknowledged it misses
nothing, even across a broker restart. Used by the demo and the tests.
"""

from __future__ import annotations

import gzip
import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties


@dataclass(frozen=True, slots=True)
class Received:
    topic: str
    kind: str
    """The topic after the gateway: rt, alarm, stat, state, meta or meta/N."""
    body: dict[str, Any]
    retained: bool
    gzipped: bool = False
    """The payload arrived gzip-compressed (it starts with 1f 8b) and was inflated."""


class PlatformSubscriber:
    def __init__(
        self,
        port: int,
        prefix: str = "safety/v1",
        client_id: str = "platform",
        *,
        protocol: Literal["5", "3.1.1"] = "5",
        topics: Sequence[str] = (),
        credentials: tuple[str, str] | None = None,
    ) -> None:
        """`topics`: the topic filters to subscribe to; none: everything under `prefix`.
        A broker that holds retained messages for exact topics only (RabbitMQ) needs
        the exact topics here for a late subscriber to get `state` and `meta`.

        `protocol` "3.1.1" for a broker that lacks MQTT 5 (RabbitMQ); the session is
        persistent either way. `credentials`: user name and password, for a broker that
        wants them (ejabberd refuses a CONNECT without a user name).
        """
        self._port = port
        self._prefix = prefix
        self._topics = list(topics) or [f"{prefix}/#"]
        self._mqtt5 = protocol == "5"
        self._lock = threading.Lock()
        self._messages: list[Received] = []
        self._listeners: list[Callable[[Received], None]] = []
        self._subscribed = threading.Event()
        self._subscriptions = 0
        self._client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=MQTTProtocolVersion.MQTTv5 if self._mqtt5 else MQTTProtocolVersion.MQTTv311,
            clean_session=None if self._mqtt5 else False,
        )
        if credentials is not None:
            self._client.username_pw_set(*credentials)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        self._client.reconnect_delay_set(1, 2)

    def start(self, timeout: float = 10.0) -> None:
        """Connect with a persistent session and wait until the subscription holds."""
        if self._mqtt5:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = 3600
            self._client.connect_async(
                "127.0.0.1", self._port, keepalive=10, clean_start=False, properties=properties
            )
        else:  # the persistent session is the client's clean_session=False
            self._client.connect_async("127.0.0.1", self._port, keepalive=10)
        self._client.loop_start()
        if not self._subscribed.wait(timeout):
            raise TimeoutError("the platform subscriber could not subscribe")

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def on_message(self, listener: Callable[[Received], None]) -> None:
        self._listeners.append(listener)

    @property
    def subscriptions(self) -> int:
        """How many times the subscription was made: once per connection, so a broker
        that forgets sessions on a restart (ejabberd) has it again when this grows."""
        with self._lock:
            return self._subscriptions

    @property
    def messages(self) -> list[Received]:
        with self._lock:
            return list(self._messages)

    def of_kind(self, *kinds: str) -> list[Received]:
        return [m for m in self.messages if m.kind in kinds]

    def wait_for(
        self, predicate: Callable[[list[Received]], bool], timeout: float, what: str = ""
    ) -> None:
        deadline = time.monotonic() + timeout
        while not predicate(self.messages):
            if time.monotonic() > deadline:
                raise TimeoutError(f"not received within {timeout} s: {what or predicate}")
            time.sleep(0.05)

    def _on_connect(self, client: paho.Client, userdata: object, *args: object) -> None:
        client.subscribe([(topic, 1) for topic in self._topics])

    def _on_subscribe(self, client: paho.Client, userdata: object, *args: object) -> None:
        with self._lock:
            self._subscriptions += 1
        self._subscribed.set()

    def _on_message(self, client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        payload = msg.payload
        gzipped = payload[:2] == b"\x1f\x8b"
        if gzipped:
            payload = gzip.decompress(payload)
        received = Received(
            msg.topic,
            msg.topic.removeprefix(self._prefix + "/").split("/", 2)[-1],
            json.loads(payload),
            msg.retain,
            gzipped,
        )
        with self._lock:
            self._messages.append(received)
        for listener in self._listeners:
            listener(received)
