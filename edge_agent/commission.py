"""`edge-agent read`: read every tag of a config once and print what came back.

For the technician at the cabinet: one table per device (tag, address, raw
registers, value, unit, quality, limits), the reason for every bad tag, and
with `--guess-order` the byte order under which each multi-register value falls
inside its instrument range. Read-only like the agent; nothing is stored or
sent. The exit code is 0 when every tag is good or uncertain, 1 when any is
bad (q >= 2).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TextIO

from drivers.modbus.codec import BIT_AREAS, BYTE_ORDERS, register_count
from drivers.modbus.config import ModbusDevice, ModbusTag
from drivers.modbus.driver import ModbusDriver, Reading
from drivers.modbus.values import to_sample
from edge_agent.model import Quality

QUALITY_NAMES = {
    Quality.GOOD: "good",
    Quality.UNCERTAIN: "uncertain (out of range)",
    Quality.COMM: "BAD: no answer / refused",
    Quality.SENSOR: "BAD: sensor fault",
    Quality.CONFIG: "BAD: cannot decode",
}


@dataclass(frozen=True, slots=True)
class OrderGuess:
    tag: str
    fits: list[str]
    values: dict[str, object]


async def read_devices(devices: Sequence[ModbusDevice]) -> list[list[Reading]]:
    """Every tag of every device once; the devices are read concurrently."""
    drivers = [ModbusDriver(device) for device in devices]
    try:
        return list(await asyncio.gather(*(d.read_all() for d in drivers)))
    finally:
        for driver in drivers:
            await driver.close()


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


def print_device(device: ModbusDevice, readings: list[Reading], out: TextIO, *, raw: bool) -> None:
    where = device.serial.port if device.serial else f"{device.host}:{device.port}"
    print(f"{device.name}  ({device.transport} {where} unit {device.unit})", file=out)
    header = ["tag", "address", "type", "registers", "value", "unit", "quality", "limits"]
    if raw:
        header.insert(4, "raw value")
    rows = [header]
    for tag, reading in zip(device.tags, readings, strict=True):
        rows.append(_row(tag, reading, device, raw=raw))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for row in rows:
        print(
            "  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip(),
            file=out,
        )


def _row(tag: ModbusTag, reading: Reading, device: ModbusDevice, *, raw: bool) -> list[str]:
    sample = reading.sample
    registers = "-" if reading.raw is None else _hex(reading.raw)
    value = "-" if sample.value is None else _text(sample.value)
    row = [
        tag.tag,
        str(tag.parsed_address),
        tag.type if tag.length is None else f"{tag.type}[{tag.length}]",
        registers,
        value,
        tag.unit or "",
        f"q={int(sample.quality)} {QUALITY_NAMES[sample.quality]}",
        _limits(tag),
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
        return _text(to_sample(bare, reading.raw, device.byte_order, 0).value)
    except ValueError as exc:
        return f"({exc})"


def _hex(raw: list[int] | list[bool]) -> str:
    if raw and isinstance(raw[0], bool):
        return "1" if raw[0] else "0"
    return " ".join(f"{int(r):04X}" for r in raw)


def _text(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, str):
        return repr(value)
    return str(value)


def _limits(tag: ModbusTag) -> str:
    parts = [f"{k}={v:g}" for k, v in (tag.limits.items() if tag.limits else [])]
    if tag.range is not None:
        parts.append(f"range {tag.range.low:g}..{tag.range.high:g}")
    return " ".join(parts)


def print_guesses(guesses: list[OrderGuess], device: ModbusDevice, out: TextIO) -> None:
    if not guesses:
        print("  byte order: no multi-register tag with a range to judge by", file=out)
        return
    print("  byte order guesses (orders whose value falls inside the tag's range):", file=out)
    tally = dict.fromkeys(BYTE_ORDERS, 0)
    for guess in guesses:
        for order in guess.fits:
            tally[order] += 1
        tried = ", ".join(f"{o}={_text(v)}" for o, v in guess.values.items())
        verdict = " ".join(guess.fits) if guess.fits else "none"
        print(f"    {guess.tag}: {verdict}   ({tried})", file=out)
    best = max(tally.values())
    winners = [o for o, n in tally.items() if n == best and best > 0]
    if len(winners) == 1:
        note = "" if winners[0] == device.byte_order else f" (config says {device.byte_order})"
        print(f"  suggested byte_order: {winners[0]}{note}", file=out)
    else:
        print("  no single byte order fits best: " + (" ".join(winners) or "none fits"), file=out)


def run(
    devices: Sequence[ModbusDevice], out: TextIO, *, raw: bool = False, guess_order: bool = False
) -> int:
    """Read, print, and return 1 if any tag is bad (q >= 2), else 0."""
    results = asyncio.run(read_devices(devices))
    bad = 0
    for device, readings in zip(devices, results, strict=True):
        print_device(device, readings, out, raw=raw)
        if guess_order:
            print_guesses(guess_orders(device, readings), device, out)
        bad += sum(1 for r in readings if r.sample.quality.is_bad)
        print(file=out)
    total = sum(len(r) for r in results)
    print(f"{total - bad} of {total} tags readable, {bad} bad", file=out)
    return 1 if bad else 0
