"""StatusCode -> quality, and DataValue -> Sample, for every carried built-in type."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from asyncua import ua

from edge_agent.drivers.opcua.config import OpcuaTag
from edge_agent.drivers.opcua.quality import quality_of
from edge_agent.drivers.opcua.values import report_time, to_sample
from edge_agent.model import BigInteger, Int64, Quality, UInt64

NOW = 1_764_441_155_000


@pytest.mark.parametrize(
    ("code", "quality"),
    [
        (ua.StatusCodes.Good, Quality.GOOD),
        (ua.StatusCodes.GoodLocalOverride, Quality.GOOD),
        (ua.StatusCodes.Uncertain, Quality.UNCERTAIN),
        (ua.StatusCodes.UncertainSensorNotAccurate, Quality.UNCERTAIN),
        (ua.StatusCodes.Bad, Quality.COMM),
        (ua.StatusCodes.BadCommunicationError, Quality.COMM),
        (ua.StatusCodes.BadOutOfService, Quality.COMM),
        (ua.StatusCodes.BadSensorFailure, Quality.SENSOR),
        (ua.StatusCodes.BadDeviceFailure, Quality.SENSOR),
        (ua.StatusCodes.BadTypeMismatch, Quality.CONFIG),
        (ua.StatusCodes.BadNodeIdUnknown, Quality.CONFIG),
        (ua.StatusCodes.BadSensorFailure | 0x0400, Quality.SENSOR),  # info bits ignored
    ],
)
def test_status_codes_map_to_quality(code: int, quality: Quality) -> None:
    assert quality_of(code) is quality


def tag(**fields: Any) -> OpcuaTag:
    return OpcuaTag.model_validate({"tag": "M.X", "hazard": "M", "node": "ns=2;s=X", **fields})


def value(raw: Any, kind: ua.VariantType, code: int = 0, source: datetime | None = None) -> Any:
    return ua.DataValue(
        ua.Variant(raw, kind), StatusCode=ua.StatusCode(code), SourceTimestamp=source
    )


@pytest.mark.parametrize(
    ("raw", "kind", "expected"),
    [
        (True, ua.VariantType.Boolean, True),
        (-8, ua.VariantType.SByte, -8),
        (2**64 - 1, ua.VariantType.UInt64, 2**64 - 1),
        (1.5, ua.VariantType.Float, 1.5),
        ("RUN", ua.VariantType.String, "RUN"),
        (datetime(2026, 11, 29, 22, 30, 0, 123000, tzinfo=UTC), ua.VariantType.DateTime,
         "2026-11-29T22:30:00.123Z"),
        (ua.StatusCode(ua.StatusCodes.BadSensorFailure), ua.VariantType.StatusCode,
         "BadSensorFailure"),
    ],
)  # fmt: skip
def test_each_type_becomes_the_uplink_value(raw: Any, kind: ua.VariantType, expected: Any) -> None:
    sample, problem = to_sample(tag(), value(raw, kind), NOW)
    assert (sample.value, sample.quality, problem) == (expected, Quality.GOOD, None)


def test_a_source_timestamp_is_the_report_time_only_within_the_clock_skew() -> None:
    """A change's SourceTimestamp within 5 s of its arrival is its time; 8 h off (a PLC on
    local time taken for UTC), the arrival time is sent and the skew said; none: arrival."""
    source = datetime(2026, 11, 29, 18, 32, 34, 500000, tzinfo=UTC)
    source_ms = 1_795_977_154_500
    data = value(1.0, ua.VariantType.Double, source=source)
    assert report_time(data, source_ms + 4_000, 5_000) == (source_ms, None)
    eight_hours = 8 * 3_600_000
    assert report_time(data, source_ms - eight_hours, 5_000) == (
        source_ms - eight_hours,
        eight_hours,
    )
    assert report_time(value(1.0, ua.VariantType.Double), NOW, 5_000) == (NOW, None)
    assert to_sample(tag(), data, NOW)[0].ts_ms == NOW  # the time it is given


@pytest.mark.parametrize(
    ("fields", "data", "reason"),
    [
        ({}, value([1.0, 2.0], ua.VariantType.Double), "give the tag an index"),
        (
            {"type": "Double[]", "index": 2},
            value([1.0, 2.0], ua.VariantType.Double),
            "past the end",
        ),
        ({"type": "Int32"}, value(1.0, ua.VariantType.Double), "type mismatch"),
        ({}, value(float("nan"), ua.VariantType.Double), "not a finite number"),
        ({}, value(b"\x01", ua.VariantType.ByteString), "not carried"),
        ({}, ua.DataValue(ua.Variant(None, ua.VariantType.Null)), "no value"),
    ],
)
def test_what_cannot_be_carried_is_q4_with_a_reason(
    fields: dict[str, Any], data: Any, reason: str
) -> None:
    sample, problem = to_sample(tag(**fields), data, NOW)
    assert (sample.value, sample.quality) == (None, Quality.CONFIG)
    assert problem is not None
    assert reason in problem


def test_an_uncertain_value_is_kept_and_a_bad_one_is_not() -> None:
    uncertain = to_sample(tag(), value(2.5, ua.VariantType.Double, ua.StatusCodes.Uncertain), NOW)
    assert (uncertain[0].value, uncertain[0].quality) == (2.5, Quality.UNCERTAIN)
    bad = to_sample(tag(), value(2.5, ua.VariantType.Double, ua.StatusCodes.BadSensorFailure), NOW)
    assert (bad[0].value, bad[0].quality, bad[1]) == (None, Quality.SENSOR, "BadSensorFailure")


@pytest.mark.parametrize(
    ("raw", "kind", "big"),
    [
        (2**64 - 1, ua.VariantType.UInt64, UInt64),
        (-(2**63), ua.VariantType.Int64, Int64),
        (7, ua.VariantType.Int64, Int64),
    ],
)
def test_a_64_bit_integer_says_so_when_no_type_is_configured(
    raw: int, kind: ua.VariantType, big: type[BigInteger]
) -> None:
    """The rules then write its tag as a 64-bit integer tag (tests/unit/test_rules_wire.py)."""
    sample, _ = to_sample(tag(), value(raw, kind), NOW)
    assert (type(sample.value), sample.value) == (big, raw)
