"""The Modbus tables of `edge-agent read`: raw registers, `--raw`, `--guess-order`.

Per tag: address, type, the registers in hex, value, unit, quality, limits,
and why a tag is not good: the driver's reason for a bad read in Modbus
terms (drivers/modbus/reasons.py), the loop current of a 4-20 mA tag in its
NE43 fault band, a value outside the range. Value and quality are those the
running agent would send (table.judged). `--raw` adds the value before
scaling.

`--guess-order` decodes each multi-register numeric tag with a range in the
four byte orders and judges each by the tag's own rules: an order fits when
its value comes out good (inside the range) and is not a float crumb. The
device's `byte_order` is suggested only when one order fits every tag that
follows it; otherwise each tag that needs another order is named with the
`byte_order:` to give it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from edge_agent.commission.table import (
    DeviceTable,
    count_bad,
    count_uncertain,
    judged,
    layout,
    limits,
    quality_cell,
    range_reason,
    value_cell,
    value_text,
)
from edge_agent.drivers.modbus.codec import BIT_AREAS, BYTE_ORDERS, register_count
from edge_agent.drivers.modbus.config import Current, ModbusDevice, ModbusTag
from edge_agent.drivers.modbus.driver import ModbusDriver, Reading
from edge_agent.drivers.modbus.values import to_sample
from edge_agent.model import Quality, Sample


@dataclass(frozen=True, slots=True)
class OrderGuess:
    """What one tag's registers decode to in each byte order, and which orders fit."""

    tag: str
    order: str
    """The order it is read in now: its own `byte_order`, else the device's."""
    own: bool
    """The tag carries its own `byte_order`: the device's does not apply to it."""
    fits: list[str]
    values: dict[str, str]
    """Order -> the value as the wire writes it, or why there is none."""


async def read(
    devices: Sequence[ModbusDevice], *, raw: bool, guess_order: bool
) -> list[DeviceTable]:
    """Every tag of every device once, the devices concurrently; one table per device."""
    drivers = [ModbusDriver(device) for device in devices]
    try:
        results = await asyncio.gather(*(d.read_all() for d in drivers))
    finally:
        for driver in drivers:
            await driver.close()
    return [
        _table(device, readings, raw=raw, guess_order=guess_order)
        for device, readings in zip(devices, results, strict=True)
    ]


def _table(
    device: ModbusDevice, readings: list[Reading], *, raw: bool, guess_order: bool
) -> DeviceTable:
    finals = [judged(tag, r.sample) for tag, r in zip(device.tags, readings, strict=True)]
    lines = device_lines(device, readings, finals, raw=raw)
    if guess_order:
        lines += guess_lines(guess_orders(device, readings), device)
    return DeviceTable(lines, len(finals), count_bad(finals), count_uncertain(finals))


def device_lines(
    device: ModbusDevice, readings: list[Reading], finals: list[Sample], *, raw: bool
) -> list[str]:
    where = device.serial.port if device.serial else f"{device.host}:{device.port}"
    header = ["tag", "address", "type", "registers", "value", "unit", "quality", "limits", "reason"]
    if raw:
        header.insert(4, "raw value")
    rows = [header]
    for tag, reading, final in zip(device.tags, readings, finals, strict=True):
        rows.append(_row(tag, reading, final, device, raw=raw))
    return [f"{device.name}  ({device.transport} {where} unit {device.unit})", *layout(rows)]


def _row(
    tag: ModbusTag, reading: Reading, final: Sample, device: ModbusDevice, *, raw: bool
) -> list[str]:
    row = [
        tag.tag,
        str(tag.parsed_address),
        tag.type if tag.length is None else f"{tag.type}[{tag.length}]",
        "-" if reading.raw is None else _hex(reading.raw),
        value_cell(tag, final),
        tag.unit or "",
        quality_cell(final, reading.reason),
        limits(tag),
        _reason(tag, reading, final, device),
    ]
    if raw:
        row.insert(4, _raw_value(tag, reading, device))
    return row


def _reason(tag: ModbusTag, reading: Reading, final: Sample, device: ModbusDevice) -> str:
    """The driver's reason; else what a fault value, the loop current or the range says."""
    if reading.reason is not None:
        return reading.reason
    count = _count(tag, reading, device)
    loop = "" if tag.current is None or count is None else f"{_milliamps(tag.current, count)} mA"
    if reading.sample.quality is Quality.SENSOR:
        if count is not None and count in tag.fault_values:
            return f"the device sends its fault value {value_text(_bare(tag).number_format, count)}"
        if loop and tag.current is not None:
            low, high = tag.current.fault_low, tag.current.fault_high
            return f"{loop} is outside {low:g}..{high:g} mA (NE43): broken wire or dead transmitter"
        return ""
    why = range_reason(tag, reading.sample, final) or ""
    return f"{loop}: {why}" if loop and why else why


def _milliamps(current: Current, count: float) -> str:
    return f"{round(current.milliamps(count), 3):g}"


def _bare(tag: ModbusTag) -> ModbusTag:
    """The tag without scaling, 4-20 mA, fault values, range or decimals: its raw number."""
    bare: dict[str, object] = {"scale": None, "current": None, "range": None, "decimals": None}
    return tag.model_copy(update={**bare, "fault_values": []})


def _count(tag: ModbusTag, reading: Reading, device: ModbusDevice) -> float | None:
    """The number the registers hold before scaling; None when they hold none."""
    if reading.raw is None:
        return None
    try:
        value = to_sample(_bare(tag), reading.raw, device.byte_order, 0).value
    except ValueError:
        return None
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


def _raw_value(tag: ModbusTag, reading: Reading, device: ModbusDevice) -> str:
    if reading.raw is None:
        return "-"
    bare = _bare(tag)
    try:
        sample = to_sample(bare, reading.raw, device.byte_order, 0)
    except ValueError as exc:
        return f"({exc})"
    return value_text(bare.number_format, sample.value)


def _hex(raw: list[int] | list[bool]) -> str:
    if raw and isinstance(raw[0], bool):
        return "1" if raw[0] else "0"
    return " ".join(f"{int(r):04X}" for r in raw)


# --guess-order


def guess_orders(device: ModbusDevice, readings: list[Reading]) -> list[OrderGuess]:
    """For each multi-register numeric tag with a range and registers: the orders that fit."""
    return [
        _guess(tag, reading.raw, device)
        for tag, reading in zip(device.tags, readings, strict=True)
        if _orderable(tag) and tag.range is not None and reading.raw is not None
    ]


def _guess(tag: ModbusTag, raw: list[int] | list[bool], device: ModbusDevice) -> OrderGuess:
    values: dict[str, str] = {}
    fits = []
    for order in BYTE_ORDERS:
        trial = tag.model_copy(update={"byte_order": order})
        try:
            decoded = to_sample(trial, raw, order, 0)
        except ValueError:
            values[order] = "not a number"
            continue
        final = judged(trial, decoded)
        values[order] = value_text(tag.number_format, decoded.value)
        if decoded.value is None:
            values[order] = "sensor fault"  # a 4-20 mA tag in its NE43 fault band
        if final.quality is Quality.GOOD and not _crumb(final.value, tag):
            fits.append(order)
    own = tag.byte_order is not None
    return OrderGuess(tag.tag, tag.byte_order or device.byte_order, own, fits, values)


def _crumb(value: object, tag: ModbusTag) -> bool:
    """A swapped float often decodes to a denormal like 1e-41: inside 0..18, yet no reading."""
    assert tag.range is not None
    if not isinstance(value, int | float) or value == 0:
        return False
    return abs(value) < tag.range.span * 1e-6


def _orderable(tag: ModbusTag) -> bool:
    area = tag.parsed_address.area
    return (
        area not in BIT_AREAS
        and tag.type not in ("bool", "string")
        and (register_count(tag.type) > 1)
    )


def guess_lines(guesses: list[OrderGuess], device: ModbusDevice) -> list[str]:
    """Per tag the orders that fit; then one device order, or the tags that need their own."""
    if not guesses:
        return ["  byte order: no multi-register tag with a range to judge by"]
    lines = ["  byte order guesses (orders whose value falls inside the tag's range):"]
    for guess in guesses:
        tried = ", ".join(f"{order}={value}" for order, value in guess.values.items())
        verdict = " ".join(guess.fits) if guess.fits else "none"
        own = f"   [its own byte_order: {guess.order}]" if guess.own else ""
        lines.append(f"    {guess.tag}: {verdict}   ({tried}){own}")
    return lines + _advice(guesses, device)


def _advice(guesses: list[OrderGuess], device: ModbusDevice) -> list[str]:
    """The device's order when one fits every tag judged that follows it; else, from
    the device's order as configured, each tag that needs its own. Tags no order fits
    are named apart: the byte order is not their problem."""
    following = [g for g in guesses if g.fits and not g.own]
    common = [o for o in BYTE_ORDERS if all(o in g.fits for g in following)]
    base: str = device.byte_order
    lines = []
    if following and common:
        base = base if base in common else common[0]
        note = "as configured" if base == device.byte_order else f"config says {device.byte_order}"
        also = [o for o in common if o != base]
        lines.append(
            f"  suggested byte_order: {base} ({note}): it puts {_inside(following)}"
            + (f" ({', '.join(also)} too)" if also else "")
        )
    elif following:
        fitting = sum(1 for g in following if base in g.fits)
        lines.append(
            f"  no single byte_order puts {_inside(following)} (the device's "
            f"{base} fits {fitting}): keep the device's {base} and give each tag below its own:"
        )
    fixes = [g for g in guesses if g.fits and (g.order if g.own else base) not in g.fits]
    if fixes and common:
        lines.append("  tags whose own byte_order does not fit: give each the one shown")
    lines += [
        f"    {g.tag}: byte_order: {' or '.join(g.fits)}" + (f" (now {g.order})" if g.own else "")
        for g in fixes
    ]
    unfit = [g.tag for g in guesses if not g.fits]
    if unfit:
        lines.append(
            f"  no byte order puts {', '.join(unfit)} inside its range: not a byte-order"
            " problem; check address, type, scale and range"
        )
    return lines


def _inside(guesses: list[OrderGuess]) -> str:
    """`all 6 tags judged inside their range`, `the 1 tag judged inside its range`."""
    if len(guesses) == 1:
        return "the 1 tag judged inside its range"
    return f"all {len(guesses)} tags judged inside their range"
