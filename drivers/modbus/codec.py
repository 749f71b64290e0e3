"""Addresses, data types and byte orders: registers <-> values, both ways.

The driver decodes with it and the simulator encodes with it, so a byte-order
mistake cannot hide in a mirror image of itself: the tests pin both directions
against hand-written register values.

Addresses a technician writes:
- `hr:0`, `ir:10`, `co:5`, `di:7`: area and 0-based offset;
- `hr:10.3`: bit 3 (0 = least significant) of holding register 10, a `bool`;
- `40001`, `30010`, `00006`, `10008` (or six digits, `400001`): Modicon
  numbers, first digit the area (4 hr, 3 ir, 0 co, 1 di), the rest the
  register number; `base` says which number is offset 0 (1 by default, the
  Modicon convention: 40001 -> hr:0; some manuals count from 0: 40000 -> hr:0).
  `40001.3` is bit 3 of that register.
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

# type -> (struct format, registers); a string's width is its `length`.
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
    "string": ("s", 0),
}

_WORD = "a PLC register holds 16 bits"
_FLOAT = (
    "a float in Modbus is usually float32, two registers; float64, four, only where the "
    "manual says double, LREAL or 64-bit"
)
TYPE_NAMES: dict[str, tuple[str, str]] = {
    name: (data_type, why)
    for names, data_type, why in [
        (("int", "integer", "short"), "int16", f"{_WORD}: int16, or uint16 if never negative"),
        (("uint", "unsigned", "ushort", "word"), "uint16", f"{_WORD}: uint16, or int16 if signed"),
        (("dint", "long"), "int32", "32 bits, two registers"),
        (("udint", "dword", "ulong"), "uint32", "32 bits unsigned, two registers"),
        (("lint", "longlong"), "int64", "64 bits, four registers"),
        (("ulint", "lword", "qword"), "uint64", "64 bits unsigned, four registers"),
        (("float", "real", "single"), "float32", _FLOAT),
        (("double", "lreal"), "float64", "a double is 64 bits, four registers"),
        (("boolean", "bit", "coil"), "bool", "one bit: a coil, an input, or hr:N.B"),
        (("str", "text", "char", "chars"), "string", "with length, 2 characters a register"),
    ]
    for name in names
}
"""What PLC manuals (IEC 61131-3 INT, DINT, REAL, WORD...) and C call the data types
here, lower case -> (the type, why): the config loader's "did you mean" for `type`."""

BYTE_ORDERS = ("ABCD", "CDAB", "BADC", "DCBA")

MAX_OFFSET = 65535
_MODICON_AREAS: dict[str, Area] = {"0": "co", "1": "di", "3": "ir", "4": "hr"}
_AREA_DIGIT = {area: digit for digit, area in _MODICON_AREAS.items()}
_AREA_DIGITS = "".join(_MODICON_AREAS)
_SHORT, _LONG = 4, 5
"""How many digits a Modicon number has after its area digit: 40001 or 400001."""

# [0-9], not \d: \d matches any Unicode digit, which a JSON Schema pattern does not.
_AREA_FORM = r"(hr|ir|co|di):([0-9]{1,5})"
_MODICON_FORM = rf"([{_AREA_DIGITS}])([0-9]{{{_SHORT},{_LONG}}})"
_BIT_FORM = r"(?:\.([0-9]{1,2}))?"
_ADDRESS = re.compile(f"^{_AREA_FORM}{_BIT_FORM}$")
_MODICON = re.compile(f"^{_MODICON_FORM}{_BIT_FORM}$")

ADDRESS_PATTERN = rf"^\s*(?:{_AREA_FORM}|{_MODICON_FORM}){_BIT_FORM}\s*$"
"""Every text `parse_address` reads, for the JSON Schema; it also passes offsets past
MAX_OFFSET, bits past 15 and 40000 with base 1, which `parse_address` refuses."""

MODICON_NUMBERS: tuple[tuple[int, int], ...] = tuple(
    (int(area) * 10**digits, int(area) * 10**digits + min(10**digits - 1, MAX_OFFSET + 1))
    for area in _MODICON_AREAS
    if area != "0"  # a whole number has no leading 0: a coil number must be quoted
    for digits in (_SHORT, _LONG)
)
"""The whole numbers that can be Modicon numbers, as (lowest, highest): what an unquoted
40001 may be. The highest is the last register with base 1."""


@dataclass(frozen=True, slots=True)
class Address:
    area: Area
    offset: int
    bit: int | None = None
    """For a bool in a register: which bit, 0 the least significant."""

    def __str__(self) -> str:
        bit = "" if self.bit is None else f".{self.bit}"
        return f"{self.area}:{self.offset}{bit}"


class AddressOutOfRange(ValueError):
    """An address in a valid form, past MAX_OFFSET; `address` is what it says."""

    def __init__(self, text: str, address: Address) -> None:
        super().__init__(f"{text!r}: offset {address.offset} is beyond {MAX_OFFSET}")
        self.address = address


def modicon_number(area: Area, offset: int, base: int = 1) -> str:
    """The six-digit Modicon number of an offset: hr:0 is 400001 with base 1."""
    return f"{_AREA_DIGIT[area]}{offset + base:05d}"


def parse_address(text: str, base: int = 1) -> Address:
    """`hr:0`, `hr:10.3` or a Modicon number (`40001`, with `base`) -> Address.

    Raises ValueError for a text in no address form, AddressOutOfRange for one past
    MAX_OFFSET (whose fix depends on the tag's type: drivers/modbus/config.py).
    """
    text = str(text).strip()
    match = _ADDRESS.match(text)
    if match is not None:
        area: Area = match.group(1)  # type: ignore[assignment]  # the regex admits only these four
        offset = int(match.group(2))
    else:
        match = _MODICON.match(text)
        if match is None:
            raise ValueError(
                f"{text!r} is not an address: write area:offset with area hr, ir, co or di "
                "and a 0-based offset (hr:0, ir:10, co:5, di:7, hr:10.3 for bit 3), "
                "or a Modicon number such as 40001"
            )
        area = _MODICON_AREAS[match.group(1)]
        offset = int(match.group(2)) - base
        if offset < 0:
            raise ValueError(
                f"{text!r}: with address_base {base} the first {AREAS[area]} is "
                f"{match.group(1)}{base:0{len(match.group(2))}d}"
            )
    bit = None if match.group(3) is None else int(match.group(3))
    if bit is not None:
        if area in BIT_AREAS:
            raise ValueError(f"{text!r}: a {AREAS[area]} is a single bit already; drop .{bit}")
        if bit > 15:
            raise ValueError(f"{text!r}: a register has bits 0 to 15, not {bit}")
    if offset > MAX_OFFSET:
        raise AddressOutOfRange(text, Address(area, offset, bit))
    return Address(area, offset, bit)


def register_count(data_type: str, length: int | None = None) -> int:
    """Registers a value of this type occupies; a string's `length` is its registers."""
    if data_type == "string":
        return length or 1
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


def _string_bytes(data: bytes, byte_order: str) -> bytes:
    """A string keeps its register order; BADC and DCBA put the low byte of each first."""
    if byte_order in ("BADC", "DCBA"):
        return b"".join(data[i : i + 2][::-1] for i in range(0, len(data), 2))
    return data


def decode(
    registers: list[int], data_type: str, byte_order: str = "ABCD", bit: int | None = None
) -> float | int | bool | str:
    """Registers (16-bit each, as read) -> value.

    A bool register is true when non-zero, or when bit `bit` is set. A string
    is decoded as Latin-1 (every byte a character), trailing NULs and spaces
    stripped.
    """
    count = len(registers) if data_type == "string" else DATA_TYPES[data_type][1]
    if len(registers) != count or count == 0:
        raise ValueError(f"{data_type} needs {count} registers, got {len(registers)}")
    if data_type == "bool":
        return registers[0] != 0 if bit is None else bool((registers[0] >> bit) & 1)
    raw = b"".join(r.to_bytes(2, "big") for r in registers)
    if data_type == "string":
        return _string_bytes(raw, byte_order).decode("latin-1").rstrip("\x00 ")
    value: float | int = struct.unpack(DATA_TYPES[data_type][0], _reorder(raw, byte_order))[0]
    return value


def encode(
    value: float | int | bool | str,
    data_type: str,
    byte_order: str = "ABCD",
    length: int | None = None,
) -> list[int]:
    """Value -> registers as a device with this byte order holds them."""
    fmt, _count = DATA_TYPES[data_type]
    if data_type == "bool":
        return [1 if value else 0]
    if data_type == "string":
        size = 2 * register_count("string", length)
        data = _string_bytes(str(value).encode("latin-1")[:size].ljust(size, b"\x00"), byte_order)
    else:
        if isinstance(value, str):
            raise TypeError(f"a {data_type} cannot hold the text {value!r}")
        number: float | int = value if fmt[-1] in "fd" else int(value)
        data = _reorder(struct.pack(fmt, number), byte_order)
    return [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]
