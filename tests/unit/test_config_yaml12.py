"""Plain YAML values are read as YAML 1.2 reads them, the way editors and the schema see them."""

from __future__ import annotations

import math

import pytest

from edge_agent.config.yaml12 import read_plain, refusal

# YAML 1.2.2, 10.3.2 (the core schema) and its example 10.9, then what YAML 1.1 read otherwise.
CORE_SCHEMA = [
    ("null", None),
    ("Null", None),
    ("NULL", None),
    ("~", None),
    ("", None),
    ("true", True),
    ("True", True),
    ("TRUE", True),
    ("false", False),
    ("FALSE", False),
    ("0", 0),
    ("0o7", 7),
    ("0x3A", 58),
    ("-19", -19),
    ("0.", 0.0),
    ("-0.0", -0.0),
    (".5", 0.5),
    ("+12e03", 12000.0),
    ("-2E+05", -200000.0),
    (".inf", math.inf),
    ("-.Inf", -math.inf),
    ("+.INF", math.inf),
    ("40001", 40001),
]
TEXT_IN_YAML_12 = ["yes", "No", "on", "OFF", "y", "n", "1:30", "1_000", "0b11", "2024-05-01", "="]


@pytest.mark.parametrize(("text", "value"), CORE_SCHEMA)
def test_core_schema_values_are_read_as_the_spec_gives_them(text: str, value: object) -> None:
    """The spec's own examples: the type as well as the value."""
    read = read_plain(text)
    assert (type(read), read) == (type(value), value)


def test_nan_is_read_in_every_spelling_the_spec_allows() -> None:
    """NaN equals nothing, so it is checked apart."""
    assert all(math.isnan(read_plain(text)) for text in (".nan", ".NaN", ".NAN"))  # type: ignore[arg-type]


@pytest.mark.parametrize("text", TEXT_IN_YAML_12)
def test_what_yaml_11_read_as_a_boolean_number_or_date_is_text(text: str) -> None:
    """yes is not true, 1:30 is not 90, 1_000 is not 1000: they stay as written."""
    assert read_plain(text) == text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "010",
            "010 has a leading zero, so YAML 1.1 reads it as 8 (octal) and YAML 1.2 (editors) "
            "as 10: write 10 if it is a number, or '010' in quotes if it is text",
        ),
        (
            "09",
            "09 has a leading zero, so YAML 1.1 reads it as the text '09' and YAML 1.2 "
            "(editors) as 9: write 9 if it is a number, or '09' in quotes if it is text",
        ),
        (
            "00001",
            "00001 has a leading zero, which YAML drops (it reads 1): write 1 if it is a "
            "number, or '00001' in quotes if it is text",
        ),
    ],
)
def test_a_number_with_a_leading_zero_is_refused_saying_both_readings(
    text: str, message: str
) -> None:
    """The one form YAML 1.1 and 1.2 read as different numbers, or as a number without its zeros."""
    assert refusal(text) == message


@pytest.mark.parametrize("text", ["0", "-0", "0.5", "007.5", "0x10", "0o10", "10", "40001", "yes"])
def test_other_plain_values_are_not_refused(text: str) -> None:
    """A float's leading zeros mean the same in both versions; 0x and 0o say their base."""
    assert refusal(text) is None
