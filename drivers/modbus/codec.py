"""Addresses, data types and byte orders: registers <-> values, both ways.

The driver decodes with it and the simulator encodes with it, so a byte-order
mistake cannot hide in a mirror image of itself: the tests pin both directions
against hand-written register values.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from typing import Literal

Area = Literal["hr", "ir", "co", "di"]

AREAS: dict[str, str] = {
    "hr": "holding register",
    "ir": "input register",
    "co": "coil",
    "di": "discrete input",
}
BIT_AREAS = frozenset({"co", "di"})

# type -> (struct format, registers)
DATA_TYPES: dict[str, tuple[str, int]] = {
    "bool": ("?", 1),
    "int16": (">h", 1),
    "uint16": (">H", 1),
    "int32": (">i", 2),
    "uint32": (">I", 2),
    "int64": (">q", 4),
    "uint64": (">Q", 4),
    "float32": (">f", 2),
    "float64": (">d", 4),
}

BYTE_ORDERS = ("ABCD", "CDAB", "BADC", "DCBA")

_ADDRESS = re.compile(r"^(hr|ir|co|di):(\d{1,5})$")


@dataclass(frozen=True, slots=True)
class Address:
    area: Area
    offset: int

    def __str__(self) -> str:
        return f"{self.area}:{self.offset}"


def parse_address(text: str) -> Address:
    match = _ADDRESS.match(text)
    if match is None:
        raise ValueError(
            f"{text!r} is not an address: write area:offset with area hr, ir, co or di "
            "and a 0-based offset, e.g. hr:0 or ir:10"
        )
    offset = int(match.group(2))
    if offset > 65535:
        raise ValueError(f"{text!r}: offset {offset} is beyond 65535")
    area: Area = match.group(1)  # type: ignore[assignment]  # the regex admits only these four
    return Address(area, offset)


def register_count(data_type: str) -> int:
    return DATA_TYPES[data_type][1]


def _reorder(data: bytes, byte_order: str) -> bytes:
    """Register bytes -> big-endian order, or back: the reordering is its own inverse."""
    if byte_order == "ABCD":
        return data
    if byte_order == "DCBA":
        return data[::-1]
    words = [data[i : i + 2] for i in range(0, len(data), 2)]
    if byte_order == "BADC":
        return b"".join(w[::-1] for w in words)
    if byte_order == "CDAB":
        return b"".join(reversed(words))
    raise ValueError(f"unknown byte order {byte_order!r}")


def decode(registers: list[int], data_type: str, byte_order: str = "ABCD") -> float | int | bool:
    """Registers (16-bit each, as read) -> value. A bool register is true when non-zero."""
    fmt, count = DATA_TYPES[data_type]
    if len(registers) != count:
        raise ValueError(f"{data_type} needs {count} registers, got {len(registers)}")
    if data_type == "bool":
        return registers[0] != 0
    raw = b"".join(r.to_bytes(2, "big") for r in registers)
    value: float | int = struct.unpack(fmt, _reorder(raw, byte_order))[0]
    return value


def encode(value: float | int | bool, data_type: str, byte_order: str = "ABCD") -> list[int]:
    """Value -> registers as a device with this byte order holds them."""
    fmt, _count = DATA_TYPES[data_type]
    if data_type == "bool":
        return [1 if value else 0]
    if fmt[-1] not in "fd":
        value = int(value)
    data = _reorder(struct.pack(fmt, value), byte_order)
    return [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]
