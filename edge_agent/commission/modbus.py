"""The Modbus tables of `edge-agent read`: raw registers, `--raw`, `--guess-order`.

Per tag: address, type, the registers in hex, value, unit, quality, limits;
`--raw` adds the value before scaling; `--guess-order` tries the four byte
orders on each multi-register tag with a range and suggests the device's
`byte_order`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from drivers.modbus.codec import BIT_AREAS, BYTE_ORDERS, register_count
from drivers.modbus.config import ModbusDevice, ModbusTag
from drivers.modbus.driver import ModbusDriver, Reading
from drivers.modbus.values import to_sample
from edge_agent.commission.table import (
    DeviceTable,
    count_bad,
    layout,
    limits,
    quality_cell,
    text,
    value_cell,
)
from edge_agent.model import Quality


@dataclass(frozen=True, slots=True)
class OrderGuess:
    tag: str
    fits: list[str]
    values: dict[str, object]


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
    tables = []
    for device, readings in zip(devices, results, strict=True):
        lines = device_lines(device, readings, raw=raw)
        if guess_order:
            lines += guess_lines(guess_orders(device, readings), device)
        tables.append(DeviceTable(lines, len(readings), count_bad([r.sample for r in readings])))
    return tables


def guess_orders(device: ModbusDevice, readings: list[Reading]) -> list[OrderGuess]:
    """For each multi-register numeric tag with a range: the byte orders that fit it."""
    guesses = []
    for tag, reading in zip(device.tags, readings, strict=True):
        if not _orderable(tag) or reading.raw is None or tag.range is None:
            continue
        values: dict[str, object] = {}
        fits = []
        for order in BYTE_ORDERS:
            trial = tag.model_copy(update={"byte_order": order})
            try:
                sample = to_sample(trial, reading.raw, order, 0)
            except ValueError:
                values[order] = "not a number"
                continue
            values[order] = sample.value
            if sample.quality is Quality.GOOD and _plausible(sample.value, tag):
                fits.append(order)
        guesses.append(OrderGuess(tag.tag, fits, values))
    return guesses


def _plausible(value: object, tag: ModbusTag) -> bool:
    """Inside the range, and not a float crumb: a swapped float often decodes to 1e-38."""
    if tag.range is None or not isinstance(value, int | float):
        return False
    if not tag.range.low <= value <= tag.range.high:
        return False
    return value == 0 or abs(value) >= tag.range.span * 1e-6


def _orderable(tag: ModbusTag) -> bool:
    area = tag.parsed_address.area
    return (
        area not in BIT_AREAS
        and tag.type not in ("bool", "string")
        and (register_count(tag.type) > 1)
    )


def device_lines(device: ModbusDevice, readings: list[Reading], *, raw: bool) -> list[str]:
    where = device.serial.port if device.serial else f"{device.host}:{device.port}"
    header = ["tag", "address", "type", "registers", "value", "unit", "quality", "limits"]
    if raw:
        header.insert(4, "raw value")
    rows = [header]
    for tag, reading in zip(device.tags, readings, strict=True):
        rows.append(_row(tag, reading, device, raw=raw))
    return [f"{device.name}  ({device.transport} {where} unit {device.unit})", *layout(rows)]


def _row(tag: ModbusTag, reading: Reading, device: ModbusDevice, *, raw: bool) -> list[str]:
    registers = "-" if reading.raw is None else _hex(reading.raw)
    row = [
        tag.tag,
        str(tag.parsed_address),
        tag.type if tag.length is None else f"{tag.type}[{tag.length}]",
        registers,
        value_cell(reading.sample),
        tag.unit or "",
        quality_cell(reading.sample),
        limits(tag),
    ]
    if raw:
        row.insert(4, _raw_value(tag, reading, device))
    return row


def _raw_value(tag: ModbusTag, reading: Reading, device: ModbusDevice) -> str:
    if reading.raw is None:
        return "-"
    bare = tag.model_copy(
        update={"scale": None, "current": None, "range": None, "fault_values": []}
    )
    try:
        return text(to_sample(bare, reading.raw, device.byte_order, 0).value)
    except ValueError as exc:
        return f"({exc})"


def _hex(raw: list[int] | list[bool]) -> str:
    if raw and isinstance(raw[0], bool):
        return "1" if raw[0] else "0"
    return " ".join(f"{int(r):04X}" for r in raw)


def guess_lines(guesses: list[OrderGuess], device: ModbusDevice) -> list[str]:
    if not guesses:
        return ["  byte order: no multi-register tag with a range to judge by"]
    lines = ["  byte order guesses (orders whose value falls inside the tag's range):"]
    tally = dict.fromkeys(BYTE_ORDERS, 0)
    for guess in guesses:
        for order in guess.fits:
            tally[order] += 1
        tried = ", ".join(f"{o}={text(v)}" for o, v in guess.values.items())
        verdict = " ".join(guess.fits) if guess.fits else "none"
        lines.append(f"    {guess.tag}: {verdict}   ({tried})")
    best = max(tally.values())
    winners = [o for o, n in tally.items() if n == best and best > 0]
    if len(winners) == 1:
        note = "" if winners[0] == device.byte_order else f" (config says {device.byte_order})"
        lines.append(f"  suggested byte_order: {winners[0]}{note}")
    else:
        lines.append("  no single byte order fits best: " + (" ".join(winners) or "none fits"))
    return lines
