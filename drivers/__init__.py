"""Protocol drivers: each reads one kind of device into Samples.

`build_driver` is the one place that maps a device config to its driver.
"""

from __future__ import annotations

from edge_agent.drivers.base import Driver
from edge_agent.drivers.modbus.config import ModbusDevice
from edge_agent.drivers.opcua.config import OpcuaDevice

__all__ = ["Driver", "build_driver"]


def build_driver(device: ModbusDevice | OpcuaDevice, *, report_every: float) -> Driver:
    """The driver for `device`, chosen by its `driver` field; no I/O happens yet.

    `report_every` is the shortest report interval of the device's tags: an OPC UA
    subscription's keep-alive is sized to it (drivers/opcua/README.md, Time).
    """
    if device.driver == "modbus":
        # Imported here so loading and checking a config never imports pymodbus.
        from edge_agent.drivers.modbus.driver import ModbusDriver  # noqa: PLC0415

        return ModbusDriver(device)
    if device.driver == "opcua":
        # Likewise asyncua: imported only when an OPC UA device is read.
        from edge_agent.drivers.opcua.driver import OpcuaDriver  # noqa: PLC0415

        return OpcuaDriver(device, report_every=report_every)
    raise ValueError(f"device {device.name!r}: no driver named {device.driver!r}")
