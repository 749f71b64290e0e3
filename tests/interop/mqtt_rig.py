"""The agent end to end against a broker that is not Mosquitto: PLC, agents, platform, per test.

The broker (brokers.py) is started once per session and shared, so every test
gives its gateways codes of their own: what a broker retains for one test's
gateway (`state`, `meta`, a will's `online: false`) is never taken for another's,
and each platform subscriber hears its own gateways only.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from conftest import ENTERPRISE, PREFIX, Plant, Process, agent_config, counter_device
from delivery import envelopes
from paho.mqtt import publish
from paho.mqtt.enums import MQTTProtocolVersion

from edge_agent.demo.platform import PlatformSubscriber, Received
from interop.brokers import HOST, Ejabberd, RabbitMq

PASSWORD = "anonymous"
"""ejabberd logs MQTT clients in anonymously but wants a user name (and so a password)."""

POLL_S = 0.5


def topic(gateway: str, kind: str) -> str:
    return f"{PREFIX}/{ENTERPRISE}/{gateway}/{kind}"


def offline(messages: list[Received]) -> list[Received]:
    """The `state` messages that say the gateway is offline (the will, or a clean stop)."""
    return [m for m in messages if m.kind == "state" and m.body.get("online") is False]


def complete(messages: list[Received]) -> bool:
    """Envelopes arrived, and every `seq` from 1 to the highest among them."""
    seqs = {int(m.body["seq"]) for m in envelopes(messages)}
    return bool(seqs) and seqs == set(range(1, max(seqs) + 1))


@dataclass
class BrokerRig:
    """One test's gateways and platform subscribers on the session's broker."""

    broker: RabbitMq | Ejabberd
    tmp_path: Path
    plant: Callable[..., Plant]
    spawn: Callable[..., Process]
    protocol: Literal["5", "3.1.1"]
    _platforms: list[PlatformSubscriber] = field(default_factory=list)

    @property
    def _login(self) -> bool:
        return isinstance(self.broker, Ejabberd)

    def counter(self) -> dict[str, Any]:
        """A simulated PLC with a counter rising by 1 a second, as a device of the agent."""
        sim = self.plant([{"address": "hr:0", "type": "uint32", "value": {"counter": {}}}])
        return counter_device(sim.port, POLL_S, level=False)

    def platform(
        self, *gateways: str, kinds: Sequence[str] = ("#",), name: str = "platform"
    ) -> PlatformSubscriber:
        """A platform subscriber with a persistent session (client id `name`-gateways),
        subscribed to these `kinds` of topic of `gateways` (`#`: all) before it returns;
        stopped at the end of the test."""
        client_id = "-".join((name, *gateways))
        subscriber = PlatformSubscriber(
            self.broker.port,
            PREFIX,
            client_id=client_id,
            protocol=self.protocol,
            topics=[topic(gateway, kind) for gateway in gateways for kind in kinds],
            credentials=(client_id, PASSWORD) if self._login else None,
        )
        self._platforms.append(subscriber)
        subscriber.start()
        return subscriber

    def agent_config(
        self, gateway: str, device: dict[str, Any], port: int | None = None, **mqtt: Any
    ) -> Path:
        """The config of gateway `gateway`, in a folder of its own (store, credentials);
        `port` to reach the broker through something else (a proxy); `mqtt` settings
        override the rig's (protocol, a 2 s reconnect_max, ejabberd's user name)."""
        folder = self.tmp_path / gateway
        folder.mkdir(exist_ok=True)
        settings: dict[str, Any] = {"protocol": self.protocol, "reconnect_max": "2s"}
        if self._login:
            (folder / "username").write_text(f"{gateway}\n")
            (folder / "password").write_text(f"{PASSWORD}\n")
            settings |= {
                "username_file": str(folder / "username"),
                "password_file": str(folder / "password"),
            }
        return agent_config(
            folder,
            port or self.broker.port,
            [device],
            gateway=gateway,
            mqtt=settings | mqtt,
        )

    def start_agent(
        self, gateway: str, device: dict[str, Any], port: int | None = None, **mqtt: Any
    ) -> Process:
        """`edge-agent run` as gateway `gateway` (see `agent_config`); its log is
        agent-<gateway>.log."""
        config = self.agent_config(gateway, device, port, **mqtt)
        return self.spawn(f"agent-{gateway}", "run", str(config))

    def round_trip(self, platform: PlatformSubscriber, gateway: str) -> None:
        """Publish a marker to `gateway`'s topic `sync` and wait until `platform` has it.

        The broker delivers a session's messages in order, so everything it had routed to
        the platform before (all it acknowledged to the gateway) has then arrived too.
        """
        marker = topic(gateway, "sync")
        client_id = f"sync-{gateway}"
        publish.single(
            marker,
            "{}",
            qos=1,
            hostname=HOST,
            port=self.broker.port,
            client_id=client_id,
            auth={"username": client_id, "password": PASSWORD} if self._login else None,
            protocol=MQTTProtocolVersion.MQTTv5
            if self.protocol == "5"
            else MQTTProtocolVersion.MQTTv311,
        )
        platform.wait_for(lambda ms: any(m.topic == marker for m in ms), 10, "the marker")

    def close(self) -> None:
        for subscriber in self._platforms:
            with contextlib.suppress(Exception):
                subscriber.stop()


@contextlib.contextmanager
def broker_rig(
    broker: RabbitMq | Ejabberd,
    tmp_path: Path,
    plant: Callable[..., Plant],
    spawn: Callable[..., Process],
    protocol: Literal["5", "3.1.1"],
) -> Iterator[BrokerRig]:
    """A rig for one test; its platform subscribers are stopped at the end."""
    rig = BrokerRig(broker, tmp_path, plant, spawn, protocol)
    try:
        yield rig
    finally:
        rig.close()
