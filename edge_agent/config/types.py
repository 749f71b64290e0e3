"""Value types a technician writes in YAML: durations, sizes, codes.

Each type validates the text form and hands the rest of the program a plain
number, so nothing downstream parses strings again.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator, Field
from pydantic.config import JsonDict

# [0-9], not \d: \d matches any Unicode digit, which the schema's patterns (ECMA 262) do not.
_DURATION = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|h|d)\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}

_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(B|KiB|MiB|GiB|TiB|kB|MB|GB|TB)\s*$")
_SIZE_UNITS = {
    "B": 1,
    "KiB": 1024,
    "MiB": 1024**2,
    "GiB": 1024**3,
    "TiB": 1024**4,
    "kB": 1000,
    "MB": 1000**2,
    "GB": 1000**3,
    "TB": 1000**4,
}


def parse_duration(text: object) -> object:
    """'500ms', '1s', '5m', '2h', '1d' -> seconds; other input is left for pydantic to refuse."""
    if isinstance(text, str):
        match = _DURATION.match(text)
        if match is None:
            raise ValueError(
                f"{text!r} is not a duration: write a number and a unit, e.g. 500ms, 1s, 5m, 2h, 1d"
            )
        return float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    if isinstance(text, bool):
        raise ValueError("a duration is a number and a unit, e.g. 1s, not a boolean")
    if isinstance(text, int | float):
        raise ValueError(f"{text!r} has no unit: write e.g. {text}s or {text}ms")
    return text


def parse_size(text: object) -> object:
    """'2GiB', '512MiB', '100MB', '4096B' -> bytes."""
    if isinstance(text, str):
        match = _SIZE.match(text)
        if match is None:
            raise ValueError(
                f"{text!r} is not a size: write a number and a unit, e.g. 512MiB, 2GiB, 100MB"
            )
        return int(float(match.group(1)) * _SIZE_UNITS[match.group(2)])
    if isinstance(text, bool):
        raise ValueError("a size is a number and a unit, e.g. 2GiB, not a boolean")
    if isinstance(text, int | float):
        raise ValueError(f"{text!r} has no unit: write e.g. {text}B, {text}MiB or {text}GiB")
    return text


def format_duration(seconds: float) -> str:
    """Seconds -> the text a technician would write: 0.5 -> '500ms', 60 -> '1m'."""
    millis = round(seconds * 1000)
    if millis <= 0 or abs(millis - seconds * 1000) > 1e-6:
        return f"{seconds:g}s"
    for unit in ("d", "h", "m", "s"):
        size = round(_DURATION_UNITS[unit] * 1000)
        if millis % size == 0:
            return f"{millis // size}{unit}"
    return f"{millis}ms"


def format_size(size: int) -> str:
    """Bytes -> the largest binary unit that holds it exactly: 65536 -> '64KiB'."""
    for unit in ("TiB", "GiB", "MiB", "KiB"):
        if size > 0 and size % _SIZE_UNITS[unit] == 0:
            return f"{size // _SIZE_UNITS[unit]}{unit}"
    return f"{size}B"


_NUMERIC_KEYWORDS = ("gt", "ge", "lt", "le", "exclusiveMinimum", "minimum", "exclusiveMaximum")


def _text_schema(pattern: str, fmt: Callable[[float], str]) -> Callable[[JsonDict], None]:
    """Describe a value as the text written in YAML, not as the number it becomes.

    Without this the schema would offer editors a numeric default (30.0) that the
    loader refuses for lacking a unit, and numeric bounds that mean nothing to a string.
    """

    def rewrite(schema: JsonDict) -> None:
        for keyword in _NUMERIC_KEYWORDS:
            schema.pop(keyword, None)
        schema["type"] = "string"
        schema["pattern"] = pattern
        default, maximum = schema.get("default"), schema.pop("maximum", None)
        if isinstance(default, int | float) and not isinstance(default, bool):
            schema["default"] = fmt(default)
        description = schema.get("description")
        if isinstance(maximum, int | float) and isinstance(description, str):
            limit = fmt(maximum)
            schema["description"] = (
                description if limit in description else f"{description} At most {limit}."
            )

    return rewrite


Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    Field(gt=0, json_schema_extra=_text_schema(_DURATION.pattern, format_duration)),
]
"""A positive duration, in seconds once validated."""

Delay = Annotated[
    float,
    BeforeValidator(parse_duration),
    Field(ge=0, json_schema_extra=_text_schema(_DURATION.pattern, format_duration)),
]
"""A duration that may be 0s (no delay), in seconds once validated."""

ByteSize = Annotated[
    int,
    BeforeValidator(parse_size),
    Field(gt=0, json_schema_extra=_text_schema(_SIZE.pattern, lambda n: format_size(int(n)))),
]
"""A positive size, in bytes once validated."""

# Character sets from the uplink spec, section Identity.
GatewayCode = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
HazardCode = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
TagCode = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]

# GB 32100-2015: 统一社会信用代码. 31 symbols (no I, O, Z, S, V), weights 3^i mod 31.
_USCC_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_USCC_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)


def uscc_check_character(first17: str) -> str:
    """The check character GB 32100 prescribes for the first 17 characters."""
    total = sum(_USCC_ALPHABET.index(c) * w for c, w in zip(first17, _USCC_WEIGHTS, strict=True))
    return _USCC_ALPHABET[(31 - total % 31) % 31]


def validate_uscc(code: str) -> str:
    if len(code) != 18:
        raise ValueError(f"{code!r} has {len(code)} characters; a 统一社会信用代码 has 18")
    bad = sorted({c for c in code if c not in _USCC_ALPHABET})
    if bad:
        raise ValueError(
            f"{code!r} contains {', '.join(repr(c) for c in bad)}; only 0-9 and "
            "A-H J-N P-R T U W-Y are allowed (no I, O, S, V, Z; capitals only)"
        )
    expected = uscc_check_character(code[:17])
    if code[17] != expected:
        raise ValueError(
            f"{code!r} fails the GB 32100 check: its last character should be {expected!r}; "
            "check the code against the business licence"
        )
    return code


EnterpriseCode = Annotated[
    str,
    AfterValidator(validate_uscc),
    Field(json_schema_extra={"pattern": f"^[{_USCC_ALPHABET}]{{18}}$"}),
]
