"""The OPC UA tables of `edge-agent read`: what each node resolved to and why a tag is bad.

Per tag: the node as configured (and the NodeId it resolved to when that reads
differently), the built-in type the server sent, value, unit, quality, limits,
and the reason of a bad tag (the server's StatusCode, a type mismatch, a node
or browse path that did not resolve). A server that cannot be reached gets its
header and one line saying why. `--raw` and `--guess-order` are about
registers: they do not apply here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from edge_agent.commission.table import (
    DeviceTable,
    count_bad,
    count_uncertain,
    judged,
    layout,
    limits,
    quality_cell,
    range_reason,
    value_text,
)
from edge_agent.drivers.opcua.config import OpcuaDevice, OpcuaTag
from edge_agent.drivers.opcua.driver import OpcuaDriver, Survey, TagReading
from edge_agent.model import Sample

HEADER = ["tag", "node", "type", "value", "unit", "quality", "limits", "reason"]


async def read(devices: Sequence[OpcuaDevice]) -> list[DeviceTable]:
    """Every tag of every server once, the servers concurrently; one table per server."""
    surveys = await asyncio.gather(*(OpcuaDriver(d).read_all() for d in devices))
    return [_table(d, s) for d, s in zip(devices, surveys, strict=True)]


def _table(device: OpcuaDevice, survey: Survey) -> DeviceTable:
    security = device.security
    channel = f"{security.policy}/{security.mode}" if security.secure else "None"
    lines = [f"{device.name}  (opcua {device.endpoint} security {channel})"]
    finals = [judged(tag, r.sample) for tag, r in zip(device.tags, survey.readings, strict=True)]
    if survey.failure is not None:
        lines.append(f"  {survey.failure} ({len(survey.readings)} tags not read)")
    else:
        rows = [
            _row(tag, r, final)
            for tag, r, final in zip(device.tags, survey.readings, finals, strict=True)
        ]
        lines += layout([HEADER, *rows])
    return DeviceTable(lines, len(finals), count_bad(finals), count_uncertain(finals))


def _row(tag: OpcuaTag, reading: TagReading, final: Sample) -> list[str]:
    # Written as the rules write it: a 64-bit integer of a tag without `type` as one.
    number_format = tag.number_format.learned_from(reading.sample.value)
    return [
        tag.tag,
        _node(tag, reading.node),
        reading.data_type or "-",
        value_text(number_format, final.value),
        tag.unit or "",
        quality_cell(final),
        limits(tag),
        reading.reason or range_reason(tag, reading.sample, final) or "",
    ]


def _node(tag: OpcuaTag, resolved: str | None) -> str:
    """As configured; with the NodeId it resolved to when that is written otherwise
    (a namespace URI or the device's namespace made an index, a browse path followed)."""
    if resolved is None or resolved == tag.node:
        return tag.where
    return f"{tag.where} -> {resolved}"
