"""The retained `meta` payload, and the uplink's pace on a slow and a fast link."""

from __future__ import annotations

import json
from typing import Any

from edge_agent.config.schema import AgentConfig
from edge_agent.reload import meta_of
from edge_agent.uplink.meta import MAX_META_BYTES, held_hash
from edge_agent.uplink.pace import MEMORY_S, MIN_INFLIGHT_BYTES, MIN_MESSAGE_BYTES, LinkPace


def config(tags: list[dict[str, Any]], site: str = "mine") -> AgentConfig:
    return AgentConfig.model_validate(
        {
            "gateway": {"code": "GW-01", "enterprise": "91370200MA3C00000K", "site": site},
            "uplink": {"mqtt": {"host": "127.0.0.1"}},
            "store": {"path": "/tmp/unused.db"},
            "devices": [{"name": "d", "driver": "modbus", "host": "127.0.0.1", "tags": tags}],
        }
    )


CO = {
    "tag": "MINE1.CO.301",
    "hazard": "MINE1",
    "address": "hr:0",
    "unit": "ppm",
    "range": {"low": 0, "high": 500},
    "limits": {"H": 24},
}


def test_meta_names_each_tag_with_its_report_interval_and_a_hash_of_them() -> None:
    meta = meta_of(config([CO, {"tag": "X", "hazard": "MINE1", "address": "hr:1"}]), 7)
    ((topic, payload),) = meta.payloads()
    body = json.loads(payload)
    assert topic == "safety/v1/91370200MA3C00000K/GW-01/meta"
    assert body["tags"] == [
        {"tag": "MINE1.CO.301", "hz": "MINE1", "type": "uint16", "unit": "ppm",
         "range": [0, 500], "limits": {"H": 24}, "every": 20},
        {"tag": "X", "hz": "MINE1", "type": "uint16", "every": 20},
    ]  # fmt: skip
    assert body["config"] == meta.config_hash == held_hash(payload)


def test_meta_writes_a_64_bit_tags_range_and_limits_as_decimal_strings() -> None:
    counter = {**CO, "type": "uint64", "range": {"low": 0, "high": 1e19}, "limits": {"H": 5e18}}
    ((_, payload),) = meta_of(config([counter]), 7).payloads()
    (entry,) = json.loads(payload)["tags"]
    assert entry["type"] == "uint64"
    assert entry["range"] == ["0", "10000000000000000000"]
    assert entry["limits"] == {"H": "5000000000000000000"}


def test_the_hash_follows_the_tags_not_the_time() -> None:
    assert meta_of(config([CO]), 1).config_hash == meta_of(config([CO]), 2).config_hash
    other = meta_of(config([CO], site="chemical"), 1)
    assert other.config_hash != meta_of(config([CO]), 1).config_hash


def test_a_tag_list_too_large_for_one_payload_is_split_into_parts() -> None:
    tags = [{**CO, "tag": f"MINE1.CO.{n:04}", "name": "x" * 300} for n in range(1500)]
    meta = meta_of(config(tags), 1)
    topics = [topic.rsplit("/", 2)[-2:] for topic, _ in meta.payloads()]
    parts = len(meta.payloads()) - 1
    assert parts >= 2
    assert topics[-1] == ["GW-01", "meta"]
    assert topics[:-1] == [["meta", str(n)] for n in range(1, parts + 1)]
    bodies = [json.loads(p) for _, p in meta.payloads()]
    assert bodies[-1]["parts"] == parts
    assert "tags" not in bodies[-1]
    assert sum(len(b["tags"]) for b in bodies[:-1]) == 1500
    assert all(len(p) <= MAX_META_BYTES for _, p in meta.payloads())


def test_an_unreadable_retained_meta_holds_no_hash() -> None:
    assert held_hash(None) is None
    assert held_hash(b"not json") is None
    assert held_hash(b'{"v": 1}') is None


def test_the_pace_starts_at_its_floor_and_follows_a_slow_link() -> None:
    pace = LinkPace()
    assert pace.inflight_budget(0.0) == MIN_INFLIGHT_BYTES
    assert pace.message_budget(0.0, 65536) == MIN_MESSAGE_BYTES
    pace.sending(0.0, in_flight=0)
    for n in range(1, 11):  # 32 KiB/s: 4 KiB acknowledged every 0.125 s
        pace.acked(n * 0.125, 4096, in_flight=1)
    assert 30_000 < pace.rate(1.25) < 40_000
    assert pace.inflight_budget(1.25) < 20_000  # half a second of the link
    assert pace.message_budget(1.25, 65536) < 10_000


def test_the_pace_opens_up_on_a_fast_link() -> None:
    pace = LinkPace()
    pace.sending(0.0, in_flight=0)
    for n in range(1, 101):  # 100 MB/s
        pace.acked(n * 0.001, 100_000, in_flight=5)
    assert pace.inflight_budget(0.1) > 10_000_000
    assert pace.message_budget(0.1, 65536) == 65536


def burst(pace: LinkPace, start: float, messages: int, size: int, seconds: float) -> None:
    """`messages` of `size` bytes published together and acknowledged over `seconds`."""
    for n in range(messages):
        pace.sending(start, in_flight=n)
    for n in range(1, messages + 1):
        pace.acked(start + seconds * n / messages, size, in_flight=messages - n)


def test_a_burst_starts_at_the_speed_of_the_bursts_before_it() -> None:
    pace = LinkPace()
    for second in range(3):  # a poll a second: 140 KB through in 10 ms, then nothing
        burst(pace, float(second), 4, 35_000, 0.01)
    assert pace.rate(3.0) > 10_000_000, "the idle time between bursts is not the link's"
    assert pace.message_budget(3.0, 65536) == 65536
    assert pace.inflight_budget(3.0) == 280_000, "twice the last burst, until heard from"
    burst(pace, 3.0, 1, 35_000, 0.002)
    pace.sending(3.5, in_flight=0)
    pace.acked(3.501, 35_000, in_flight=4)
    assert pace.inflight_budget(3.501) > 1_000_000, "heard from: the link's speed"


def test_a_link_idle_for_long_is_measured_afresh() -> None:
    pace = LinkPace()
    burst(pace, 0.0, 4, 35_000, 0.01)
    later = MEMORY_S + 1
    assert pace.inflight_budget(later) == MIN_INFLIGHT_BYTES
    assert pace.message_budget(later, 65536) == MIN_MESSAGE_BYTES


def test_a_long_drain_follows_the_link_as_it_slows_down() -> None:
    pace = LinkPace()
    burst(pace, 0.0, 4, 35_000, 0.01)  # fast, a moment ago
    pace.sending(1.0, in_flight=0)
    for n in range(1, 41):  # then a drain over 5 s at 32 KiB/s
        pace.acked(1.0 + n * 0.125, 4096, in_flight=5)
    assert 30_000 < pace.rate(6.0) < 40_000


def test_a_link_that_slowed_between_bursts_is_followed_from_its_first_puback() -> None:
    pace = LinkPace()
    burst(pace, 0.0, 4, 35_000, 0.01)  # 14 MB/s a moment ago
    pace.sending(1.0, in_flight=0)
    pace.acked(1.5, 4096, in_flight=3)  # now 4 KiB in half a second
    assert pace.rate(1.5) < 10_000
    assert pace.inflight_budget(1.5) == MIN_INFLIGHT_BYTES
