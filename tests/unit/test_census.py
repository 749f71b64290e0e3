"""The runtime's figures for the snapshot: tags by quality, alarms by kind, store, uplink;
and each tag's value, quality and why for /tags."""

from __future__ import annotations

import math
import time
from pathlib import Path

from edge_agent.census import (
    QUALITY_MEANS,
    alarms_by_kind,
    store_snapshot,
    tag_snapshot,
    tags_by_quality,
    uplink_snapshot,
)
from edge_agent.config.schema import Store as StoreConfig
from edge_agent.config.tags import TagBase
from edge_agent.drivers.modbus.config import ModbusTag
from edge_agent.model import (
    AlarmEvent,
    AlarmKind,
    AlarmState,
    Quality,
    Reading,
    Sample,
    UInt64,
    Value,
)
from edge_agent.rules import TagRules
from edge_agent.service.snapshot import ActiveAlarm, TagSnapshot
from edge_agent.store import Store, StoreSettings
from edge_agent.uplink import Identity, Uplink
from edge_agent.uplink.settings import BrokerAddress, UplinkSettings


def test_tags_are_counted_by_quality_with_every_quality_named() -> None:
    qualities = [Quality.GOOD, Quality.GOOD, Quality.COMM, Quality.UNCERTAIN]
    assert tags_by_quality(qualities) == {
        "good": 2, "uncertain": 1, "comm": 1, "sensor": 0, "config": 0,
    }  # fmt: skip


def test_active_alarms_are_counted_by_kind() -> None:
    level = TagRules(
        TagBase.model_validate(
            {"tag": "HZ01.LT101", "hazard": "HZ01", "limits": {"H": 10, "HH": 20}}
        ),
        every_s=60,
        poll_s=1,
    )
    level.alarms.raise_(AlarmKind.H, 1, 15.0, 10)
    level.alarms.raise_(AlarmKind.HH, 1, 25.0, 20)
    gas = TagRules(
        TagBase.model_validate({"tag": "HZ01.GT201", "hazard": "HZ01"}), every_s=60, poll_s=1
    )
    gas.alarms.raise_(AlarmKind.FAULT, 1, None)
    assert alarms_by_kind([level, gas]) == {"H": 1, "HH": 1, "FAULT": 1}


async def test_the_store_figures_say_when_it_cannot_write(tmp_path: Path) -> None:
    config = StoreConfig.model_validate({"path": str(tmp_path / "store.db"), "max_size": "64KiB"})
    store = Store(StoreSettings(tmp_path / "store.db", 64 * 1024), (50, 65536))
    await store.open()
    for i in range(5000):  # more than the cap holds in one commit
        store.add_reading(Reading(f"T{i % 4}", "HZ01", i, float(i), Quality.GOOD))
    await store.flush()
    figures = store_snapshot(store, config, in_flight=0, connected=False)
    assert figures.write_error == "database or disk is full"
    assert figures.max_bytes == 64 * 1024
    assert figures.bytes_on_disk > 0
    assert figures.backlog_messages > 0, "what the full disk keeps in memory waits too"
    await store.close()


async def test_the_uplink_figures_say_how_long_it_has_been_down(tmp_path: Path) -> None:
    store = Store(StoreSettings(tmp_path / "store.db"), (50, 65536))
    await store.open()
    settings = UplinkSettings(brokers=(BrokerAddress("127.0.0.1", 1),))
    uplink = Uplink(settings, Identity("p", "e", "g"), store, dict, "0")
    uplink.stats.mark(connected=False)
    figures = uplink_snapshot(uplink, time.monotonic() + 30)
    assert not figures.connected
    assert 29 < figures.state_for_s < 31
    assert figures.in_flight == 0
    await store.close()


def tag(**fields: object) -> TagBase:
    """A Modbus tag (the type of a value is a driver's), uint16 unless `fields` say."""
    return ModbusTag.model_validate(
        {"tag": "HZ01.GT201", "hazard": "HZ01", "address": "hr:0", **fields}
    )


def snapshot_of(
    base: TagBase,
    value: Value,
    quality: Quality,
    sampled: Quality = Quality.GOOD,
    *,
    link_reason: str | None = None,
    clock_synced: bool = True,
) -> TagSnapshot:
    """The tag's snapshot after a sample of `sampled` quality its rules made `quality`."""
    rules = TagRules(base, every_s=60, poll_s=1)
    latest = (Sample(base.tag, 1000, value, sampled), quality)
    return tag_snapshot(
        base,
        "plc-1",
        rules,
        latest,
        link_reason=link_reason,
        clock_synced=clock_synced,
        rules_failed=False,
    )


def test_a_good_value_is_written_as_the_wire_writes_it_with_its_unit() -> None:
    level = snapshot_of(tag(unit="m", type="float32"), 21.299999237060547, Quality.GOOD)
    assert (level.value, level.text, level.unit) == (21.3, "21.3", "m")
    assert (level.quality, level.reason, level.sampled_ms) == ("good", None, 1000)
    scaled = snapshot_of(tag(decimals=1), 0.7000000000000001, Quality.GOOD)
    assert scaled.text == "0.7"


def test_a_64_bit_integer_of_a_tag_without_type_is_shown_as_the_wire_sends_it() -> None:
    """As its readings: a decimal string, which JavaScript's JSON does not round."""
    counter = TagBase.model_validate({"tag": "HZ01.FQ101", "hazard": "HZ01"})
    rules = TagRules(counter, every_s=60, poll_s=1)
    sample = Sample(counter.tag, 1000, UInt64(2**64 - 1), Quality.GOOD)
    rules.judge(sample)
    shown = tag_snapshot(
        counter,
        "ua-1",
        rules,
        (sample, Quality.GOOD),
        link_reason=None,
        clock_synced=True,
        rules_failed=False,
    )
    assert (shown.value, shown.text) == ("18446744073709551615", "18446744073709551615")


def test_a_string_value_is_quoted_for_people_and_kept_as_is_for_machines() -> None:
    message = snapshot_of(tag(), "<script>x</script>", Quality.GOOD)
    assert (message.value, message.text) == ("<script>x</script>", "'<script>x</script>'")


def test_a_value_beyond_the_range_has_no_value_and_says_why() -> None:
    gas = snapshot_of(tag(range={"low": 0, "high": 100}), 150, Quality.SENSOR)
    assert (gas.value, gas.text, gas.quality) == (None, "-", "sensor")
    assert gas.reason is not None
    assert gas.reason.startswith("150 is beyond range 0..100 and its 10% tolerance")


def test_a_tag_without_communication_gives_its_device_link_reason() -> None:
    down = snapshot_of(tag(), None, Quality.COMM, Quality.COMM, link_reason="connection: timed out")
    assert (down.quality, down.reason) == ("comm", "device link down: connection: timed out")
    refused = snapshot_of(tag(), None, Quality.COMM, Quality.COMM)
    assert refused.reason == QUALITY_MEANS[Quality.COMM]


def test_an_unsynchronised_clock_explains_an_uncertain_value() -> None:
    doubtful = snapshot_of(tag(), 12, Quality.UNCERTAIN, Quality.UNCERTAIN, clock_synced=False)
    assert (doubtful.value, doubtful.quality) == (12, "uncertain")
    assert doubtful.reason == "the gateway's clock is not synchronised: sent with q=1"


def test_a_value_the_wire_cannot_carry_says_so() -> None:
    nan = snapshot_of(tag(), math.nan, Quality.CONFIG)
    assert (nan.value, nan.quality) == (None, "config")
    assert nan.reason == "nan is not a number the platform can be sent: sent with q=4, no value"


def test_a_tag_not_read_yet_has_no_quality_but_its_alarms() -> None:
    base = tag(unit="%LEL")
    rules = TagRules(base, every_s=60, poll_s=1)
    rules.restore(AlarmEvent("a1", base.tag, "HZ01", 500, AlarmKind.FAULT, AlarmState.RAISED,
                             None, None))  # fmt: skip
    waiting = tag_snapshot(
        base, "plc-1", rules, None, link_reason=None, clock_synced=True, rules_failed=False
    )
    assert (waiting.quality, waiting.text, waiting.reason) == (None, "-", "not read yet")
    assert waiting.alarms == (ActiveAlarm("FAULT", 500, None, None),)


def test_failing_rules_are_named_as_the_reason() -> None:
    base = tag()
    failing = tag_snapshot(
        base,
        "plc-1",
        TagRules(base, every_s=60, poll_s=1),
        (Sample(base.tag, 1000, 3.5, Quality.GOOD), Quality.CONFIG),
        link_reason=None,
        clock_synced=True,
        rules_failed=True,
    )
    assert failing.reason == "the rules failed on this value (see rules_failed in the log)"
