"""The Modbus driver is read-only by construction: its source names no other request."""

from __future__ import annotations

import ast
from pathlib import Path

import drivers.modbus.driver

READS = {"read_coils", "read_discrete_inputs", "read_holding_registers", "read_input_registers"}


def test_the_driver_module_calls_only_the_four_reads() -> None:
    """No write, mask-write, read/write or diagnostic method is even named in driver.py."""
    source = Path(drivers.modbus.driver.__file__).read_text(encoding="utf-8")
    names = {node.attr for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Attribute)}
    requests = {n for n in names if n.startswith(("read_", "write_", "readwrite_", "mask_"))}
    assert requests == READS
    assert "execute" not in names
    assert "diag_" not in source
