"""The rules stage judges and sends numbers as the wire carries them (edge_agent/wire.py)."""

from __future__ import annotations

import math
from typing import Any

from edge_agent.config.tags import TagBase
from edge_agent.drivers.modbus.config import ModbusTag
from edge_agent.model import AlarmState, Int64, Quality, Sample, UInt64
from edge_agent.rules import TagRules


def rules(**fields: Any) -> TagRules:
    tag = ModbusTag.model_validate({"tag": "T", "hazard": "HZ01", "address": "hr:0", **fields})
    return TagRules(tag, every_s=60, poll_s=1, stats_window_s=10)


def test_the_largest_uint64_is_a_valid_reading_sent_as_its_decimal_digits() -> None:
    reading, events = rules(type="uint64").judge(Sample("T", 1, 2**64 - 1, Quality.GOOD))
    assert reading is not None
    assert (reading.value, reading.quality, events) == ("18446744073709551615", Quality.GOOD, [])


def test_a_64_bit_alarm_carries_its_value_and_limit_as_decimal_strings() -> None:
    tag_rules = rules(type="int64", limits={"H": 9e18})
    _, raised = tag_rules.judge(Sample("T", 1, 2**63 - 1, Quality.GOOD))
    _, cleared = tag_rules.judge(Sample("T", 2, -(2**63), Quality.GOOD))
    assert [(e.state, e.value, e.limit) for e in raised + cleared] == [
        (AlarmState.RAISED, "9223372036854775807", "9000000000000000000"),
        (AlarmState.CLEARED, "-9223372036854775808", "9000000000000000000"),
    ]


def test_a_64_bit_window_is_summed_exactly() -> None:
    tag_rules = rules(type="uint64")
    for ts, value in ((0, 2**64 - 1), (1000, 2**64 - 3)):
        tag_rules.judge(Sample("T", ts, value, Quality.GOOD))
    (stat,) = tag_rules.close_stats(10_000)
    assert (stat.min, stat.max, stat.avg) == (
        "18446744073709551613",
        "18446744073709551615",
        "18446744073709551614",
    )


def test_a_float32_is_judged_and_sent_as_its_shortest_decimal() -> None:
    tag_rules = rules(type="float32", limits={"H": 21.3})
    reading, events = tag_rules.judge(Sample("T", 1, 21.299999237060547, Quality.GOOD))
    assert reading is not None
    assert reading.value == 21.3
    assert [(e.value, e.limit) for e in events] == [(21.3, 21.3)], "the limit is reached as sent"


def test_a_scaled_value_carries_the_decimals_of_its_scaling() -> None:
    reading, _ = rules(type="int16", scale={"multiplier": 0.1}).judge(
        Sample("T", 1, 7 * 0.1, Quality.GOOD)
    )
    assert reading is not None
    assert repr(reading.value) == "0.7"


def test_a_tags_own_decimals_win_over_the_scaling() -> None:
    tag_rules = rules(type="float32", decimals=1, scale={"raw": [0, 27648], "eng": [0, 100]})
    reading, _ = tag_rules.judge(Sample("T", 1, 42.53449249267578, Quality.GOOD))
    assert reading is not None
    assert reading.value == 42.5


def test_not_a_number_is_sent_as_null_with_q4() -> None:
    for bad in (math.nan, math.inf):
        reading, _ = rules(type="float32").judge(Sample("T", 1, bad, Quality.GOOD))
        assert reading is not None
        assert (reading.value, reading.quality) == (None, Quality.CONFIG)


def untyped(**fields: Any) -> TagRules:
    """The rules of a tag whose type the config does not say (OPC UA without `type`)."""
    tag = TagBase.model_validate({"tag": "T", "hazard": "HZ01", **fields})
    return TagRules(tag, every_s=60, poll_s=1, stats_window_s=10)


def test_a_tag_without_type_is_a_64_bit_tag_once_its_device_sends_a_64_bit_integer() -> None:
    """Values, limits and statistics as decimal strings, as with a configured uint64."""
    tag_rules = untyped(limits={"H": 1e19})
    first, raised = tag_rules.judge(Sample("T", 0, UInt64(2**64 - 1), Quality.GOOD))
    tag_rules.judge(Sample("T", 1000, UInt64(2**64 - 3), Quality.GOOD))
    assert first is not None
    assert first.value == "18446744073709551615"
    assert [(e.value, e.limit) for e in raised] == [
        ("18446744073709551615", "10000000000000000000")
    ]
    (stat,) = tag_rules.close_stats(10_000)
    assert (stat.min, stat.max, stat.avg) == (
        "18446744073709551613",
        "18446744073709551615",
        "18446744073709551614",
    )


def test_a_tag_without_type_keeps_64_bit_strings_for_small_values_too() -> None:
    """A tag's JSON type does not change with its value: a signed 64-bit -5 is "-5"."""
    reading, _ = untyped().judge(Sample("T", 0, Int64(-5), Quality.GOOD))
    assert reading is not None
    assert reading.value == "-5"


def test_a_tag_without_type_sends_a_plain_int_as_a_number() -> None:
    reading, _ = untyped().judge(Sample("T", 0, 42, Quality.GOOD))
    assert reading is not None
    assert reading.value == 42
