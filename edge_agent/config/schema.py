"""The agent's configuration: the single source of its JSON Schema.

Every field has a description written for the technician who edits the YAML;
`edge-agent schema` prints the JSON Schema built from these models.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Annotated, Literal, Self

from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError

from drivers.modbus.config import ModbusDevice
from edge_agent.config.tags import Strict
from edge_agent.config.types import ByteSize, Duration, EnterpriseCode, GatewayCode

Device = Annotated[ModbusDevice, Field(discriminator="driver")]


DataPath = tuple[str | int, ...]
"""Where a value sits in the config data: keys and list indexes from the top."""


class Gateway(Strict):
    """Who this gateway is, in the platform's identifiers."""

    code: GatewayCode = Field(
        description="Gateway code issued by the province; also the MQTT client id."
    )
    enterprise: EnterpriseCode = Field(
        description=(
            "Enterprise 统一社会信用代码 (GB 32100), 18 characters with its check character."
        )
    )


class Mqtt(Strict):
    """The MQTT broker of the provincial platform and how to stay connected to it."""

    host: str = Field(description="Broker host name or address.")
    port: int = Field(1883, ge=1, le=65535, description="Broker TCP port.")
    protocol: Literal["5", "3.1.1"] = Field(
        "5", description="MQTT protocol version; 3.1.1 only for brokers that lack 5."
    )
    topic_prefix: str = Field(
        "safety/v1",
        pattern=r"^[^#+]+$",
        description="Topic prefix; topics are {prefix}/{enterprise}/{gateway}/{rt,alarm,state}.",
    )
    keepalive: Duration = Field(30.0, description="MQTT keep-alive interval.")
    connect_timeout: Duration = Field(10.0, description="Time allowed for TCP connect and CONNACK.")
    reconnect_min: Duration = Field(1.0, description="First reconnect delay after a failure.")
    reconnect_max: Duration = Field(
        60.0, description="Longest reconnect delay; delays double from reconnect_min, with jitter."
    )


class Batch(Strict):
    """How readings are packed into messages."""

    max_items: int = Field(500, ge=1, le=10000, description="Most items in one message.")
    max_bytes: ByteSize = Field(
        64 * 1024,
        le=256 * 1024,
        description="Most payload bytes in one message (the platform accepts 256KiB).",
    )
    linger: Duration = Field(
        0.5,
        description=(
            "How long live readings may wait for more to fill a message. Alarms never wait."
        ),
    )
    gzip: bool = Field(
        False,
        description=(
            "Compress each payload with gzip (the platform inflates payloads that start with "
            "1f 8b). Worth it on a metered or slow link: readings compress about 5-10 times."
        ),
    )


class Uplink(Strict):
    """How readings and alarms travel to the platform."""

    mqtt: Mqtt = Field(description="The broker to publish to.")
    batch: Batch = Field(
        default_factory=Batch,  # type: ignore[arg-type]  # mypy cannot see every field has a default
        description="How readings are packed into messages.",
    )
    max_inflight: int = Field(
        20,
        ge=1,
        le=1000,
        description=(
            "Most messages published and awaiting PUBACK; also capped by the broker's "
            "Receive Maximum."
        ),
    )
    state_interval: Duration = Field(
        60.0, le=60.0, description="Longest time between two `state` messages while online."
    )
    backfill_rate: ByteSize | None = Field(
        None,
        description=(
            "The province's cap on back-fill, in payload bytes per second (e.g. 64KiB); "
            "unlimited when not set. Live readings and alarms are never held by it."
        ),
    )


class Store(Strict):
    """The local store-and-forward buffer that holds what the platform has not acknowledged."""

    path: str = Field(description="SQLite file of the store-and-forward buffer.")
    commit_interval: Duration = Field(
        0.25,
        le=10.0,
        description=(
            "Readings are committed at least this often; a kill -9 can cost the readings "
            "sampled in the last commit_interval. Alarms are committed at once."
        ),
    )
    max_size: ByteSize = Field(
        2 * 1024**3,
        description=(
            "Cap on the store's disk use, WAL and free pages included. Past 90% of it the "
            "oldest waiting readings are thinned (every second one per tag), and every loss "
            "is written to the loss ledger."
        ),
    )
    retention: Duration = Field(
        30 * 86400.0,
        description=(
            "Waiting readings and alarms older than this are dropped (and declared in the "
            "loss ledger): the platform has no use for them past the enterprise's own "
            "30-day record duty."
        ),
    )
    synchronous: Literal["normal", "full"] = Field(
        "normal",
        description=(
            "SQLite synchronous mode. normal: survives a crash of the agent; a power loss may "
            "roll back the last commits (numbering never goes back: see docs/store.md). "
            "full: survives a power loss too, at one flush to disk per commit."
        ),
    )


class AgentConfig(Strict):
    """An edge gateway: who it is, where it reports, where it buffers, what it polls."""

    gateway: Gateway = Field(description="Who this gateway is.")
    uplink: Uplink = Field(description="Where and how the gateway reports.")
    store: Store = Field(description="Where the gateway buffers what is not yet delivered.")
    devices: list[Device] = Field(min_length=1, description="Devices polled by this gateway.")

    @model_validator(mode="after")
    def _unique_names(self) -> Self:
        names = [(d.name, ("devices", i, "name")) for i, d in enumerate(self.devices)]
        tags = [
            (t.tag, ("devices", i, "tags", j, "tag"))
            for i, d in enumerate(self.devices)
            for j, t in enumerate(d.tags)
        ]
        duplicates = [*find_duplicates("device name", names), *find_duplicates("tag", tags)]
        if duplicates:
            # A distinct error type lets the config loader drop this summary: it runs
            # find_duplicates on the raw YAML itself, to report each repeat at its own
            # line even when other errors keep this validator from running.
            raise PydanticCustomError(
                "duplicate_name", "{summary}", {"summary": "; ".join(map(str, duplicates))}
            )
        return self


@dataclass(frozen=True, slots=True)
class Duplicate:
    """A name used again: where it is repeated, and where it was first used."""

    what: str
    name: str
    path: DataPath
    first: DataPath

    def __str__(self) -> str:
        return f"{self.what} {self.name!r} appears more than once; each {self.what} must be unique"


def find_duplicates(what: str, named: Iterable[tuple[str, DataPath]]) -> Iterator[Duplicate]:
    """Every repeat of a name after its first use, in order.

    Takes (name, path) pairs so that it serves both the validated models and the raw data.
    """
    first: dict[str, DataPath] = {}
    for name, path in named:
        if name in first:
            yield Duplicate(what, name, path, first[name])
        else:
            first[name] = path
