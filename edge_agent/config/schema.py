"""The agent's configuration: the single source of its JSON Schema.

Every field has a description written for the technician who edits the YAML;
`edge-agent schema` prints the JSON Schema built from these models.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Annotated, Literal, NamedTuple, Self

from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError

from edge_agent.config.service import Metrics
from edge_agent.config.tags import DataPath, Strict, TagBase, located_error
from edge_agent.config.types import ByteSize, Duration, EnterpriseCode, GatewayCode
from edge_agent.drivers.modbus.config import ModbusDevice, connection_problems, shared_link_problems
from edge_agent.drivers.opcua.config import OpcuaDevice, keepalive_problem

Device = Annotated[ModbusDevice | OpcuaDevice, Field(discriminator="driver")]


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
    site: Site = Field(
        "chemical",
        description=(
            "What kind of site this is; sets how often a quiet tag still reports "
            "(report.every): chemical (hazardous chemicals, 60s), mine (underground non-coal "
            "mine, 20s), tailings (tailings pond, 60s)."
        ),
    )

    @property
    def report_every(self) -> float:
        """The longest the platform allows between two reports of a tag at this site."""
        return REPORT_EVERY[self.site]


Site = Literal["chemical", "mine", "tailings"]
REPORT_EVERY: dict[str, float] = {"chemical": 60.0, "mine": 20.0, "tailings": 60.0}
"""Longest interval between two reports of a point, by site (spec: Items on `rt`)."""


class Stats(Strict):
    """Window statistics (min/max/avg per tag) on the `stat` topic."""

    enabled: bool = Field(True, description="Send window statistics.")
    window: Duration = Field(
        300.0,
        ge=10.0,
        le=86400.0,
        description=(
            "Window length, aligned to the wall clock (300s windows start at :00, :05, ...); "
            "mines require 5-minute statistics."
        ),
    )


class Broker(Strict):
    """One MQTT broker of the platform."""

    host: str = Field(min_length=1, description="Broker host name or address.")
    port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="Broker TCP port; default 8883 with TLS, 1883 with plain TCP.",
    )


class Address(NamedTuple):
    """A broker with its port decided."""

    host: str
    port: int


CredentialPath = Annotated[
    str,
    Field(
        min_length=1,
        description=(
            "A file path. A relative path is taken inside $CREDENTIALS_DIRECTORY "
            "(systemd LoadCredential=); the agent refuses to connect when that is not set."
        ),
    ),
]


class Tls(Strict):
    """TLS to the broker: TLS 1.2 or newer, the server certificate always verified."""

    ca_file: CredentialPath | None = Field(
        None,
        description=(
            "PEM file of the CA certificates the broker's certificate must chain to; "
            "when not set, the system's CA store."
        ),
    )
    cert_file: CredentialPath | None = Field(
        None,
        description=(
            "PEM file of this gateway's client certificate, when the province issues one; "
            "it may also hold the private key."
        ),
    )
    key_file: CredentialPath | None = Field(
        None, description="PEM file of the client certificate's private key, if not in cert_file."
    )

    @model_validator(mode="after")
    def _key_needs_cert(self) -> Self:
        if self.key_file is not None and self.cert_file is None:
            raise ValueError("key_file is set but cert_file is not: give the client certificate")
        return self


def is_loopback(host: str) -> bool:
    """True for `localhost` and loopback addresses (127.0.0.0/8, ::1); names are not resolved."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class Mqtt(Strict):
    """The MQTT brokers of the provincial platform and how to stay connected to them."""

    host: str | None = Field(
        None,
        min_length=1,
        description="Broker host name or address, for a single broker; or use brokers.",
    )
    port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="Port of the single broker named by host; default 8883 with TLS, 1883 without.",
    )
    brokers: list[Broker] | None = Field(
        None,
        min_length=1,
        description=(
            "Brokers tried in this order: a failed connect moves on to the next at once; "
            "after a whole round fails the agent waits (reconnect_min to reconnect_max). "
            "Use instead of host and port."
        ),
    )
    transport: Literal["tls", "tcp"] | None = Field(
        None,
        description=(
            "tls (TLS 1.2+, server certificate verified) or tcp (plain, unencrypted). "
            "Default tls, except tcp when every broker is on this machine (localhost, "
            "127.0.0.0/8, ::1) and no tls section is given. tcp to any other host is refused "
            "unless insecure_plaintext is true."
        ),
    )
    tls: Tls | None = Field(
        None,
        description=(
            "TLS settings (CA file, client certificate); without it, TLS uses the system's "
            "CA store and no client certificate."
        ),
    )
    insecure_plaintext: bool = Field(
        False,
        description=(
            "Allow transport: tcp to a broker that is not on this machine. Readings and the "
            "password then cross the network unencrypted: for test rigs only."
        ),
    )
    username_file: CredentialPath | None = Field(
        None, description="File holding the MQTT user name (its first line is used)."
    )
    password_file: CredentialPath | None = Field(
        None, description="File holding the MQTT password (its first line is used)."
    )
    protocol: Literal["5", "3.1.1"] = Field(
        "5", description="MQTT protocol version; 3.1.1 only for brokers that lack 5."
    )
    topic_prefix: str = Field(
        "safety/v1",
        pattern=r"^[^#+]+$",
        description="Topic prefix; topics are {prefix}/{enterprise}/{gateway}/{rt,alarm,state}.",
    )
    keepalive: Duration = Field(
        30.0,
        le=65535.0,
        description=(
            "MQTT keep-alive interval. A silent broker is detected within one keep-alive "
            "while messages await their PUBACK, within two when idle."
        ),
    )
    connect_timeout: Duration = Field(
        10.0, description="Time allowed for the TCP connect, the TLS handshake and the CONNACK."
    )
    reconnect_min: Duration = Field(
        1.0,
        description=(
            "Longest first reconnect delay after a failed round or a dropped connection "
            "(each delay is drawn between half and all of its nominal value)."
        ),
    )
    reconnect_max: Duration = Field(
        60.0, description="Longest reconnect delay; delays double from reconnect_min, with jitter."
    )

    @model_validator(mode="after")
    def _connection(self) -> Self:
        if (self.host is None) == (self.brokers is None):
            raise ValueError(
                "give either host (and port) for one broker, or brokers for a list; not both"
                if self.host is not None
                else "missing required key 'host'"  # brokers, the other way, is in the docs
            )
        if self.port is not None and self.host is None:
            raise ValueError("port goes with host; with brokers, give each broker its port")
        if self.password_file is not None and self.username_file is None:
            raise ValueError("password_file is set but username_file is not: MQTT needs both")
        self._check_transport()
        return self

    def _check_transport(self) -> None:
        if self.transport == "tcp" and self.tls is not None:
            raise ValueError("transport is tcp but a tls section is given: remove one of them")
        if self.insecure_plaintext and self.transport != "tcp":
            raise ValueError(
                "insecure_plaintext: true only goes with transport: tcp; "
                "remove it to keep TLS (the default)"
            )
        remote = [b.host for b in self._listed() if not is_loopback(b.host)]
        if not self.uses_tls and remote and not self.insecure_plaintext:
            raise ValueError(
                f"plain TCP to {', '.join(remote)}, which is not this machine, would send "
                "readings and the MQTT password unencrypted: remove transport: tcp to use TLS, "
                "or set insecure_plaintext: true on a test rig"
            )

    @property
    def uses_tls(self) -> bool:
        """Whether connections use TLS: see the description of `transport`."""
        if self.transport is not None:
            return self.transport == "tls"
        return self.tls is not None or not all(is_loopback(b.host) for b in self._listed())

    def endpoints(self) -> list[Address]:
        """The brokers in the order they are tried, each with its port filled in."""
        default_port = 8883 if self.uses_tls else 1883
        return [Address(b.host, b.port or default_port) for b in self._listed()]

    def _listed(self) -> list[Broker]:
        return self.brokers or [Broker(host=self.host or "", port=self.port)]


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
    alarm_priority: bool = Field(
        True,
        description=(
            "Alarms go out ahead of back-fill and readings, and the bytes queued towards the "
            "broker are bounded so an alarm never waits behind them. Only tests switch this "
            "off, to show what it is worth."
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
    stats: Stats = Field(
        default_factory=Stats,  # type: ignore[arg-type]  # every field has a default
        description="Window statistics on the stat topic.",
    )
    devices: list[Device] = Field(min_length=1, description="Devices polled by this gateway.")
    metrics: Metrics = Field(
        default_factory=Metrics,  # type: ignore[arg-type]  # every field has a default
        description="The agent's own /metrics, /healthz and /status over HTTP.",
    )

    @model_validator(mode="after")
    def _links_agree(self) -> Self:
        """Devices on one connection (host:port or serial port) must agree on its settings."""
        problems = shared_link_problems(d for d in self.devices if isinstance(d, ModbusDevice))
        if problems:
            raise ValueError("; ".join(problems))
        modbus = ((i, d) for i, d in enumerate(self.devices) if isinstance(d, ModbusDevice))
        for position, problem in connection_problems(modbus):
            raise located_error(("devices", position, "max_connections"), problem)
        return self

    @model_validator(mode="after")
    def _polls_meet_report_interval(self) -> Self:
        """A tag read less often than it must report could never meet its rate."""
        for i, device in enumerate(self.devices):
            for j, tag in enumerate(device.tags):
                every = self.report_every(tag)
                if device.interval_of(tag) > every:
                    raise located_error(
                        ("devices", i, "tags", j),
                        f"tag {tag.tag} is read every {device.interval_of(tag):g}s but must "
                        f"report at least every {every:g}s (the site's rate, or its "
                        "report.every): poll it faster, or give it a longer report.every",
                    )
        return self

    @model_validator(mode="after")
    def _keepalives_meet_report_interval(self) -> Self:
        """A subscription's keep-alive is what a repeated value's report time relies on."""
        for i, device in enumerate(self.devices):
            if isinstance(device, OpcuaDevice):
                tag = min(device.tags, key=self.report_every)
                problem = keepalive_problem(device, tag.tag, self.report_every(tag))
                if problem is not None:
                    raise located_error(("devices", i, problem[0]), problem[1])
        return self

    def report_every(self, tag: TagBase) -> float:
        """The tag's heartbeat: its report.every, or its site's required rate."""
        return tag.report.every or self.gateway.report_every

    def report_every_of(self, device: Device) -> float:
        """The shortest report interval of the device's tags."""
        return min(self.report_every(tag) for tag in device.tags)

    def readings_per_second(self) -> float:
        """How many readings the configured polls produce, poll groups included."""
        return sum(1 / device.interval_of(tag) for device in self.devices for tag in device.tags)

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
