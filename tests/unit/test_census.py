"""The runtime's figures for the snapshot: tags by quality, alarms by kind, store, uplink."""

from __future__ import annotations

import time
from pathlib import Path

from edge_agent.census import alarms_by_kind, store_snapshot, tags_by_quality, uplink_snapshot
from edge_agent.config.schema import Store as StoreConfig
from edge_agent.config.tags import TagBase
from edge_agent.model import AlarmKind, Quality, Reading
from edge_agent.rules import TagRules
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
