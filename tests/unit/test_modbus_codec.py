"""Registers <-> values for every type and byte order, against hand-written registers."""

from __future__ import annotations

import struct

import pytest

from edge_agent.drivers.modbus.codec import (
    Address,
    AddressOutOfRange,
    decode,
    encode,
    modicon_number,
    parse_address,
)

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


@pytest.mark.parametrize(
    "text", ["hr0", "xx:1", "hr:-1", "hr:65536", "20001", "4001", "4000001", "hr:1.x"]
)
def test_parse_address_refuses_other_forms(text: str) -> None:
    """Unknown areas, short or long Modicon numbers and out-of-range offsets are refused."""
    with pytest.raises(ValueError, match=r"not an address|beyond 65535"):
        parse_address(text)


@pytest.mark.parametrize(
    ("text", "base", "address"),
    [
        ("40001", 1, Address("hr", 0)),
        ("40010", 1, Address("hr", 9)),
        ("30001", 1, Address("ir", 0)),
        ("00001", 1, Address("co", 0)),
        ("10008", 1, Address("di", 7)),
        ("400001", 1, Address("hr", 0)),
        ("465536", 1, Address("hr", 65535)),
        ("40000", 0, Address("hr", 0)),
        ("40001", 0, Address("hr", 1)),
        ("40001.3", 1, Address("hr", 0, 3)),
    ],
)
def test_modicon_numbers_count_from_the_stated_base(text: str, base: int, address: Address) -> None:
    """40001 is hr:0 under the Modicon convention (base 1) and hr:1 under base 0."""
    assert parse_address(text, base=base) == address


def test_an_offset_past_65535_keeps_what_it_reads_for_the_fix() -> None:
    """The fix depends on the tag's type (a float32 ends one register earlier): the
    device's check says it, from the address read here."""
    with pytest.raises(AddressOutOfRange) as caught:
        parse_address("hr:70000.3")
    assert caught.value.address == Address("hr", 70000, 3)
    assert (modicon_number("hr", 65534), modicon_number("co", 0, base=0)) == ("465535", "000000")


def test_a_modicon_number_below_the_base_says_where_the_area_starts() -> None:
    with pytest.raises(ValueError, match="the first holding register is 40001"):
        parse_address("40000", base=1)


@pytest.mark.parametrize(
    ("text", "message"),
    [("co:1.0", "single bit already"), ("hr:1.16", "bits 0 to 15")],
)
def test_a_bit_address_must_name_a_register_bit(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_address(text)


@pytest.mark.parametrize(("bit", "expected"), [(0, True), (1, False), (15, True), (14, False)])
def test_a_bool_can_be_one_bit_of_a_register(bit: int, expected: bool) -> None:
    assert decode([0x8001], "bool", bit=bit) is expected


@pytest.mark.parametrize(
    ("order", "registers"),
    [
        ("ABCD", [0x5441, 0x4E4B, 0x2D31, 0x0000]),  # "TANK-1", NUL padded
        ("BADC", [0x4154, 0x4B4E, 0x312D, 0x0000]),
    ],
)
def test_a_string_reads_its_registers_and_strips_padding(order: str, registers: list[int]) -> None:
    assert decode(registers, "string", order) == "TANK-1"
    assert encode("TANK-1", "string", order, length=4) == registers


def test_trailing_spaces_of_a_string_are_stripped() -> None:
    assert decode([0x4F4B, 0x2020], "string") == "OK"
