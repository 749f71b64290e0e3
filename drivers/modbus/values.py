"""Raw registers -> a tag's Sample: decoding, device fault values, 4-20 mA, scaling.

Two paths, one meaning:
- `to_sample` decodes one tag from its own registers; commissioning and the
  tests use it, and it is the reference.
- `compile_slot` builds, once per tag, a function that decodes the tag from a
  whole response: the response is packed to bytes once (big-endian, and with
  the bytes of every word swapped) and each tag is one `struct.unpack_from` at
  its offset. ABCD reads the big-endian bytes with a big-endian format, DCBA
  with a little-endian one; BADC and CDAB do the same on the swapped bytes.
  tests/unit/test_modbus_values.py checks both paths agree on every type and
  byte order.

Qualities: NE43 fault band or a device fault value -> q=3, no value; a float
that is NaN or infinite raises ValueError (the driver makes it q=4). The
instrument range is judged by the rules stage, the same for every driver.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from drivers.modbus.codec import BIT_AREAS, DATA_TYPES, decode
from drivers.modbus.config import ModbusTag, Scale
from edge_agent.model import Quality, Sample

Raw = list[int] | list[bool]
SlotDecoder = Callable[[list[int], bytes, bytes, int], Sample]
"""(registers of the response, big-endian bytes, word-swapped bytes, ts_ms) -> Sample."""

_GOOD = Quality.GOOD


def to_sample(tag: ModbusTag, raw: Raw, default_order: str, now: int) -> Sample:
    """Raw registers (or one bit) -> the tag's sample.

    Raises ValueError when the registers do not hold a value of the tag's type.
    """
    address = tag.parsed_address
    if address.area in BIT_AREAS:
        return Sample(tag.tag, now, bool(raw[0]), _GOOD)
    registers = [int(r) for r in raw]
    value = decode(registers, tag.type, tag.byte_order or default_order, address.bit)
    if isinstance(value, bool | str):
        return Sample(tag.tag, now, value, _GOOD)
    return engineering(tag, value, now)


def engineering(tag: ModbusTag, raw: float, now: int) -> Sample:
    """A decoded number -> the tag's sample: fault values, then 4-20 mA or scale."""
    return numeric_converter(tag)(raw, now)


def numeric_converter(tag: ModbusTag) -> Callable[[float, int], Sample]:
    """The tag's number -> sample function, with its settings bound once."""
    code, data_type = tag.tag, tag.type
    faults = frozenset(tag.fault_values)
    current, scale, span = tag.current, tag.scale, tag.range
    isfinite = math.isfinite
    low, high = (span.low, span.high) if span is not None else (0.0, 0.0)
    if current is not None:
        r4, span_raw = current.raw_4ma, current.raw_20ma - current.raw_4ma
        fault_low, fault_high = current.fault_low, current.fault_high
    linear = _linear(scale) if scale is not None else None

    def convert(raw: float, now: int) -> Sample:
        if not isfinite(raw):
            raise ValueError(f"{data_type} decodes to {raw}, not a finite number")
        if faults and raw in faults:
            return Sample(code, now, None, Quality.SENSOR)
        result: float | int = raw
        if current is not None:
            milliamps = 4.0 + 16.0 * (raw - r4) / span_raw
            if not fault_low <= milliamps <= fault_high:
                return Sample(code, now, None, Quality.SENSOR)
            result = tidy(low + (high - low) * (milliamps - 4.0) / 16.0)
        elif linear is not None:
            result = tidy(linear(float(raw)))
        return Sample(code, now, result, _GOOD)

    return convert


def _linear(scale: Scale) -> Callable[[float], float]:
    """Scale.apply with its numbers bound (the same arithmetic, in the same order)."""
    if scale.raw is not None and scale.eng is not None:
        (r0, r1), (e0, e1) = scale.raw, scale.eng
        return lambda raw: e0 + (raw - r0) * (e1 - e0) / (r1 - r0)
    multiplier = 1.0 if scale.multiplier is None else scale.multiplier
    offset = scale.offset or 0.0
    return lambda raw: raw * multiplier + offset


def tidy(value: float) -> float:
    # 15 significant digits drop binary noise: 209 * 0.1 reads 20.9, not 20.900000000000002.
    return float(f"{value:.15g}")


def compile_slot(tag: ModbusTag, default_order: str, start: int) -> tuple[SlotDecoder, bool]:
    """A fast decoder of `tag` at register `start` of a response; True if it needs swapped bytes."""
    code = tag.tag
    address = tag.parsed_address
    if address.bit is not None:
        bit = address.bit
        return (
            lambda regs, _be, _sw, now: Sample(code, now, bool((regs[start] >> bit) & 1), _GOOD)
        ), False
    if tag.type in ("bool", "string"):
        count = tag.width

        def generic(regs: list[int], _be: bytes, _sw: bytes, now: int) -> Sample:
            return to_sample(tag, regs[start : start + count], default_order, now)

        return generic, False
    order = tag.byte_order or default_order
    fmt = DATA_TYPES[tag.type][0][1:]
    unpack = struct.Struct(("<" if order in ("DCBA", "CDAB") else ">") + fmt).unpack_from
    swapped = order in ("BADC", "CDAB")
    offset = 2 * start
    plain = not (tag.scale or tag.current or tag.fault_values)
    is_float = fmt in "fd"
    if plain and not is_float:
        if swapped:
            return (lambda _r, _be, sw, now: Sample(code, now, unpack(sw, offset)[0], _GOOD)), True
        return (lambda _r, be, _sw, now: Sample(code, now, unpack(be, offset)[0], _GOOD)), False
    isfinite = math.isfinite
    convert = numeric_converter(tag)

    def number(_regs: list[int], be: bytes, sw: bytes, now: int) -> Sample:
        value = unpack(sw if swapped else be, offset)[0]
        if plain and isfinite(value):
            return Sample(code, now, value, _GOOD)
        return convert(value, now)

    return number, swapped


def pack_registers(registers: list[int], swapped: bool) -> tuple[bytes, bytes]:
    """A response's registers as big-endian bytes, and (if asked) with each word's bytes swapped."""
    count = len(registers)
    be = struct.pack(f">{count}H", *registers)
    sw = struct.pack(f"<{count}H", *registers) if swapped else b""
    return be, sw


@dataclass(frozen=True, slots=True)
class Batch:
    """Numeric tags of one response that one struct call decodes together.

    `entries` are (tag index, tag code, converter, plain): a plain value with a
    finite number becomes a good sample directly, anything else goes through
    the converter (faults, scaling, refusal of NaN).
    """

    unpack: Callable[[bytes], tuple[float, ...]]
    swapped: bool
    entries: tuple[tuple[int, str, Callable[[float, int], Sample], bool], ...]


@dataclass(frozen=True, slots=True)
class RequestDecoder:
    batches: tuple[Batch, ...]
    singles: tuple[tuple[int, SlotDecoder], ...]
    swapped: bool
    """Whether any part needs the word-swapped bytes."""


def compile_request(
    slots: Sequence[tuple[int, ModbusTag, int]], default_order: str
) -> RequestDecoder:
    """Decoders for the (index, tag, start) slots of one register response.

    Numeric tags that do not overlap are grouped by byte order into one
    `struct` format each (pad bytes over what they skip); bits of registers,
    strings and overlapping tags get a decoder of their own.
    """
    groups: dict[tuple[bool, str], list[tuple[int, ModbusTag, int]]] = {}
    singles: list[tuple[int, SlotDecoder]] = []
    swapped_any = False
    for index, tag, start in slots:
        if tag.parsed_address.bit is not None or tag.type in ("bool", "string"):
            decoder, needs = compile_slot(tag, default_order, start)
            singles.append((index, decoder))
            swapped_any |= needs
            continue
        order = tag.byte_order or default_order
        key = (order in ("BADC", "CDAB"), "<" if order in ("DCBA", "CDAB") else ">")
        groups.setdefault(key, []).append((index, tag, start))
    batches = []
    for (swapped, endian), members in groups.items():
        fmt, cursor, entries = endian, 0, []
        for index, tag, start in sorted(members, key=lambda m: m[2]):
            code = DATA_TYPES[tag.type][0][1:]
            if 2 * start < cursor:  # overlaps the one before: decode it alone
                decoder, needs = compile_slot(tag, default_order, start)
                singles.append((index, decoder))
                swapped_any |= needs
                continue
            fmt += f"{2 * start - cursor}x{code}" if 2 * start > cursor else code
            cursor = 2 * start + struct.calcsize("<" + code)
            plain = not (tag.scale or tag.current or tag.fault_values)
            entries.append((index, tag.tag, numeric_converter(tag), plain))
        if entries:
            swapped_any |= swapped
            batches.append(Batch(struct.Struct(fmt).unpack_from, swapped, tuple(entries)))
    return RequestDecoder(tuple(batches), tuple(singles), swapped_any)
