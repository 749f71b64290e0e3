"""Registers <-> values for every type and byte order, against hand-written registers."""

from __future__ import annotations

import struct

import pytest

from drivers.modbus.codec import Address, decode, encode, parse_address

F32_PI = struct.unpack(">f", bytes.fromhex("40490FDB"))[0]
F64_PI = struct.unpack(">d", bytes.fromhex("400921FB54442D18"))[0]

# (type, byte order, value, registers as the device holds them)
CASES = [
    ("bool", "ABCD", True, [0x0001]),
    ("bool", "ABCD", False, [0x0000]),
    ("int16", "ABCD", -2, [0xFFFE]),
    ("int16", "ABCD", 0x0102, [0x0102]),
    ("uint16", "ABCD", 0xFFFF, [0xFFFF]),
    ("uint16", "ABCD", 0x0A0B, [0x0A0B]),
    # 32 bits: A B C D = 01 02 03 04
    ("int32", "ABCD", 0x01020304, [0x0102, 0x0304]),
    ("int32", "CDAB", 0x01020304, [0x0304, 0x0102]),
    ("int32", "BADC", 0x01020304, [0x0201, 0x0403]),
    ("int32", "DCBA", 0x01020304, [0x0403, 0x0201]),
    ("int32", "ABCD", -2, [0xFFFF, 0xFFFE]),
    ("int32", "CDAB", -2, [0xFFFE, 0xFFFF]),
    ("uint32", "ABCD", 0xA1B2C3D4, [0xA1B2, 0xC3D4]),
    ("uint32", "CDAB", 0xA1B2C3D4, [0xC3D4, 0xA1B2]),
    ("uint32", "BADC", 0xA1B2C3D4, [0xB2A1, 0xD4C3]),
    ("uint32", "DCBA", 0xA1B2C3D4, [0xD4C3, 0xB2A1]),
    ("float32", "ABCD", F32_PI, [0x4049, 0x0FDB]),
    ("float32", "CDAB", F32_PI, [0x0FDB, 0x4049]),
    ("float32", "BADC", F32_PI, [0x4940, 0xDB0F]),
    ("float32", "DCBA", F32_PI, [0xDB0F, 0x4940]),
    # 64 bits: A..H = 01 02 03 04 05 06 07 08; CDAB reverses the word order.
    ("int64", "ABCD", 0x0102030405060708, [0x0102, 0x0304, 0x0506, 0x0708]),
    ("int64", "CDAB", 0x0102030405060708, [0x0708, 0x0506, 0x0304, 0x0102]),
    ("int64", "BADC", 0x0102030405060708, [0x0201, 0x0403, 0x0605, 0x0807]),
    ("int64", "DCBA", 0x0102030405060708, [0x0807, 0x0605, 0x0403, 0x0201]),
    ("int64", "ABCD", -2, [0xFFFF, 0xFFFF, 0xFFFF, 0xFFFE]),
    ("uint64", "ABCD", 0xF102030405060708, [0xF102, 0x0304, 0x0506, 0x0708]),
    ("uint64", "CDAB", 0xF102030405060708, [0x0708, 0x0506, 0x0304, 0xF102]),
    ("uint64", "BADC", 0xF102030405060708, [0x02F1, 0x0403, 0x0605, 0x0807]),
    ("uint64", "DCBA", 0xF102030405060708, [0x0807, 0x0605, 0x0403, 0x02F1]),
    ("float64", "ABCD", F64_PI, [0x4009, 0x21FB, 0x5444, 0x2D18]),
    ("float64", "CDAB", F64_PI, [0x2D18, 0x5444, 0x21FB, 0x4009]),
    ("float64", "BADC", F64_PI, [0x0940, 0xFB21, 0x4454, 0x182D]),
    ("float64", "DCBA", F64_PI, [0x182D, 0x4454, 0xFB21, 0x0940]),
]


@pytest.mark.parametrize(("data_type", "order", "value", "registers"), CASES)
def test_decode_reads_hand_written_registers(
    data_type: str, order: str, value: float, registers: list[int]
) -> None:
    """decode() turns the registers a device holds into the value."""
    assert decode(registers, data_type, order) == value


@pytest.mark.parametrize(("data_type", "order", "value", "registers"), CASES)
def test_encode_writes_hand_written_registers(
    data_type: str, order: str, value: float, registers: list[int]
) -> None:
    """encode() gives the registers a device with that byte order holds."""
    assert encode(value, data_type, order) == registers


def test_a_bool_register_is_true_when_non_zero() -> None:
    """Any non-zero register reads as true."""
    assert decode([0x8000], "bool") is True


def test_decode_refuses_the_wrong_number_of_registers() -> None:
    """A short response is an error, not a value made of what arrived."""
    with pytest.raises(ValueError, match="float32 needs 2 registers, got 1"):
        decode([0x4049], "float32")


@pytest.mark.parametrize(
    ("text", "address"),
    [("hr:0", Address("hr", 0)), ("ir:10", Address("ir", 10)), ("co:65535", Address("co", 65535))],
)
def test_parse_address_reads_area_and_offset(text: str, address: Address) -> None:
    """Addresses are area:offset, 0-based."""
    assert parse_address(text) == address
    assert str(address) == text


@pytest.mark.parametrize("text", ["40001", "hr0", "xx:1", "hr:-1", "hr:65536"])
def test_parse_address_refuses_other_forms(text: str) -> None:
    """Modicon numbers and out-of-range offsets are refused."""
    with pytest.raises(ValueError, match=r"not an address|beyond 65535"):
        parse_address(text)
