"""Modbus TCP: config (`config`), registers <-> values (`codec`), request grouping
(`plan`) and the driver (`driver`). See README.md in this folder.

Nothing is imported here, so reading a config does not import pymodbus.
"""
