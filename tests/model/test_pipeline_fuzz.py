"""The whole pipeline under random register images and random tag configs.

Registers of every width with every bit pattern (NaN, the infinities,
denormals, the ends of every integer type, strings full and empty) go through
the Modbus driver's decoding, the rules, the store and its packing, and the
JSON envelope, for tags of every type, byte order, scaling, range and limit
set. Nothing may raise; every item must be what uplink-v1 allows; every value
is exact (a float32 reads back from its text to the same float32, a 64-bit
integer keeps its digits) or null with a bad `q`.

Deterministic in CI: derandomized, a fixed number of examples, no deadline.
"""

from __future__ import annotations

import json
import math
import struct
import tempfile
from decimal import Decimal
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from stores import SyncStore

from edge_agent.drivers.modbus.codec import decode
from edge_agent.drivers.modbus.config import ModbusDevice, ModbusTag
from edge_agent.drivers.modbus.driver import ModbusDriver
from edge_agent.model import AlarmKind, Quality, Sample
from edge_agent.rules import TagRules
from edge_agent.uplink.envelope import Identity, envelope
from edge_agent.wire import VALUE_TYPES

IDENTITY = Identity("safety/v1", "91370200MA3C00000K", "GW-FUZZ")
EXAMPLES = 300
T0 = 1_764_441_000_000

TYPES = ["bool", "int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64"]
WIDTH = {"bool": 1, "int16": 1, "uint16": 1, "int32": 2, "uint32": 2, "float32": 2,
         "int64": 4, "uint64": 4, "float64": 4}  # fmt: skip
SPECIAL_WORDS = [0x0000, 0xFFFF, 0x7FFF, 0x8000, 0x7F80, 0xFF80, 0x7FC0, 0x0001, 0x3F80, 0x7FF0]

words = st.one_of(st.sampled_from(SPECIAL_WORDS), st.integers(0, 0xFFFF))
finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)


@st.composite
def tags(draw: st.DrawFn) -> dict[str, Any]:
    """A tag config as a technician might write it: valid, and otherwise anything."""
    kind = draw(st.sampled_from([*TYPES, "string"]))
    tag: dict[str, Any] = {"tag": "HZ01.X", "hazard": "HZ01", "address": "hr:0", "type": kind}
    if kind == "string":
        tag["length"] = draw(st.integers(1, 8))
        return tag
    if kind == "bool":
        return tag
    tag["byte_order"] = draw(st.sampled_from(["ABCD", "CDAB", "BADC", "DCBA"]))
    scaling = draw(st.sampled_from(["none", "multiplier", "raw", "current"]))
    if scaling == "multiplier":
        tag["scale"] = {"multiplier": draw(st.sampled_from([0.1, 0.01, 0.25, 3.0, 1e-7])),
                        "offset": draw(st.sampled_from([0.0, -40.5, 1000.0]))}  # fmt: skip
    elif scaling == "raw":
        tag["scale"] = {"raw": [0, draw(st.sampled_from([1000, 27648, 65535]))], "eng": [0, 100]}
    if draw(st.booleans()) or scaling == "current":
        low = draw(finite)
        tag["range"] = {"low": low, "high": low + draw(st.floats(0.5, 1e5)),
                        "tolerance": draw(st.sampled_from([0, 10]))}  # fmt: skip
    if scaling == "current":
        tag["current"] = {"raw_4ma": 0, "raw_20ma": draw(st.sampled_from([27648, 16000]))}
    if draw(st.booleans()):
        limits = sorted(draw(st.lists(finite, min_size=1, max_size=4, unique=True)))
        span = tag.get("range")
        if span is not None:
            limits = [min(max(x, span["low"]), span["high"]) for x in limits]
            limits = sorted(set(limits))
        tag["limits"] = dict(zip(["LL", "L", "H", "HH"][-len(limits) :], limits, strict=True))
        tag["limits"]["deadband"] = draw(st.sampled_from([0.0, 0.5]))
    if draw(st.booleans()):
        tag["decimals"] = draw(st.integers(0, 6))
    if draw(st.booleans()):
        tag["stuck"] = {"after": "2s"}
    if draw(st.booleans()):
        tag["roc"] = {"limit": draw(st.floats(0.1, 100)), "window": "3s"}
    return tag


@settings(
    max_examples=EXAMPLES,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(tag_fields=tags(), data=st.data())
def test_any_register_image_of_any_tag_reaches_the_wire_exact_or_null(
    tag_fields: dict[str, Any], data: st.DataObject
) -> None:
    fields = {"name": "plc", "driver": "modbus", "host": "127.0.0.1", "tags": [tag_fields]}
    try:
        device = ModbusDevice.model_validate(fields)
    except ValueError:
        return  # a config `check` refuses never runs
    tag = device.tags[0]
    width = tag.width
    image = st.lists(words, min_size=width, max_size=width)
    images = data.draw(st.lists(image, min_size=1, max_size=6))
    driver = ModbusDriver(device)
    (request,) = driver.plan
    rules = TagRules(tag, every_s=60, poll_s=1, stats_window_s=10)
    with tempfile.TemporaryDirectory() as directory:
        store = SyncStore.open(Path(directory) / "store.db")
        decoded: list[Sample] = []
        for n, registers in enumerate(images):
            out: list[Sample | None] = [None]
            driver.decode_registers(request, registers, T0 + 1000 * n, out)
            (sample,) = out
            assert sample is not None
            decoded.append(sample)
            reading, events = rules.judge(sample)
            if reading is not None:
                store.add_reading(reading, alarmed=bool(events))
            for event in events:
                store.add_alarm(event)
        for item in rules.close_stats(T0 + 10**6):
            store.add_stat(item)
        store.mark_live()
        bodies = [json.loads(envelope(IDENTITY, m, T0 + 10**6)) for m in store.pack_all()]
        store.close()

    raw = [_raw_value(tag, registers) for registers in images]
    for body in bodies:
        assert (body["v"], body["ent"], body["gw"]) == (1, IDENTITY.enterprise, IDENTITY.gateway)
        for item in body["items"]:
            {"rt": _check_reading, "alarm": _check_alarm, "stat": _check_stat}[_topic(item)](
                tag, item, raw
            )


def _topic(item: dict[str, Any]) -> str:
    if "win" in item:
        return "stat"
    return "alarm" if "kind" in item else "rt"


def _raw_value(tag: ModbusTag, registers: list[int]) -> object:
    """What the registers hold for this tag, decoded by the codec's reference path."""
    return decode(registers, tag.type, tag.byte_order or "ABCD")


def _check_reading(tag: ModbusTag, item: dict[str, Any], raw: list[object]) -> None:
    assert set(item) == {"tag", "hz", "ts", "v", "q"}
    assert item["q"] in (0, 1, 2, 3, 4)
    value = item["v"]
    assert (value is None) == (item["q"] >= Quality.COMM)
    if value is None:
        return
    if tag.type in ("int64", "uint64"):
        assert isinstance(value, str)
        if tag.scale is None and tag.decimals is None:
            assert int(value) in raw, "a 64-bit integer keeps its digits"
        return
    if tag.type == "string":
        assert isinstance(value, str)
        return
    if tag.type == "bool":
        assert isinstance(value, bool)
        return
    assert isinstance(value, int | float)
    assert not isinstance(value, bool)
    assert math.isfinite(value)
    if tag.type == "float32" and tag.scale is None and tag.current is None and tag.decimals is None:
        as_float32 = struct.unpack("<f", struct.pack("<f", float(value)))[0]
        assert as_float32 in raw, "a float32 reads back from its text to the same float32"


def _check_alarm(tag: ModbusTag, item: dict[str, Any], raw: list[object]) -> None:
    assert {"id", "tag", "hz", "ts", "kind", "state", "v"} <= set(item) <= {*item, "limit"}
    assert item["kind"] in {kind.value for kind in AlarmKind}
    assert item["state"] in ("raised", "cleared")
    if item["kind"] in ("COMM", "FAULT"):
        assert item["v"] is None
        assert "limit" not in item
    if tag.type in ("int64", "uint64") and item["v"] is not None:
        assert isinstance(item["v"], str)
        assert isinstance(item.get("limit", ""), str)


def _check_stat(tag: ModbusTag, item: dict[str, Any], raw: list[object]) -> None:
    assert set(item) == {"tag", "hz", "ts", "win", "min", "max", "avg", "n", "bad"}
    if item["n"] == 0:
        assert (item["min"], item["max"], item["avg"]) == (None, None, None)
        return
    low, avg, high = (Decimal(str(item[key])) for key in ("min", "avg", "max"))
    assert low <= avg <= high, "min <= avg <= max as written"
    assert tag.value_type in VALUE_TYPES
