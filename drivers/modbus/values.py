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
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import repeat
from operator import truediv

from edge_agent.drivers.modbus.codec import BIT_AREAS, DATA_TYPES, decode
from edge_agent.drivers.modbus.config import ModbusTag, Scale
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
    isfinite = math.isfinite
    if _plain(tag):
        # Its own small closure: one of these stays per tag, and the general one below
        # holds a dozen cells (6 MB at 10,000 tags).
        def as_is(raw: float, now: int) -> Sample:
            if not isfinite(raw):
                raise ValueError(f"{data_type} decodes to {raw}, not a finite number")
            return Sample(code, now, raw, _GOOD)

        return as_is
    faults = frozenset(tag.fault_values)
    current, scale, span = tag.current, tag.scale, tag.range
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


_DIVISORS = {float(f"1e-{k}"): float(10**k) for k in range(1, 23)}
_SMALL_INTEGERS = frozenset({"int16", "uint16", "int32", "uint32"})


def _exact_divisor(tag: ModbusTag) -> float | None:
    """10**k when the tag's sample value is always `raw / 10**k`, else None.

    So for an integer of at most 10 digits scaled by 10**-k with no offset, no
    fault values (int16 times 0.1: the usual fixed-point register). `convert`
    gives tidy(raw * 10**-k + 0.0), and raw * 10**-k is within 2.3e-16
    (relative) of the decimal raw / 10**k, which has at most 10 significant
    digits: rounding to 15 gives that decimal back, and float() of it is the
    correctly rounded quotient, which raw / 10**k also is (10**k is exact up to
    k = 22). A division instead of formatting and parsing a string.
    """
    scale = tag.scale
    if tag.type not in _SMALL_INTEGERS or tag.fault_values or tag.current is not None:
        return None
    if scale is None or scale.raw is not None or scale.offset or scale.multiplier is None:
        return None
    return _DIVISORS.get(scale.multiplier)


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
    plain = _plain(tag)
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

    A batch is `bulk` when every value, divided by `divisor` if there is one,
    is its tag's good sample whenever it is finite: its tags are plain, or
    exactly divided (`_exact_divisor`). Such a batch becomes samples in one
    pass (`good_samples`) instead of a call per tag.
    """

    unpack: Callable[[bytes], tuple[float, ...]]
    swapped: bool
    entries: tuple[tuple[int, str, Callable[[float, int], Sample], bool], ...]
    bulk: bool = False
    divisor: float | None = None
    integral: bool = False
    """Integers only: every value is finite."""
    indices: tuple[int, ...] = ()
    codes: tuple[str, ...] = ()


_new_tuple = tuple.__new__


def good_samples(codes: tuple[str, ...], now: int, values: Iterable[float]) -> Iterator[Sample]:
    """Good samples of the tags `codes` with `values`, taken at `now`.

    `tuple.__new__` is all that Sample's own constructor calls, but mapped here
    from C instead of through a Python frame per sample: a sample made and
    freed costs 1,500 CPU instructions instead of 3,300, once per tag per poll.
    """
    return map(_new_tuple, repeat(Sample), zip(codes, repeat(now), values, repeat(_GOOD)))


def decode_batch(
    batch: Batch,
    data: bytes,
    now: int,
    out: list[Sample | None],
    refused: Callable[[int, ValueError], None],
) -> None:
    """The samples of a batch's tags from a response's bytes, into `out` at their indices.

    A value its converter refuses becomes q=4 (CONFIG) and is told to `refused`.
    """
    values, isfinite = batch.unpack(data), math.isfinite
    if batch.bulk and (batch.integral or all(map(isfinite, values))):
        divisor = batch.divisor
        numbers = values if divisor is None else map(truediv, values, repeat(divisor))
        samples = good_samples(batch.codes, now, numbers)
        for index, sample in zip(batch.indices, samples, strict=True):
            out[index] = sample
        return
    for (index, code, convert, plain), value in zip(batch.entries, values, strict=True):
        if plain and isfinite(value):
            out[index] = Sample(code, now, value, _GOOD)
            continue
        try:
            out[index] = convert(value, now)
        except ValueError as exc:
            out[index] = Sample.bad(code, now, Quality.CONFIG)
            refused(index, exc)


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
    groups: dict[tuple[bool, str, bool, float | None], list[tuple[int, ModbusTag, int]]] = {}
    singles: list[tuple[int, SlotDecoder]] = []
    swapped_any = False
    for index, tag, start in slots:
        if tag.parsed_address.bit is not None or tag.type in ("bool", "string"):
            decoder, needs = compile_slot(tag, default_order, start)
            singles.append((index, decoder))
            swapped_any |= needs
            continue
        order = tag.byte_order or default_order
        divisor = _exact_divisor(tag)
        bulk = divisor is not None or _plain(tag)
        key = (order in ("BADC", "CDAB"), "<" if order in ("DCBA", "CDAB") else ">", bulk, divisor)
        groups.setdefault(key, []).append((index, tag, start))
    batches = []
    for (swapped, endian, bulk, divisor), members in groups.items():
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
            entries.append((index, tag.tag, numeric_converter(tag), _plain(tag)))
        if entries:
            swapped_any |= swapped
            batches.append(
                Batch(
                    struct.Struct(fmt).unpack_from,
                    swapped,
                    tuple(entries),
                    bulk,
                    divisor,
                    integral=not any(c in "fd" for c in fmt),
                    indices=tuple(e[0] for e in entries),
                    codes=tuple(e[1] for e in entries),
                )
            )
    return RequestDecoder(tuple(batches), tuple(singles), swapped_any)


def _plain(tag: ModbusTag) -> bool:
    """The tag's number is its value: no fault values, no 4-20 mA, no scaling."""
    return not (tag.scale or tag.current or tag.fault_values)
