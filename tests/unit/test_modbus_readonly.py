"""The Modbus driver is read-only by construction: its source names no other request."""

from __future__ import annotations

import ast
from pathlib import Path

import edge_agent.drivers.modbus.driver
import edge_agent.drivers.modbus.link

READS = {"read_coils", "read_discrete_inputs", "read_holding_registers", "read_input_registers"}


def attributes(module_file: str | None) -> tuple[set[str], str]:
    assert module_file is not None
    source = Path(module_file).read_text(encoding="utf-8")
    names = {node.attr for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Attribute)}
    return names, source


def test_the_link_module_calls_only_the_four_reads() -> None:
    """No write, mask-write, read/write or diagnostic method is even named in link.py."""
    names, source = attributes(edge_agent.drivers.modbus.link.__file__)
    requests = {n for n in names if n.startswith(("read_", "write_", "readwrite_", "mask_"))}
    assert requests == READS
    assert "execute" not in names
    assert "diag_" not in source


def test_the_driver_module_reaches_devices_only_through_the_link() -> None:
    """driver.py names no pymodbus request method at all."""
    names, source = attributes(edge_agent.drivers.modbus.driver.__file__)
    assert not {n for n in names if n.startswith(("read_", "write_", "readwrite_", "mask_"))} - {
        "read_all"
    }
    assert "execute" not in names
    assert "pymodbus.client" not in source
