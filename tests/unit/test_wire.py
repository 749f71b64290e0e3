"""The number rules of uplink-v1 (edge_agent/wire.py): what every faster encoder must pass too."""

from __future__ import annotations

import json
import math
import struct
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.wire import PLAIN, NotCarried, NumberFormat, decimals_of, shortest_float32

FLOAT32 = NumberFormat("float32")
UINT64 = NumberFormat("uint64")
INT64 = NumberFormat("int64")


def as_float32(value: float) -> float:
    return float(struct.unpack("<f", struct.pack("<f", value))[0])


def wire_text(number_format: NumberFormat, value: float | int) -> str:
    return json.dumps(number_format.carry(value))


finite_float32 = st.floats(width=32, allow_nan=False, allow_infinity=False)


@pytest.mark.parametrize(
    ("widened", "text"),
    [(21.299999237060547, "21.3"), (0.10000000149011612, "0.1"), (25.0, "25.0"),
     (-0.0, "-0.0"), (1.401298464324817e-45, "1e-45"), (3.4028234663852886e38, "3.4028235e+38"),
     (123456792.0, "123456790.0"), (0.3333333432674408, "0.33333334")],
)  # fmt: skip
def test_a_float32_is_written_as_the_shortest_decimal_that_reads_back(
    widened: float, text: str
) -> None:
    assert wire_text(FLOAT32, widened) == text


@settings(max_examples=2000, derandomize=True, deadline=None)
@given(finite_float32)
def test_every_float32_reads_back_from_its_wire_text_and_no_shorter_text_would(
    value: float,
) -> None:
    text = wire_text(FLOAT32, value)
    assert as_float32(float(text)) == value or (value == 0 and float(text) == 0)
    digits = len(Decimal(text).normalize().as_tuple().digits)
    if digits > 1:
        assert as_float32(float(f"{value:.{digits - 1}g}")) != value


@pytest.mark.parametrize("value", [2**64 - 1, 2**63, 0, 42, -(2**63)])
def test_every_value_of_a_64_bit_tag_is_a_decimal_string(value: int) -> None:
    number_format = UINT64 if value >= 0 else INT64
    assert number_format.carry(value) == str(value)
    assert wire_text(number_format, value) == f'"{value}"'


def test_a_64_bit_tags_limits_are_decimal_strings_and_others_stay_numbers() -> None:
    assert UINT64.limit(5e18) == "5000000000000000000"
    assert UINT64.limit(2.5) == "2.5"
    assert UINT64.limit("7") == "7"
    assert FLOAT32.limit(25.0) == 25.0


@pytest.mark.parametrize(
    ("decimals", "value", "text"),
    [(1, 7 * 0.1, "0.7"), (2, 0.1 + 0.2, "0.3"), (1, -0.04, "0.0"), (3, 1234.56789, "1234.568"),
     (1, 7, "7"), (0, 2**64 - 1, "18446744073709551615")],
)  # fmt: skip
def test_a_scaled_value_carries_the_decimals_of_its_scaling(
    decimals: int, value: float, text: str
) -> None:
    assert wire_text(NumberFormat("int16", decimals), value) == text


@pytest.mark.parametrize(
    ("step", "decimals"),
    [(0.1, 1), (0.25, 2), (5.0, 0), (0.001, 3), (100 / 27648, 4), (100 / 16000, 5), (0.0, 0)],
)
def test_the_decimals_a_scaling_implies(step: float, decimals: int) -> None:
    assert decimals_of(step) == decimals


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("number_format", [PLAIN, FLOAT32, UINT64, NumberFormat("int16", 1)])
def test_nan_and_infinities_are_not_carried(number_format: NumberFormat, bad: float) -> None:
    with pytest.raises(NotCarried):
        number_format.carry(bad)


def test_a_float64_beyond_float32_is_not_carried_as_a_float32() -> None:
    with pytest.raises(NotCarried):
        shortest_float32(1e39)


def test_booleans_strings_and_none_pass_unchanged() -> None:
    for value in (True, "Running", None):
        assert UINT64.carry(value) == value
        assert FLOAT32.carry(value) == value


@settings(max_examples=500, derandomize=True, deadline=None)
@given(st.lists(finite_float32.filter(lambda x: abs(x) < 1e30), min_size=1, max_size=50))
def test_a_float32_average_lies_within_min_and_max_as_written(values: list[float]) -> None:
    wired = [FLOAT32.number(v) for v in values]
    low, high = min(wired), max(wired)
    avg = FLOAT32.average(sum(wired), len(wired), low, high)
    assert float(json.dumps(low)) <= float(json.dumps(avg)) <= float(json.dumps(high))


@settings(max_examples=500, derandomize=True, deadline=None)
@given(st.lists(st.integers(0, 2**64 - 1), min_size=1, max_size=50))
def test_a_64_bit_average_is_exact_decimal_text_within_min_and_max(values: list[int]) -> None:
    low, high = UINT64.wire_number(min(values)), UINT64.wire_number(max(values))
    avg = UINT64.average(sum(values), len(values), min(values), max(values))
    assert isinstance(avg, str)
    assert Decimal(low) <= Decimal(avg) <= Decimal(high)
    assert abs(Decimal(avg) - Decimal(sum(values)) / len(values)) <= Decimal("0.0005")


def test_a_rounded_average_is_clamped_to_the_window() -> None:
    one_decimal = NumberFormat("int16", 1)
    assert one_decimal.average(0.75 + 0.75, 2, 0.7, 0.7) == 0.7
