"""Durations, sizes and the GB 32100 enterprise code: the text a technician writes."""

from __future__ import annotations

import pytest
from pydantic import TypeAdapter, ValidationError

from edge_agent.config.types import (
    ByteSize,
    Duration,
    EnterpriseCode,
    format_duration,
    format_size,
    parse_duration,
    parse_size,
    uscc_check_character,
    validate_uscc,
)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("1s", 1.0),
        ("1.5s", 1.5),
        ("5m", 300.0),
        ("2h", 7200.0),
        ("1d", 86400.0),
        (" 2 s ", 2.0),
    ],
)
def test_a_duration_is_a_number_and_a_unit(text: str, seconds: float) -> None:
    """Each unit converts to seconds."""
    assert seconds == parse_duration(text)


@pytest.mark.parametrize("text", ["5", "5 sec", "1min", "-1s", "1S", "s", ""])
def test_a_duration_without_a_known_unit_is_refused(text: str) -> None:
    """The message shows how a duration is written."""
    with pytest.raises(ValueError, match=r"e\.g\. 500ms, 1s, 5m, 2h, 1d"):
        parse_duration(text)


def test_a_bare_number_is_not_a_duration() -> None:
    """YAML reads `poll: 5` as a number: the message says which unit to add."""
    with pytest.raises(ValueError, match=r"5 has no unit: write e\.g\. 5s or 5ms"):
        parse_duration(5)


def test_a_duration_must_be_positive() -> None:
    """Zero is a valid text but not a valid interval."""
    with pytest.raises(ValidationError):
        TypeAdapter(Duration).validate_python("0s")


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("4096B", 4096),
        ("1.5KiB", 1536),
        ("512MiB", 512 * 1024**2),
        ("2GiB", 2 * 1024**3),
        ("1TiB", 1024**4),
        ("100MB", 100_000_000),
        ("1kB", 1000),
    ],
)
def test_a_size_is_a_number_and_a_unit(text: str, size: int) -> None:
    """Binary (KiB) and decimal (kB) units both convert to bytes."""
    assert size == parse_size(text)


@pytest.mark.parametrize("text", ["2G", "10 mb", "1KB", "512", "2 GiBs"])
def test_a_size_without_a_known_unit_is_refused(text: str) -> None:
    """Units are case-sensitive: mb is not MB."""
    with pytest.raises(ValueError, match="is not a size"):
        parse_size(text)


def test_a_bare_number_is_not_a_size() -> None:
    """`max_size: 4096` is refused like `poll: 5`: no unit is assumed, bytes no more than GiB."""
    with pytest.raises(
        ValueError, match=r"4096 has no unit: write e\.g\. 4096B, 4096MiB or 4096GiB"
    ):
        parse_size(4096)


def test_a_size_must_be_positive() -> None:
    """Zero bytes is refused after conversion."""
    with pytest.raises(ValidationError):
        TypeAdapter(ByteSize).validate_python("0B")


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.25, "250ms"), (0.5, "500ms"), (1.0, "1s"), (30.0, "30s"), (60.0, "1m"), (90.0, "90s")],
)
def test_format_duration_writes_the_largest_exact_unit(seconds: float, text: str) -> None:
    """Formatted durations read back to the same number of seconds."""
    assert text == format_duration(seconds)
    assert seconds == parse_duration(text)


@pytest.mark.parametrize(("size", "text"), [(65536, "64KiB"), (262144, "256KiB"), (1000, "1000B")])
def test_format_size_writes_the_largest_exact_binary_unit(size: int, text: str) -> None:
    """Formatted sizes read back to the same number of bytes."""
    assert text == format_size(size)
    assert size == parse_size(text)


# Codes in the format of real business licences; the check character was not chosen here.
VALID_CODES = [
    "91370200MA3C00000K",
    "91350100M000100Y43",
    "914403001922038216",
    "9144030071526726XG",
]


@pytest.mark.parametrize("code", VALID_CODES)
def test_a_real_enterprise_code_passes_the_gb32100_check(code: str) -> None:
    """The computed check character is the code's 18th character."""
    assert code[17] == uscc_check_character(code[:17])
    assert code == TypeAdapter(EnterpriseCode).validate_python(code)


def test_a_wrong_check_character_names_the_right_one() -> None:
    """The technician learns which character the code should end in."""
    with pytest.raises(ValueError, match=r"its last character should be 'K'"):
        validate_uscc("91370200MA3C00000X")


def test_a_code_of_the_wrong_length_is_refused() -> None:
    """18 characters, no more, no fewer."""
    with pytest.raises(ValueError, match="has 17 characters; a 统一社会信用代码 has 18"):
        validate_uscc("91370200MA3C00000")


@pytest.mark.parametrize(
    ("code", "bad"),
    [("91370200MA3C0000OK", "'O'"), ("91370200ma3c00000k", "'a'"), ("9137020OIA3C00000K", "'I'")],
)
def test_letters_outside_the_gb32100_alphabet_are_named(code: str, bad: str) -> None:
    """I, O, S, V, Z and lower case never occur in a code."""
    with pytest.raises(ValueError, match=bad):
        validate_uscc(code)
