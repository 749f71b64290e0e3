"""The scenario file of the simulated plant: devices, their points, and how each value moves.

A point's value is a pure function of t, the seconds since the simulator
started, so a test can compute what a device must have answered at any moment,
and nothing drifts between requests. Example:

    devices:
      - name: plc-tank-farm
        port: 5020
        unit: 1
        points:
          - {address: hr:0, type: float32, value: {sine: {mean: 12, amplitude: 3, period: 120s}}}
          - {address: hr:2, type: int16, scale: {multiplier: 0.01}, value: {const: 0.45}}
          - {address: co:0, type: bool, value: {const: true}}
        exception_addresses: [hr:100]

A `scale` says how the device stores the value: the register holds
(value - offset) / multiplier (or the raw range point of the value for a
`raw`/`eng` scale), rounded for integer types, so an agent tag with the same
scale reads the value back.

A device may instead hold several units (a gateway, an RTU bus), and choose
its transport; see `Device` and `Unit`:

    devices:
      - name: gas-bus
        transport: rtu            # tcp (default), rtu-over-tcp, rtu (a pty pair)
        units:
          - {unit: 1, points: [...]}
          - {unit: 2, points: [...], delay: 150ms}     # answers late
          - {unit: 3, points: [...], silent: true}     # never answers
          - {unit: 4, points: [...], silent_addresses: [hr:50]}  # ignores reads of hr:50
        drop_every: 50            # close every connection on each 50th request
      - name: rtu-gateway
        serialise: true           # one request at a time, all connections, in arrival order
        units:
          - {unit: 1, points: [...]}
          - {unit: 2, points: [...], gateway_fails: true, delay: 1s}  # exception 11 after 1 s
          - {unit: 3, points: [...], busy_every: 4}        # each 4th request: exception 6
          - {unit: 4, points: [...], acknowledge_every: 3} # each 3rd request: exception 5

How a unit answers one request, in order: the device's turn (with
`serialise`), then the unit's `delay`, then no answer (`silent`, a
`silent_addresses` read), exception 11 (`gateway_fails`), exception 6 or 5
(`busy_every`, then `acknowledge_every`, counting every request to the unit),
or the values. So `delay` is the time any answer takes, and on a serialised
device a silent unit with a `delay` holds the bus that long, as a gateway
waits out its serial timeout before it serves the next request.
"""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Annotated, Literal, Self, TypeVar

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from edge_agent.config.types import Duration, parse_duration
from edge_agent.drivers.modbus.codec import (
    BIT_AREAS,
    DATA_TYPES,
    Address,
    encode,
    parse_address,
    register_count,
)
from edge_agent.drivers.modbus.config import ByteOrder, DataType, Scale
from edge_agent.errors import ConfigError, ConfigFileMissing

Scalar = bool | int | float | str

Offset = Annotated[float, BeforeValidator(parse_duration), Field(ge=0)]
"""A duration that may be zero (a start time, a hold), in seconds once validated."""

M = TypeVar("M", bound=BaseModel)

NOISE_STEP = 0.1
"""Seconds one noise sample holds: requests within one step see the same value."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Ramp(_Model):
    """A sawtooth: from `from` to `to` over `period`, then back to `from` at once."""

    from_: float = Field(alias="from")
    to: float
    period: Duration

    def at(self, t: float) -> float:
        return self.from_ + (self.to - self.from_) * ((t % self.period) / self.period)


class Sine(_Model):
    mean: float
    amplitude: float
    period: Duration

    def at(self, t: float) -> float:
        return self.mean + self.amplitude * math.sin(2 * math.pi * t / self.period)


class Noise(_Model):
    """Gaussian noise, the same for the same t and seed, on every run."""

    mean: float
    sd: float = Field(ge=0)
    seed: int = 0

    def at(self, t: float) -> float:
        step = math.floor(t / NOISE_STEP)
        return random.Random(f"{self.seed}:{step}").gauss(self.mean, self.sd)


class Step(_Model):
    before: float
    after: float
    at_: Offset = Field(alias="at")

    def at(self, t: float) -> float:
        return self.before if t < self.at_ else self.after


class Leak(_Model):
    """A gas leak: `base`, then linear up to `peak` over `rise`, `hold`, linear down over `fall`.

    Starts at `start`; with `every` the episode repeats every `every` seconds.
    """

    base: float
    peak: float
    start: Offset = 0.0
    rise: Duration
    hold: Offset = 0.0
    fall: Duration
    every: Duration | None = None

    @model_validator(mode="after")
    def _fits(self) -> Self:
        length = self.start + self.rise + self.hold + self.fall
        if self.every is not None and length > self.every:
            raise ValueError(
                f"start + rise + hold + fall is {length:g}s, longer than every ({self.every:g}s)"
            )
        return self

    def at(self, t: float) -> float:
        u = t % self.every if self.every is not None else t
        u -= self.start
        span = self.peak - self.base
        if u < 0:
            return self.base
        if u < self.rise:
            return self.base + span * u / self.rise
        u -= self.rise
        if u < self.hold:
            return self.peak
        u -= self.hold
        if u < self.fall:
            return self.peak - span * u / self.fall
        return self.base


class Counter(_Model):
    """Rises by 1 every second from 0: exactly floor(t). Integer registers wrap."""

    def at(self, t: float) -> int:
        return math.floor(t)


class _Episode(_Model):
    """A fault of `value` from `start` for `length`, again every `every` if given."""

    value: Value
    start: Offset
    length: Duration
    every: Duration | None = None

    def _into(self, t: float) -> float | None:
        """Seconds into the episode at t, or None outside it."""
        u = t % self.every if self.every is not None else t
        return u - self.start if self.start <= u < self.start + self.length else None


class Frozen(_Episode):
    """A stuck sensor: during the episode `value` stays at what it was when it began."""

    def at(self, t: float) -> Scalar:
        into = self._into(t)
        return self.value.at(t if into is None else t - into)


class Broken(_Episode):
    """A broken sensor: during the episode the register reads `reads` (e.g. 0 µA: a cut wire)."""

    reads: float

    def at(self, t: float) -> Scalar:
        return self.value.at(t) if self._into(t) is None else self.reads


class Value(_Model):
    """Exactly one of the value functions."""

    const: Scalar | None = None
    ramp: Ramp | None = None
    sine: Sine | None = None
    noise: Noise | None = None
    step: Step | None = None
    leak: Leak | None = None
    counter: Counter | None = None
    frozen: Frozen | None = None
    broken: Broken | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        chosen = sorted(self.model_fields_set)
        if len(chosen) != 1:
            names = ", ".join(type(self).model_fields)
            raise ValueError(f"give exactly one of {names}; got {chosen or 'none'}")
        if getattr(self, chosen[0]) is None:
            raise ValueError(f"{chosen[0]} needs a value")
        return self

    def at(self, t: float) -> Scalar:
        if self.const is not None:
            return self.const
        functions = (
            self.ramp,
            self.sine,
            self.noise,
            self.step,
            self.leak,
            self.counter,
            self.frozen,
            self.broken,
        )
        return next(f for f in functions if f is not None).at(t)


_Episode.model_rebuild()


class Point(_Model):
    """One address (or one multi-register value) of a simulated device."""

    address: str = Field(description="Area and 0-based offset: hr:N, ir:N, co:N or di:N.")
    type: DataType = "uint16"
    length: int | None = Field(None, ge=1, le=125, description="Registers of a string.")
    byte_order: ByteOrder = "ABCD"
    value: Value
    scale: Scale | None = None
    name: str | None = Field(None, description="A label for people, e.g. the agent tag.")

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        address = parse_address(self.address)
        if address.bit is not None:
            raise ValueError(f"{self.address}: a simulated point covers whole registers")
        if address.area in BIT_AREAS and self.type != "bool":
            raise ValueError(f"{self.address} is a single bit: its type must be bool")
        if (self.type == "string") != (self.length is not None):
            raise ValueError("a string needs length (in registers), and only a string has one")
        if self.scale is not None and self.type == "bool":
            raise ValueError("a bool point cannot be scaled")
        if address.offset + self.width > 65536:
            raise ValueError(f"{self.type} at {self.address} runs past address 65535")
        return self

    @property
    def parsed_address(self) -> Address:
        return parse_address(self.address)

    @property
    def width(self) -> int:
        """Addresses the point occupies: 1 for a bit, else its register count."""
        if parse_address(self.address).area in BIT_AREAS:
            return 1
        return register_count(self.type, self.length)

    def words(self, t: float) -> list[int] | list[bool]:
        """What the device holds at time t: registers, or one bit."""
        value = self.value.at(t)
        if parse_address(self.address).area in BIT_AREAS:
            return [bool(value)]
        if self.type == "bool":
            return encode(bool(value), "bool")
        if self.type == "string" or isinstance(value, str):
            return encode(str(value), "string", self.byte_order, self.length)
        raw: float | int = value
        if self.scale is not None:
            raw = _unscale(self.scale, float(value))
        if self.type in ("float32", "float64"):
            return encode(float(raw), self.type, self.byte_order)
        # An int stays an int: a uint64 beyond 2**53 must not pass through a float.
        return encode(self._fit(round(raw)), self.type, self.byte_order)

    def _fit(self, raw: int) -> int:
        """An integer into the type's range: a counter wraps, anything else saturates."""
        fmt, registers = DATA_TYPES[self.type]
        span = 1 << (16 * registers)
        low = -(span >> 1) if fmt.islower() else 0
        if self.value.counter is not None:
            return (raw - low) % span + low
        return min(max(raw, low), low + span - 1)


def _unscale(scale: Scale, value: float) -> float:
    """What the register holds for an engineering value: the inverse of Scale.apply."""
    if scale.raw is not None and scale.eng is not None:
        (r0, r1), (e0, e1) = scale.raw, scale.eng
        return r0 + (value - e0) * (r1 - r0) / (e1 - e0)
    multiplier = 1.0 if scale.multiplier is None else scale.multiplier
    return (value - (scale.offset or 0.0)) / multiplier


class Unit(_Model):
    """One unit id's address space, and how it answers."""

    unit: int = Field(1, ge=0, le=255, description="The unit id it answers to.")
    points: list[Point] = Field(min_length=1)
    exception_addresses: list[str] = Field(
        default_factory=list,
        description="Addresses answered with exception 2 (illegal address), points or not.",
    )
    delay: Offset = Field(0.0, description="Time taken to answer each request (a slow device).")
    silent: bool = Field(False, description="Never answers (a dead unit behind a gateway).")
    silent_addresses: list[str] = Field(
        default_factory=list,
        description="A read touching one of these gets no answer at all (a half-answering unit).",
    )
    gateway_fails: bool = Field(
        False,
        description=(
            "Every request is answered, after `delay`, with exception 11 (gateway target"
            " device failed to respond), as a TCP-to-RTU gateway answers for a dead unit."
        ),
    )
    busy_every: int | None = Field(
        None,
        ge=1,
        description="Every N-th request to the unit is answered with exception 6 (busy).",
    )
    acknowledge_every: int | None = Field(
        None,
        ge=1,
        description="Every N-th request to the unit is answered with exception 5 (acknowledge).",
    )

    @model_validator(mode="after")
    def _no_overlap(self) -> Self:
        check_points(self.points, [*self.exception_addresses, *self.silent_addresses])
        if self.silent and self.gateway_fails:
            raise ValueError(
                "a unit is silent (no answer) or gateway_fails (exception 11), not both"
            )
        return self


def check_points(points: list[Point], exception_addresses: list[str]) -> None:
    """Refuse points that overlap, and exception addresses that do not parse."""
    for text in exception_addresses:
        parse_address(text)
    owner: dict[tuple[str, int], str] = {}
    for point in points:
        address = point.parsed_address
        for offset in range(address.offset, address.offset + point.width):
            key = (address.area, offset)
            if key in owner:
                raise ValueError(
                    f"point {point.address} overlaps point {owner[key]} at {address.area}:{offset}"
                )
            owner[key] = point.address


class Device(_Model):
    """A simulated Modbus device: a TCP server on 127.0.0.1, or an RTU slave on a pty.

    One unit: `unit`, `points`, `exception_addresses`, `delay` at the top. Several
    units (a gateway, a serial bus): a list in `units`, where each unit may also
    be `silent`, have `silent_addresses`, fail behind the gateway
    (`gateway_fails`) or answer busy or acknowledge now and then.
    """

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    transport: Literal["tcp", "rtu-over-tcp", "rtu"] = Field(
        "tcp", description="tcp, rtu-over-tcp (RTU frames on TCP) or rtu (a pseudo-terminal)."
    )
    port: int = Field(0, ge=0, le=65535, description="TCP port; 0 takes any free port.")
    unit: int = Field(1, ge=0, le=255, description="The unit id the device answers to.")
    points: list[Point] | None = Field(None, min_length=1)
    exception_addresses: list[str] = Field(default_factory=list)
    delay: Offset = 0.0
    units: list[Unit] | None = Field(None, min_length=1)
    drop_every: int | None = Field(
        None, ge=1, description="Close every connection after this many requests."
    )
    serialise: bool = Field(
        False,
        description=(
            "Handle one request at a time across all connections, in arrival order, as a"
            " TCP-to-RTU gateway in front of one serial bus: a late unit delays every request"
            " behind it. Otherwise each connection is served on its own, concurrently."
        ),
    )

    @model_validator(mode="after")
    def _one_form(self) -> Self:
        if (self.points is None) == (self.units is None):
            raise ValueError("give points (one unit) or units (several), not both")
        if self.points is not None:
            check_points(self.points, self.exception_addresses)
        ids = [u.unit for u in self.all_units]
        if len(set(ids)) != len(ids):
            raise ValueError("unit ids must be unique on a device")
        return self

    @property
    def all_units(self) -> list[Unit]:
        if self.units is not None:
            return self.units
        single = Unit.model_construct(
            unit=self.unit,
            points=self.points or [],
            exception_addresses=self.exception_addresses,
            delay=self.delay,
            silent=False,
            silent_addresses=[],
        )
        return [single]


class Scenario(_Model):
    devices: list[Device] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> Self:
        names = [d.name for d in self.devices]
        if len(set(names)) != len(names):
            raise ValueError("device names must be unique")
        ports = [d.port for d in self.devices if d.port]
        if len(set(ports)) != len(ports):
            raise ValueError("two devices have the same port; give each its own (or 0)")
        return self


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario YAML file."""
    return load_model(path, Scenario)


def load_model(path: str | Path, model: type[M]) -> M:
    """Read a scenario YAML file into `model` (the Modbus or the OPC UA scenario)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigFileMissing(f"{path}: cannot read the scenario: {exc.strerror}") from None
    try:
        return model.model_validate(yaml.safe_load(text))
    except yaml.YAMLError as exc:
        raise ConfigError([f"{path}: not valid YAML: {exc}"]) from None
    except ValidationError as exc:
        problems = [
            f"{path}: {'.'.join(str(p) for p in error['loc']) or '(top)'}: {error['msg']}"
            for error in exc.errors()
        ]
        raise ConfigError(problems) from None
