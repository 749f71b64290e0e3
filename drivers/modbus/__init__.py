"""Modbus TCP, RTU and RTU over TCP: config (`config`), registers <-> values (`codec`,
`values`), request grouping (`plan`), shared connections (`link`) and the driver
(`driver`). See README.md in this folder.

Nothing is imported here, so reading a config does not import pymodbus.
"""
