"""`edge-agent read`: read every tag of a config once and print what came back.

For the technician at the cabinet: one table per device, in config order, its
Modbus and OPC UA devices read concurrently (commission/modbus.py,
commission/opcua.py). Read-only like the agent; nothing is stored or sent.
Each value goes through its tag's rules, so value and quality are what `run`
would send (commission/table.py). The last line counts the tags of every
device, and the uncertain ones among the readable.

The exit code is 1 when any tag is bad (q >= 2), else 0. An uncertain tag
(q=1: outside its range, within the tolerance) does not make it 1: the agent
sends its value, and it is a reading to look at, not a link or config that
fails; the last line counts it. A value beyond the tolerance (a wrong byte
order, scale or range, a sensor fault) is q=3 and does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Sequence
from typing import Any, TextIO

from edge_agent.commission.table import DeviceTable
from edge_agent.drivers.modbus.config import ModbusDevice
from edge_agent.drivers.opcua.config import OpcuaDevice

Device = ModbusDevice | OpcuaDevice


def run(
    devices: Sequence[Device], out: TextIO, *, raw: bool = False, guess_order: bool = False
) -> int:
    """Read, print, and return 1 if any tag is bad (q >= 2), else 0 (q=1 included)."""
    tables = asyncio.run(_read(devices, raw=raw, guess_order=guess_order))
    for table in tables:
        print("\n".join(table.lines), end="\n\n", file=out)
    total, bad = sum(t.tags for t in tables), sum(t.bad for t in tables)
    uncertain = sum(t.uncertain for t in tables)
    doubt = f", {uncertain} of them uncertain (q=1)" if uncertain else ""
    print(f"{total - bad} of {total} tags readable{doubt}, {bad} bad", file=out)
    return 1 if bad else 0


async def _read(devices: Sequence[Device], *, raw: bool, guess_order: bool) -> list[DeviceTable]:
    """Each protocol's devices at once; the tables in the config's order of devices."""
    reads: list[tuple[Sequence[Device], Coroutine[Any, Any, list[DeviceTable]]]] = []
    modbus = [d for d in devices if isinstance(d, ModbusDevice)]
    opcua = [d for d in devices if isinstance(d, OpcuaDevice)]
    # Imported only for a config that has such devices: pymodbus and asyncua are slow to load.
    if modbus:
        from edge_agent.commission import modbus as modbus_tables  # noqa: PLC0415

        reads.append((modbus, modbus_tables.read(modbus, raw=raw, guess_order=guess_order)))
    if opcua:
        from edge_agent.commission import opcua as opcua_tables  # noqa: PLC0415

        reads.append((opcua, opcua_tables.read(opcua)))
    results = await asyncio.gather(*(coroutine for _, coroutine in reads))
    by_name = {
        device.name: table
        for (kind, _), tables in zip(reads, results, strict=True)
        for device, table in zip(kind, tables, strict=True)
    }
    return [by_name[device.name] for device in devices]
