"""The configuration of an OPC UA server (one endpoint, one session) and its tags.

Loading and checking a config never imports asyncua: addresses are parsed by
drivers/opcua/address.py and only turned into NodeIds at connect.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal, Self

from pydantic import Field, model_validator

from edge_agent.config.tags import DeviceBase, Strict, TagBase
from edge_agent.config.types import Duration
from edge_agent.drivers.opcua.address import (
    NODE_PATTERN,
    NodeAddress,
    parse_browse_path,
    parse_node,
)

ScalarType = Literal[
    "Boolean",
    "SByte",
    "Byte",
    "Int16",
    "UInt16",
    "Int32",
    "UInt32",
    "Int64",
    "UInt64",
    "Float",
    "Double",
    "String",
    "DateTime",
    "StatusCode",
]
NUMERIC_TYPES = frozenset(
    {"SByte", "Byte", "Int16", "UInt16", "Int32", "UInt32", "Int64", "UInt64", "Float", "Double"}
)
SCALAR_TYPES: tuple[str, ...] = ScalarType.__args__  # type: ignore[attr-defined]  # a Literal's members
DataType = Literal[
    ScalarType,
    "Boolean[]",
    "SByte[]",
    "Byte[]",
    "Int16[]",
    "UInt16[]",
    "Int32[]",
    "UInt32[]",
    "Int64[]",
    "UInt64[]",
    "Float[]",
    "Double[]",
    "String[]",
    "DateTime[]",
    "StatusCode[]",
]
VALUE_TYPES: dict[str, str] = {
    "Boolean": "bool",
    "SByte": "int8",
    "Byte": "uint8",
    "Int16": "int16",
    "UInt16": "uint16",
    "Int32": "int32",
    "UInt32": "uint32",
    "Int64": "int64",
    "UInt64": "uint64",
    "Float": "float32",
    "Double": "float64",
    "String": "string",
    "DateTime": "string",  # sent as ISO 8601 text (values.py)
    "StatusCode": "string",  # sent as its name
}
"""The wire's value type (`meta`, edge_agent/wire.py) of each OPC UA built-in type."""
Policy = Literal["None", "Basic256Sha256", "Aes128Sha256RsaOaep", "Aes256Sha256RsaPss"]
Mode = Literal["None", "Sign", "SignAndEncrypt"]
_CREDENTIAL = " A relative path is taken inside $CREDENTIALS_DIRECTORY (systemd LoadCredential=)."


class Monitor(Strict):
    """How the server watches one tag in subscribe mode (its monitored item)."""

    sampling_interval: Duration | None = Field(
        None,
        description=(
            "How often the server samples the value, e.g. 500ms. Defaults to the device's "
            "publishing_interval."
        ),
    )
    queue_size: int = Field(
        1,
        ge=1,
        le=1000,
        description=(
            "Changes the server keeps between two publishes: 1 sends only the latest, more "
            "keeps short spikes (each is read as its own sample)."
        ),
    )
    deadband: float | None = Field(
        None,
        ge=0,
        description=(
            "Server-side absolute deadband: a change smaller than this (engineering units) "
            "is not sent. Saves the link; report.deadband still judges what is reported."
        ),
    )
    deadband_pct: float | None = Field(
        None,
        ge=0,
        le=100,
        description=(
            "Server-side percent deadband, of the node's EURange (the server must expose one)."
        ),
    )

    @model_validator(mode="after")
    def _one_deadband(self) -> Self:
        if self.deadband is not None and self.deadband_pct is not None:
            raise ValueError("give monitor.deadband or monitor.deadband_pct, not both")
        return self


# The pattern in the schema only: validation keeps parse_node's message, which names the forms.
NodeText = Annotated[str, Field(json_schema_extra={"pattern": NODE_PATTERN})]


class OpcuaTag(TagBase):
    node: NodeText | None = Field(
        None,
        description=(
            "The node's NodeId: ns=2;s=Vent.CO301, ns=3;i=1001, nsu=URI;s=... (namespace by "
            "URI, resolved at connect, so a changed namespace index does not break the site), "
            "or s=CO301 in the device's namespace. Give node or browse_path."
        ),
        examples=["ns=2;s=Vent.CO301", "ns=3;i=1001", "nsu=urn:mine:vent;s=CO301"],
    )
    browse_path: str | None = Field(
        None,
        description=(
            "Browse names from the Objects folder, separated by /, resolved at connect: "
            "Vent/CO301 (names in the device's namespace) or 2:Vent/2:CO301."
        ),
    )
    type: DataType | None = Field(
        None,
        description=(
            "The OPC UA built-in type the node must hold, e.g. Double, Boolean, Int32; Double[] "
            "for an array (then index is needed). A value of another type is q=4. When not "
            "set, any scalar type is accepted, and an Int64 or UInt64 value makes the tag a "
            "64-bit integer tag (sent as decimal strings)."
        ),
    )
    index: int | None = Field(
        None, ge=0, description="The array element to read, from 0, when the node is an array."
    )
    monitor: Monitor = Field(
        default_factory=Monitor,  # type: ignore[arg-type]  # every field has a default
        description="Sampling interval, queue size and server deadband (subscribe mode only).",
    )

    @model_validator(mode="after")
    def _where(self) -> Self:
        if (self.node is None) == (self.browse_path is None):
            raise ValueError("give the node's address as node or as browse_path (exactly one)")
        if self.node is not None:
            parse_node(self.node)
        if self.browse_path is not None:
            parse_browse_path(self.browse_path)
        if self.type is not None and self.type.endswith("[]") and self.index is None:
            raise ValueError(
                f"type {self.type} is an array: pick one element with index (0 is the first); "
                "the uplink carries one value per tag"
            )
        if self.type is not None and not self.type.endswith("[]") and self.index is not None:
            raise ValueError(f"index picks an array element, but type {self.type} is a scalar")
        deadband = self.monitor.deadband is not None or self.monitor.deadband_pct is not None
        if deadband and self.element_type not in (None, *NUMERIC_TYPES):
            raise ValueError(f"a deadband needs a numeric value, not {self.type}")
        return self

    @property
    def element_type(self) -> str | None:
        """The scalar type of the value (of the element, for an array)."""
        return None if self.type is None else self.type.removesuffix("[]")

    @property
    def value_type(self) -> str | None:
        """`meta`'s name for the configured type; None when any type is accepted."""
        return None if self.element_type is None else VALUE_TYPES[self.element_type]

    @property
    def address(self) -> NodeAddress | None:
        return None if self.node is None else parse_node(self.node)

    @property
    def where(self) -> str:
        """The address as configured, for logs and tables."""
        where = self.node or f"/{self.browse_path}"
        return where if self.index is None else f"{where}[{self.index}]"


class Security(Strict):
    """The secure channel: policy, mode, this gateway's certificate, and whom it trusts."""

    policy: Policy = Field(
        "None",
        description=(
            "Security policy: None, Basic256Sha256, Aes128Sha256RsaOaep or Aes256Sha256RsaPss."
        ),
    )
    mode: Mode = Field(
        "None", description="Message security: None, Sign, or SignAndEncrypt (recommended)."
    )
    certificate: str | None = Field(
        None,
        description=(
            "This gateway's application instance certificate (DER or PEM), as made by "
            "`edge-agent opcua-cert`; the server operator must trust it." + _CREDENTIAL
        ),
    )
    private_key: str | None = Field(
        None, description="The certificate's private key (PEM)." + _CREDENTIAL
    )
    trust_dir: str | None = Field(
        None,
        description=(
            "Directory of trusted server certificates (DER or PEM files); a server whose "
            "certificate is not there (nor issued by a CA certificate there or in trust_files) "
            "is refused. trust_on_first_use stores the first certificate seen here."
        ),
    )
    trust_files: list[str] = Field(
        default_factory=list, description="More trusted server or CA certificate files."
    )
    trust_on_first_use: bool = Field(
        False,
        description=(
            "Trust an unknown server certificate the first time, when the trust list holds "
            "none yet: log its SHA-256 fingerprint (compare it with the server's) and store it "
            "in trust_dir; from then on only that certificate is accepted."
        ),
    )

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if (self.policy == "None") != (self.mode == "None"):
            raise ValueError(
                "policy None goes with mode None; a security policy needs mode Sign or "
                "SignAndEncrypt"
            )
        if self.policy == "None":
            return self
        if self.certificate is None or self.private_key is None:
            raise ValueError(
                f"policy {self.policy} needs certificate and private_key "
                "(make them with `edge-agent opcua-cert`)"
            )
        if self.trust_dir is None and not self.trust_files:
            raise ValueError(
                "a secure channel needs a trust list: trust_dir or trust_files, so that an "
                "unknown server is refused"
            )
        if self.trust_on_first_use and self.trust_dir is None:
            raise ValueError("trust_on_first_use stores the certificate in trust_dir: set it")
        return self

    @property
    def secure(self) -> bool:
        return self.policy != "None"


class OpcuaDevice(DeviceBase):
    """One OPC UA server endpoint, read by polling or by a subscription."""

    driver: Literal["opcua"] = Field(description="Selects the OPC UA driver.")
    endpoint: str = Field(
        pattern=r"^opc\.tcp://[^/\s]+",
        description="The server's endpoint URL, e.g. opc.tcp://10.20.2.5:4840.",
    )
    mode: Literal["poll", "subscribe"] = Field(
        "poll",
        description=(
            "poll: read every tag every poll (batched reads). subscribe: the server sends "
            "changes (publishing_interval, each tag's monitor settings); each poll hands on "
            "the changes received, and the unchanged tags' current values."
        ),
    )
    namespace: str | None = Field(
        None,
        description=(
            "The URI of the plant's namespace on the server: NodeIds without ns= and browse "
            "names without an index prefix are in it, resolved at every connect."
        ),
    )
    publishing_interval: Duration = Field(
        1.0, description="Subscribe mode: how often the server sends changes."
    )
    keepalive_count: int | None = Field(
        None,
        ge=1,
        le=1000,
        description=(
            "Subscribe mode: with no change to send, the server still sends a keep-alive after "
            "this many publishing intervals; a tag's unchanged value is reported as current "
            "as of the last one. Defaults to the most that fit in half the shortest report "
            "interval of the device's tags (at least 1); a longer keep-alive is refused. A "
            "subscription silent for 1.25 times the keep-alive is deleted and made again."
        ),
    )
    security: Security = Field(
        default_factory=Security,  # type: ignore[arg-type]  # every field has a default
        description="Security policy and mode, certificates and the trust list.",
    )
    username_file: str | None = Field(
        None, description="File holding the user name (first line)." + _CREDENTIAL
    )
    password_file: str | None = Field(
        None, description="File holding the password (first line)." + _CREDENTIAL
    )
    max_clock_skew: Duration = Field(
        5.0,
        description=(
            "Subscribe mode: a value's SourceTimestamp is its report time only within this "
            "of the gateway's clock; further off (a PLC keeping local time as if it were "
            "UTC), the time the change arrived is sent and the skew logged and counted. In "
            "poll mode the report time is always when the read's answer arrived."
        ),
    )
    timeout: Duration = Field(2.0, description="Time allowed for one request.")
    connect_timeout: Duration = Field(
        5.0,
        description=(
            "Time allowed for a whole connect: endpoints, secure channel, session, name "
            "resolution and the subscription."
        ),
    )
    max_nodes_per_read: int = Field(
        1000,
        ge=1,
        description=(
            "Most nodes in one read request; the server's own OperationLimits.MaxNodesPerRead "
            "lowers it when smaller."
        ),
    )
    tags: list[OpcuaTag] = Field(min_length=1, description="The points read from this server.")

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.password_file is not None and self.username_file is None:
            raise ValueError("password_file is set but username_file is not: give both")
        if self.username_file is not None and self.password_file is None:
            raise ValueError("username_file is set but password_file is not: give both")
        if self.mode == "subscribe":
            slow = [t.tag for t in self.tags if t.poll is not None]
            if slow:
                raise ValueError(
                    f"tags {', '.join(slow)}: poll groups are for mode poll; in subscribe mode "
                    "give monitor.sampling_interval"
                )
        unresolved = [
            t.tag
            for t in self.tags
            if self.namespace is None
            and t.browse_path is not None
            and any(e.namespace is None for e in parse_browse_path(t.browse_path))
        ]
        if unresolved:
            raise ValueError(
                f"tags {', '.join(unresolved)}: a browse name without an index prefix is in "
                "the device's namespace; set namespace (the URI) or write 2:Name"
            )
        return self

    def sampling_interval(self, tag: OpcuaTag) -> float:
        if tag.monitor.sampling_interval is not None:
            return tag.monitor.sampling_interval
        return self.publishing_interval

    def keepalive_within(self, report_every: float | None) -> int:
        """The keep-alive count to ask for, given the shortest report interval of the tags:
        `keepalive_count`, or the most publishing intervals that fit in half of
        `report_every` (at least 1). None (nothing is reported, as in `edge-agent read`):
        `keepalive_count` or KEEPALIVE_COUNT."""
        if self.keepalive_count is not None:
            return self.keepalive_count
        if report_every is None:
            return KEEPALIVE_COUNT
        return _fitting(self.publishing_interval, report_every)


KEEPALIVE_COUNT = 5
"""The keep-alive count of a device whose tags report nothing (`keepalive_within`)."""
_SLACK = 1e-9
"""Durations are binary fractions of seconds: 0.1 x 3 must still fit in 0.3."""


def keepalive_problem(device: OpcuaDevice, tag: str, report_every: float) -> tuple[str, str] | None:
    """Why the device's keep-alive is too long for `tag`, the tag of its shortest report
    interval `report_every`, with the key to change; None when it fits or the device polls.

    A repeated value is reported as current as of the subscription's last Publish
    response, which comes at least every keep-alive: a keep-alive over half the report
    interval would let a heartbeat vouch for a value the server stopped confirming.
    """
    if device.mode != "subscribe":
        return None
    half = report_every / 2
    if device.publishing_interval > half + _SLACK:
        return "publishing_interval", (
            f"publishing_interval {device.publishing_interval:g}s is more than half of "
            f"{report_every:g}s, the report interval of tag {tag} (its report.every, or the "
            "site's rate): the server's keep-alive could not come often enough; publish at "
            f"most every {half:g}s"
        )
    count = device.keepalive_count
    if count is None or device.publishing_interval * count <= half + _SLACK:
        return None
    return "keepalive_count", (
        f"keepalive_count {count} x publishing_interval {device.publishing_interval:g}s is a "
        f"keep-alive every {device.publishing_interval * count:g}s, more than half of "
        f"{report_every:g}s, the report interval of tag {tag} (its report.every, or the "
        f"site's rate): set keepalive_count to at most "
        f"{_fitting(device.publishing_interval, report_every)}, or leave it out (it then "
        "fits itself to the report interval)"
    )


def _fitting(publishing_interval: float, report_every: float) -> int:
    """The most publishing intervals in half of `report_every`, at least 1."""
    return max(1, math.floor(report_every / 2 / publishing_interval + _SLACK))


__all__ = [
    "KEEPALIVE_COUNT",
    "Monitor",
    "OpcuaDevice",
    "OpcuaTag",
    "Security",
    "keepalive_problem",
]
