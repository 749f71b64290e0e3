"""The configuration of a Modbus device (one unit id) and its tags.

A device is one unit id reached over one transport: Modbus TCP, RTU over a
serial line, or RTU framed over TCP (a serial device server). Devices that
name the same link (the same host and port, or the same serial port) share
one connection: see `link_key` and drivers/modbus/link.py.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Annotated, Literal, Self

from pydantic import BeforeValidator, Field, PrivateAttr, WithJsonSchema, model_validator

from edge_agent.config.tags import DeviceBase, Strict, TagBase, located_error
from edge_agent.config.types import Duration
from edge_agent.drivers.modbus.codec import (
    ADDRESS_PATTERN,
    AREAS,
    BIT_AREAS,
    BYTE_ORDERS,
    DATA_TYPES,
    MAX_OFFSET,
    MODICON_NUMBERS,
    Address,
    AddressOutOfRange,
    Area,
    modicon_number,
    parse_address,
    register_count,
)
from edge_agent.wire import decimals_of

DataType = Literal[
    "bool",
    "int16",
    "uint16",
    "int32",
    "uint32",
    "int64",
    "uint64",
    "float32",
    "float64",
    "string",
]
ByteOrder = Literal["ABCD", "CDAB", "BADC", "DCBA"]
Transport = Literal["tcp", "rtu-over-tcp", "rtu"]

NUMERIC_TYPES = frozenset(DATA_TYPES) - {"bool", "string"}


def _address_text(value: object) -> object:
    """YAML reads 40001 as a number; an address is text."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


AddressText = Annotated[
    str,
    BeforeValidator(_address_text),
    # What the validator takes: the text forms, and the whole numbers YAML makes of 40001.
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": ADDRESS_PATTERN},
                {
                    "type": "integer",
                    "anyOf": [{"minimum": low, "maximum": high} for low, high in MODICON_NUMBERS],
                },
            ]
        }
    ),
]


def _pair(value: object) -> object:
    """YAML writes a pair as a list; strict validation takes only the tuple it becomes."""
    return tuple(value) if isinstance(value, list) else value


Pair = Annotated[tuple[float, float], BeforeValidator(_pair)]


class Scale(Strict):
    """Linear scaling: raw * multiplier + offset, or a raw range mapped onto an engineering one."""

    multiplier: float | None = Field(
        None, description="Factor applied to the raw value (with offset); not with raw/eng."
    )
    offset: float | None = Field(None, description="Added after the multiplier.")
    raw: Pair | None = Field(
        None, description="Raw range [low, high], mapped linearly onto eng, e.g. [0, 27648]."
    )
    eng: Pair | None = Field(
        None, description="Engineering range [low, high] that raw maps onto, e.g. [0, 100]."
    )

    @model_validator(mode="after")
    def _one_form(self) -> Self:
        linear = self.multiplier is not None or self.offset is not None
        ranged = self.raw is not None or self.eng is not None
        if linear and ranged:
            raise ValueError("give multiplier/offset or raw/eng, not both")
        if ranged and (self.raw is None or self.eng is None):
            raise ValueError("raw and eng go together: give both ranges")
        if self.raw is not None and self.raw[0] == self.raw[1]:
            raise ValueError(f"raw range {list(self.raw)} is empty")
        return self

    def apply(self, raw: float) -> float:
        if self.raw is not None and self.eng is not None:
            (r0, r1), (e0, e1) = self.raw, self.eng
            return e0 + (raw - r0) * (e1 - e0) / (r1 - r0)
        multiplier = 1.0 if self.multiplier is None else self.multiplier
        return raw * multiplier + (self.offset or 0.0)


class Current(Strict):
    """A 4-20 mA input: the raw counts the input module gives at 4 mA and at 20 mA.

    The value is range.low at 4 mA and range.high at 20 mA. NAMUR NE43: below
    3.6 mA or above 21 mA is a sensor fault or a broken wire, q=3 with no value.
    """

    raw_4ma: float = Field(description="Raw count at 4 mA, e.g. 0 (S7 AI) or 4000 (µA modules).")
    raw_20ma: float = Field(description="Raw count at 20 mA, e.g. 27648 (S7 AI) or 20000.")
    fault_low: float = Field(3.6, description="Below this many mA the loop is faulty (NE43).")
    fault_high: float = Field(21.0, description="Above this many mA the loop is faulty (NE43).")

    @model_validator(mode="after")
    def _span(self) -> Self:
        if self.raw_4ma == self.raw_20ma:
            raise ValueError("raw_4ma and raw_20ma must differ")
        if not (self.fault_low < 4.0 and self.fault_high > 20.0):
            raise ValueError("fault bands must lie outside 4..20 mA")
        return self

    def milliamps(self, raw: float) -> float:
        return 4.0 + 16.0 * (raw - self.raw_4ma) / (self.raw_20ma - self.raw_4ma)


class ModbusTag(TagBase):
    address: AddressText = Field(
        description=(
            "Where the value sits: area and 0-based offset, hr:N (holding register), ir:N "
            "(input register), co:N (coil), di:N (discrete input); hr:N.B for bit B of a "
            "register; or a Modicon number (40001, 30001, 00001, 10001) counted from the "
            'device\'s address_base. Quote Modicon coil numbers: "00001".'
        ),
        examples=["hr:0", "ir:10", "co:5", "di:7", "hr:20.3", "40001", 40001],
    )
    type: DataType = Field("uint16", description="How the raw bits are read.")
    length: int | None = Field(
        None, ge=1, le=125, description="Registers a string occupies (2 characters each)."
    )
    byte_order: ByteOrder | None = Field(
        None,
        description=(
            "Order of the bytes of a multi-register value, A the most significant: ABCD (big "
            "endian), CDAB (word swap), BADC (byte swap), DCBA (little endian). "
            "Defaults to the device's byte_order. A string only honours the byte swap "
            "(BADC, DCBA: low byte first)."
        ),
    )
    scale: Scale | None = Field(None, description="Linear scaling of numeric types.")
    current: Current | None = Field(
        None,
        description="The value is a 4-20 mA loop in raw counts; needs range; NE43 fault bands.",
    )
    fault_values: list[int] = Field(
        default_factory=list,
        description=(
            "Raw values the device writes to report a fault of its own (e.g. 65535): "
            "such a reading is q=3 with no value."
        ),
    )
    _base: int = PrivateAttr(1)

    @model_validator(mode="after")
    def _type_fits_area(self) -> Self:
        try:
            address = parse_address(self.address, base=0)
        except AddressOutOfRange as exc:
            address = exc.address  # the device judges the range: it knows the address_base
        except ValueError as exc:
            raise located_error(("address",), str(exc)) from None
        if address.area in BIT_AREAS and self.type != "bool":
            raise ValueError(
                f"address {self.address!r} is a single bit ({AREAS[address.area]}); "
                f"its type must be bool, not {self.type}"
            )
        if address.bit is not None and self.type != "bool":
            raise ValueError(
                f"address {self.address!r} names one bit of a register; its type must be "
                f"bool, not {self.type}"
            )
        if (self.type == "string") != (self.length is not None):
            raise ValueError("a string needs length (in registers), and only a string has one")
        numeric = self.type in NUMERIC_TYPES
        for name in ("scale", "current", "range"):
            if getattr(self, name) is not None and not numeric:
                raise ValueError(f"a {self.type} tag cannot have {name}: remove it")
        if self.fault_values and not numeric:
            raise ValueError(f"a {self.type} tag cannot have fault_values")
        if self.current is not None:
            if self.range is None:
                raise ValueError("a 4-20 mA tag needs range: the values at 4 and 20 mA")
            if self.scale is not None:
                raise ValueError("give current or scale, not both: current scales by range")
        return self

    @property
    def value_type(self) -> str:
        return self.type

    @property
    def implied_decimals(self) -> int | None:
        """What one raw count is worth after scaling, and the offset, in decimals (wire.py)."""
        if self.current is not None and self.range is not None:
            counts = self.current.raw_20ma - self.current.raw_4ma
            return max(decimals_of(self.range.span / counts), decimals_of(self.range.low))
        scale = self.scale
        if scale is None:
            return None
        if scale.raw is not None and scale.eng is not None:
            (r0, r1), (e0, e1) = scale.raw, scale.eng
            return max(decimals_of((e1 - e0) / (r1 - r0)), decimals_of(e0))
        step = 1.0 if scale.multiplier is None else scale.multiplier
        return max(decimals_of(step), decimals_of(scale.offset or 0.0))

    @property
    def parsed_address(self) -> Address:
        return parse_address(self.address, base=self._base)

    @property
    def width(self) -> int:
        """Addresses the tag occupies: 1 for a coil or input, else its registers."""
        return self.width_in(self.parsed_address.area)

    def width_in(self, area: Area) -> int:
        return 1 if area in BIT_AREAS else register_count(self.type, self.length)


class SerialLine(Strict):
    """An RS-485/RS-232 line for Modbus RTU."""

    port: str = Field(description="Serial device, e.g. /dev/ttyS1 or /dev/ttyUSB0.")
    baudrate: int = Field(9600, ge=300, le=921600, description="Bits per second.")
    bytesize: Literal[7, 8] = Field(8, description="Data bits.")
    parity: Literal["N", "E", "O"] = Field("N", description="Parity: N none, E even, O odd.")
    stopbits: Literal[1, 2] = Field(1, description="Stop bits.")
    inter_frame: Duration | None = Field(
        None,
        description=(
            "Silence kept on the bus after each answer before the next request. Defaults "
            "to 3.5 character times (1.75 ms above 19200 baud)."
        ),
    )

    @property
    def silence(self) -> float:
        """Seconds of silence between frames."""
        if self.inter_frame is not None:
            return self.inter_frame
        if self.baudrate > 19200:
            return 0.00175
        return 3.5 * 11 / self.baudrate  # Modbus RTU characters are 11 bits on the wire


class ModbusDevice(DeviceBase):
    """One Modbus unit (PLC, I/O module, gas controller) polled at a fixed interval."""

    driver: Literal["modbus"] = Field(description="Selects the Modbus driver.")
    transport: Transport = Field(
        "tcp",
        description=(
            "tcp (Modbus TCP), rtu (RTU on the serial line in serial), or rtu-over-tcp (RTU "
            "frames over a TCP socket, e.g. a serial device server in transparent mode)."
        ),
    )
    host: str | None = Field(None, description="IP address or host name (tcp and rtu-over-tcp).")
    port: int = Field(502, ge=1, le=65535, description="TCP port (tcp and rtu-over-tcp).")
    serial: SerialLine | None = Field(None, description="The serial line (rtu only).")
    unit: int = Field(1, ge=0, le=255, description="Modbus unit id (slave address).")
    timeout: Duration = Field(1.0, description="Time allowed for one request or connect.")
    byte_order: ByteOrder = Field(
        "ABCD", description="Default byte order of multi-register values."
    )
    address_base: Literal[0, 1] = Field(
        1,
        description=(
            "Which Modicon register number is offset 0: 1 (the convention, 40001 = hr:0) or "
            "0 (manuals that count from 0, 40000 = hr:0). Does not affect hr:N addresses."
        ),
    )
    max_registers: int = Field(
        125, ge=1, le=125, description="Largest register read sent in one request."
    )
    max_bits: int = Field(
        2000, ge=1, le=2000, description="Largest coil/input read in one request."
    )
    connection: Literal["shared", "own"] = Field(
        "shared",
        description=(
            "tcp and rtu-over-tcp: shared (the units at one host:port take turns on one "
            "connection) or own (this unit gets a connection of its own, so a slow sibling "
            "cannot delay it when the device serves connections in parallel; behind a "
            "TCP-to-RTU gateway it adds no isolation, as the gateway serialises its bus)."
        ),
    )
    max_connections: int = Field(
        4,
        ge=1,
        le=64,
        description=(
            "The most connections the agent may open to this host:port (one shared, plus "
            "one per unit with connection: own). Leave the device's other slots to SCADA."
        ),
    )
    max_gap: int = Field(
        0,
        ge=0,
        le=124,
        description=(
            "Unused addresses a read may span to merge two tags into one request. A read "
            "refused for an address that does not exist is split and the hole remembered."
        ),
    )
    tags: list[ModbusTag] = Field(min_length=1, description="The points read from this device.")

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.transport == "rtu":
            if self.serial is None:
                raise ValueError("transport rtu needs serial: {port: /dev/ttyS1, ...}")
            if self.host is not None:
                raise ValueError("transport rtu reads a serial line: remove host")
            if self.connection == "own":
                raise ValueError(
                    "a serial line is one connection: connection: own needs tcp or rtu-over-tcp"
                )
        else:
            if self.host is None:
                raise ValueError(f"transport {self.transport} needs host")
            if self.serial is not None:
                raise ValueError(f"transport {self.transport} has no serial line: remove serial")
        for index, tag in enumerate(self.tags):
            # A private attribute: the device's base, so tag.parsed_address is the real offset.
            tag._base = self.address_base
            self._check_tag(index, tag)
        return self

    def _check_tag(self, index: int, tag: ModbusTag) -> None:
        try:
            address = tag.parsed_address
        except AddressOutOfRange as exc:
            address = exc.address
        except ValueError as exc:  # 40000 under base 1
            raise located_error(("tags", index, "address"), str(exc)) from None
        width = tag.width_in(address.area)
        last = MAX_OFFSET + 1 - width
        if address.offset > last:
            message = _out_of_range(tag, address.area, last, self.address_base)
            raise located_error(("tags", index, "address"), message)
        if address.area not in BIT_AREAS and width > self.max_registers:
            raise ValueError(
                f"tag {tag.tag} is a {tag.type} ({width} registers) but max_registers is "
                f"{self.max_registers}: a value is never split across two reads; "
                f"raise max_registers to at least {width}"
            )

    @property
    def link_key(self) -> tuple[str, str]:
        """Devices with the same key share one connection (and one request at a time)."""
        if self.serial is not None:
            return ("serial", self.serial.port)
        if self.connection == "own":
            return ("tcp", f"{self.endpoint} unit {self.unit}")
        return ("tcp", self.endpoint)

    @property
    def endpoint(self) -> str:
        """host:port, or the serial port: where the device is, whatever the connection."""
        if self.serial is not None:
            return self.serial.port
        return f"{self.host}:{self.port}"

    def link_settings(self) -> tuple[object, ...]:
        """What devices sharing a link must agree on."""
        return (self.transport, self.serial)


def _out_of_range(tag: ModbusTag, area: Area, last: int, base: int) -> str:
    """Why a tag's address is past the end of its area, and the addresses it may have."""
    span = f"{area}:0 to {area}:{last}"
    if ":" not in tag.address:  # written as a Modicon number: the range so too
        first, final = modicon_number(area, 0, base), modicon_number(area, last, base)
        span += f" (Modicon {first} to {final} with address_base {base})"
    if area in BIT_AREAS:
        return f"{tag.address!r} is out of range: a {AREAS[area]} is {span}"
    width = MAX_OFFSET + 1 - last
    takes = f"a {tag.type} takes {width} {AREAS[area]}{'s' if width > 1 else ''}"
    return f"{tag.address!r} is out of range: {takes}, so it starts at {span}"


def shared_link_problems(devices: Iterable[ModbusDevice]) -> list[str]:
    """Devices that share a link but disagree on its settings or on a unit id."""
    first: dict[tuple[str, str], ModbusDevice] = {}
    units: dict[tuple[tuple[str, str], int], str] = {}
    problems: list[str] = []
    for device in devices:
        key = device.link_key
        other = first.setdefault(key, device)
        if other is not device and other.link_settings() != device.link_settings():
            problems.append(
                f"devices {other.name} and {device.name} share {key[1]} but not its "
                "settings (transport, serial line): give them the same"
            )
        owner = units.setdefault((key, device.unit), device.name)
        if owner != device.name:
            problems.append(
                f"devices {owner} and {device.name} are both unit {device.unit} on {key[1]}"
            )
    return problems


def connection_problems(
    devices: Iterable[tuple[int, ModbusDevice]],
) -> list[tuple[int, str]]:
    """(position, problem) for each host:port that would get more connections than
    the `max_connections` of a device there allows; `devices` come with their positions
    in the config."""
    at: dict[str, list[tuple[int, ModbusDevice]]] = {}
    for position, device in devices:
        if device.serial is None:
            at.setdefault(device.endpoint, []).append((position, device))
    problems = []
    for endpoint, members in at.items():
        own = sum(1 for _, d in members if d.connection == "own")
        shared = any(d.connection == "shared" for _, d in members)
        needed = own + shared
        position, strictest = min(members, key=lambda m: m[1].max_connections)
        if needed > strictest.max_connections:
            problems.append(
                (
                    position,
                    f"{endpoint} would get {needed} connections ({own} own"
                    f"{' + 1 shared' if shared else ''}) but device {strictest.name} allows "
                    f"max_connections {strictest.max_connections}: give fewer units "
                    "connection: own, or raise max_connections if the device has the slots",
                )
            )
    return problems


def connection_advice(devices: Iterable[ModbusDevice]) -> list[str]:
    """Warnings for `check`: what `connection: own` costs where it cannot isolate."""
    own: dict[str, list[ModbusDevice]] = {}
    for device in devices:
        if device.connection == "own":
            own.setdefault(device.endpoint, []).append(device)
    return [
        f"warning: {len(members)} unit(s) at {endpoint} have connection: own "
        f"({', '.join(d.name for d in members)}): behind a TCP-to-RTU gateway this adds no "
        "isolation (the gateway serialises its RS-485 bus) and takes connection slots the "
        "plant's SCADA may need; use it only where the device serves connections in parallel"
        for endpoint, members in own.items()
    ]


def tags_with_interval(device: ModbusDevice, interval: float) -> Sequence[ModbusTag]:
    return [t for t in device.tags if device.interval_of(t) == interval]


__all__ = [
    "BYTE_ORDERS",
    "DATA_TYPES",
    "Current",
    "ModbusDevice",
    "ModbusTag",
    "Scale",
    "SerialLine",
    "connection_advice",
    "connection_problems",
    "shared_link_problems",
]
