"""The OPC UA driver in poll and subscribe mode against the project's asyncua simulator.

The simulator is started once per session (opcua_sim.py); these tests only read.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator

import pytest
from opcua_helpers import by_tag, device, tag
from opcua_sim import (
    Sim,
    opcua_sim_fixture,  # noqa: F401  # registers the fixture opcua_sim
)
from polling import read_until
from structlog.testing import capture_logs

from edge_agent.drivers import build_driver
from edge_agent.drivers.opcua.driver import OpcuaDriver
from edge_agent.drivers.opcua.limits import Call
from edge_agent.model import LinkState, Quality, Sample
from edge_agent.rules import TagRules

pytestmark = pytest.mark.asyncio(loop_scope="session")

TYPED = {
    "T.B": ("s=Mine.Vent.B", True),
    "T.SB": ("s=Mine.Vent.SB", -8),
    "T.BY": ("s=Mine.Vent.BY", 200),
    "T.I16": ("s=Mine.Vent.I16", -1600),
    "T.U16": ("s=Mine.Vent.U16", 60000),
    "T.I32": ("s=Mine.Vent.I32", -320000),
    "T.U32": ("s=Mine.Vent.U32", 4000000000),
    "T.I64": ("s=Mine.Vent.I64", -(2**40)),
    "T.U64": ("s=Mine.Vent.U64", 2**63 + 5),
    "T.F": ("s=Mine.Vent.F", 1.5),
    "T.D": ("s=Mine.Vent.D", -2.25),
    "T.S": ("s=Mine.Vent.S", "FAN-1 RUN"),
    "T.DT": ("s=Mine.Vent.DT", "2025-11-29T18:32:34.500Z"),
    "T.SC": ("s=Mine.Vent.SC", "BadSensorFailure"),
}


@pytest.fixture
async def driver_closer() -> AsyncIterator[list[OpcuaDriver]]:
    drivers: list[OpcuaDriver] = []
    yield drivers
    for driver in drivers:
        await driver.close()


def start(drivers: list[OpcuaDriver], config: object) -> OpcuaDriver:
    # Report every 1 s: a keep-alive of 5 publishing intervals of 100 ms.
    driver = build_driver(config, report_every=1.0)  # type: ignore[arg-type]  # an OpcuaDevice
    assert isinstance(driver, OpcuaDriver)
    drivers.append(driver)
    return driver


async def test_poll_reads_every_scalar_type_into_the_uplink_value(
    opcua_sim: Sim, driver_closer: list[OpcuaDriver]
) -> None:
    """Boolean, SByte..UInt64, Float, Double, String, DateTime, StatusCode: as the uplink
    carries each."""
    tags = [tag(code, where) for code, (where, _) in TYPED.items()]
    driver = start(driver_closer, device(opcua_sim.endpoint("plant"), tags))
    samples = by_tag(await driver.read())
    assert driver.link is LinkState.UP
    assert {code: (s.value, s.quality) for code, s in samples.items()} == {
        code: (value, Quality.GOOD) for code, (_, value) in TYPED.items()
    }


@pytest.mark.parametrize("mode", ["poll", "subscribe"])
async def test_a_64_bit_integer_without_a_configured_type_is_sent_as_its_decimal_digits(
    opcua_sim: Sim, driver_closer: list[OpcuaDriver], mode: str
) -> None:
    """The plant's UInt64 2^63+5 and Int64 -2^40, read without `type`: the rules send them
    as decimal strings, as for `type: UInt64` (a platform reading doubles loses digits)."""
    tags = [tag("T.U64", "s=Mine.Vent.U64"), tag("T.I64", "s=Mine.Vent.I64")]
    config = device(opcua_sim.endpoint("plant"), tags, mode=mode, publishing_interval="100ms")
    driver = start(driver_closer, config)
    samples = by_tag(await read_until(driver, lambda s: len(by_tag(s)) == 2))
    sent = {}
    for configured in config.tags:
        reading, _ = TagRules(configured, every_s=60, poll_s=1).judge(samples[configured.tag])
        assert reading is not None
        sent[configured.tag] = json.loads(json.dumps(reading.value))
    assert sent == {"T.U64": "9223372036854775813", "T.I64": "-1099511627776"}


async def test_poll_batches_by_max_nodes_per_read_and_keeps_config_order(
    opcua_sim: Sim, driver_closer: list[OpcuaDriver]
) -> None:
    """The plant says MaxNodesPerRead 3 (and refuses more): 14 tags still come back, one each,
    in config order."""
    tags = [tag(code, where) for code, (where, _) in TYPED.items()]
    driver = start(driver_closer, device(opcua_sim.endpoint("plant"), tags))
    samples = await driver.read()
    assert [s.tag for s in samples] == list(TYPED)
    session = driver._session
    assert session is not None
    assert session.limits.size(Call.READ) == 3


async def test_a_bad_node_degrades_only_its_own_tag_in_poll_mode(
    opcua_sim: Sim, driver_closer: list[OpcuaDriver]
) -> None:
    """Sensor failure q=3, uncertain q=1 with its value, unknown node q=4, array without index q=4;
    the good tags beside them stay good."""
    tags = [
        tag("T.CO", "s=Mine.Vent.CO"),
        tag("T.BAD", "s=Mine.Vent.BAD"),
        tag("T.UNSURE", "s=Mine.Vent.UNSURE"),
        tag("T.NONE", "s=Mine.Vent.NOPE"),
        tag("T.NOPATH", "Mine/Vent/NOPE"),
        tag("T.NOURI", "nsu=urn:no:such;s=X"),
        tag("T.ARR", "s=Mine.Vent.ARR"),
        tag("T.ARR2", "s=Mine.Vent.ARR", type="Double[]", index=2),
        tag("T.PAST", "s=Mine.Vent.ARR", type="Double[]", index=3),
        tag("T.WRONG", "s=Mine.Vent.S", type="Double"),
        tag("T.PATH", "Mine/Vent/CO"),
        tag("T.NSU", "nsu=urn:test:plant;s=Mine.Vent.CO"),
    ]
    driver = start(driver_closer, device(opcua_sim.endpoint("plant"), tags))
    with capture_logs() as logs:
        samples = by_tag(await driver.read())
        await driver.read()
    assert {code: (s.value, s.quality) for code, s in samples.items()} == {
        "T.CO": (4.5, Quality.GOOD),
        "T.BAD": (None, Quality.SENSOR),
        "T.UNSURE": (2.5, Quality.UNCERTAIN),
        "T.NONE": (None, Quality.CONFIG),
        "T.NOPATH": (None, Quality.CONFIG),
        "T.NOURI": (None, Quality.CONFIG),
        "T.ARR": (None, Quality.CONFIG),
        "T.ARR2": (7.0, Quality.GOOD),
        "T.PAST": (None, Quality.CONFIG),
        "T.WRONG": (None, Quality.CONFIG),
        "T.PATH": (4.5, Quality.GOOD),
        "T.NSU": (4.5, Quality.GOOD),
    }
    reasons = {e["tag"]: e["reason"] for e in logs if e["event"] == "tag_bad"}
    assert len([e for e in logs if e["event"] == "tag_bad"]) == len(reasons), "logged once each"
    assert "give the tag an index" in reasons["T.ARR"]
    assert reasons["T.BAD"] == "BadSensorFailure"
    assert "no namespace 'urn:no:such'" in reasons["T.NOURI"]
    assert "type mismatch" in reasons["T.WRONG"]


async def test_subscribe_hands_over_every_change_then_repeats_unchanged_tags(
    opcua_sim: Sim, driver_closer: list[OpcuaDriver]
) -> None:
    """The counter changes (notifications, rising); the constant is repeated at each read,
    stamped with the server's last answer."""
    tags = [tag("T.COUNT", "s=Mine.Vent.COUNT"), tag("T.CO", "s=Mine.Vent.CO")]
    config = device(
        opcua_sim.endpoint("plant"), tags, mode="subscribe", publishing_interval="100ms"
    )
    driver = start(driver_closer, config)
    counts: list[Sample] = []
    constants: list[Sample] = []
    for _ in range(12):
        samples = await driver.read()
        counts += [s for s in samples if s.tag == "T.COUNT"]
        constants += [s for s in samples if s.tag == "T.CO"]
        await asyncio.sleep(0.25)
    values = [s.value for s in counts]
    assert driver.link is LinkState.UP
    assert values == sorted(values)
    assert len(set(values)) >= 2, values
    assert all(s.quality is Quality.GOOD and s.value == 4.5 for s in constants)
    assert len(constants) >= 10, "every read after the first notification carries the constant"
    # Repeats carry the time of the subscription's last Publish response: they move on
    # with the server's answers (the counter's changes, keep-alives).
    assert len({s.ts_ms for s in constants}) >= 5, "repeats are stamped as the server answers"


async def test_subscribe_deadband_drops_small_changes_at_the_server(
    opcua_sim: Sim, driver_closer: list[OpcuaDriver]
) -> None:
    """The ramp moves 1.0 per 100 ms update. Without a deadband every step arrives; with
    monitor.deadband 4.5 none does (asyncua's server compares each sample with the one
    before), only the first value and the sawtooth's jump back to 0."""
    tags = [
        tag("T.RAW", "s=Mine.Vent.RAMP", monitor={"queue_size": 10}),
        tag("T.DB", "s=Mine.Vent.RAMP", monitor={"queue_size": 10, "deadband": 4.5}),
    ]
    config = device(
        opcua_sim.endpoint("plant"), tags, mode="subscribe", publishing_interval="100ms"
    )
    driver = start(driver_closer, config)
    changes: dict[str, list[float]] = {"T.RAW": [], "T.DB": []}
    for _ in range(10):
        for sample in await driver.read():
            seen = changes[sample.tag]
            if not seen or seen[-1] != sample.value:  # a repeat of an unchanged value is no change
                seen.append(float(sample.value))  # type: ignore[arg-type]  # a Double
        await asyncio.sleep(0.2)
    raw, damped = changes["T.RAW"], changes["T.DB"]
    assert len(raw) >= 8, raw
    assert 1 <= len(damped) <= 2, damped
    assert all(abs(b - a) > 4.5 for a, b in itertools.pairwise(damped)), damped


async def test_a_bad_node_never_silences_the_others_in_subscribe_mode(
    opcua_sim: Sim, driver_closer: list[OpcuaDriver]
) -> None:
    """An unknown node's monitored item is refused (q=4), a failed sensor is q=3; the counter
    flows."""
    tags = [
        tag("T.NONE", "s=Mine.Vent.NOPE"),
        tag("T.BAD", "s=Mine.Vent.BAD"),
        tag("T.COUNT", "s=Mine.Vent.COUNT"),
    ]
    config = device(
        opcua_sim.endpoint("plant"), tags, mode="subscribe", publishing_interval="100ms"
    )
    driver = start(driver_closer, config)
    first = by_tag(await read_until(driver, lambda s: "T.COUNT" in by_tag(s)))
    later = by_tag(
        await read_until(
            driver,
            lambda s: (
                "T.COUNT" in by_tag(s) and by_tag(s)["T.COUNT"].value != first["T.COUNT"].value
            ),
        )
    )
    assert later["T.NONE"].quality is Quality.CONFIG
    assert later["T.BAD"].quality is Quality.SENSOR
    assert later["T.COUNT"].quality is Quality.GOOD
