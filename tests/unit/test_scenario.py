"""The simulated plant's value functions, point encoding and scenario files."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import yaml

from edge_agent.config.schema import AgentConfig
from edge_agent.drivers.modbus.codec import decode
from edge_agent.drivers.simulator.scenario import Point, Scenario, Value, load_scenario
from edge_agent.errors import ConfigError, ConfigFileMissing

ROOT = Path(__file__).resolve().parents[2]
DEMO_SCENARIO = ROOT / "drivers" / "simulator" / "scenarios" / "demo.yaml"
DEMO_CONFIG = ROOT / "config" / "demo.yaml"


def value(spec: dict[str, Any]) -> Value:
    return Value.model_validate(spec)


def point(**fields: Any) -> Point:
    return Point.model_validate(fields)


def test_const_holds_its_value_and_type() -> None:
    """const returns what it was given: bool, int or float."""
    assert value({"const": True}).at(99) is True
    assert value({"const": 7}).at(0) == 7
    assert value({"const": 0.45}).at(5) == 0.45


def test_ramp_is_a_sawtooth() -> None:
    """from -> to over period, then back to from."""
    ramp = value({"ramp": {"from": 0.4, "to": 0.5, "period": "10s"}})
    assert ramp.at(0) == pytest.approx(0.4)
    assert ramp.at(5) == pytest.approx(0.45)
    assert ramp.at(9.999) == pytest.approx(0.5, abs=1e-4)
    assert ramp.at(10) == pytest.approx(0.4)


def test_sine_swings_around_its_mean() -> None:
    """mean + amplitude * sin(2 pi t / period)."""
    sine = value({"sine": {"mean": 12, "amplitude": 3, "period": "120s"}})
    assert sine.at(0) == pytest.approx(12)
    assert sine.at(30) == pytest.approx(15)
    assert sine.at(90) == pytest.approx(9)


def test_noise_is_reproducible_and_plausible() -> None:
    """The same t and seed give the same value; 1,000 draws sit near mean and sd."""
    noise = value({"noise": {"mean": 25, "sd": 0.3, "seed": 1}})
    again = value({"noise": {"mean": 25, "sd": 0.3, "seed": 1}})
    other = value({"noise": {"mean": 25, "sd": 0.3, "seed": 2}})
    draws = [float(noise.at(t / 10)) for t in range(1000)]
    assert draws == [again.at(t / 10) for t in range(1000)]
    assert draws != [other.at(t / 10) for t in range(1000)]
    mean = sum(draws) / len(draws)
    sd = math.sqrt(sum((d - mean) ** 2 for d in draws) / len(draws))
    assert mean == pytest.approx(25, abs=0.05)
    assert sd == pytest.approx(0.3, rel=0.15)


def test_noise_holds_within_one_step() -> None:
    """Requests 10 ms apart see the same noise value."""
    noise = value({"noise": {"mean": 0, "sd": 1}})
    assert noise.at(3.01) == noise.at(3.02)


def test_step_switches_at_its_time() -> None:
    """before until at, after from at on."""
    step = value({"step": {"before": 0, "after": 1, "at": "5s"}})
    assert (step.at(4.999), step.at(5), step.at(6)) == (0, 1, 1)


def test_leak_rises_holds_falls_and_repeats() -> None:
    """The demo gas leak crosses 25 and 50, holds 60 and is back to base within 40 s."""
    leak = value(
        {
            "leak": {
                "base": 3,
                "peak": 60,
                "start": "8s",
                "rise": "8s",
                "hold": "6s",
                "fall": "8s",
                "every": "60s",
            }
        }
    )
    assert leak.at(0) == 3
    assert leak.at(12) == pytest.approx(31.5)  # halfway up
    assert leak.at(16) == 60
    assert leak.at(21.9) == 60
    assert leak.at(26) == pytest.approx(31.5)  # halfway down
    assert leak.at(30) == 3
    assert leak.at(72) == pytest.approx(31.5)  # the next episode
    samples = [float(leak.at(t / 10)) for t in range(400)]
    assert max(samples) == 60
    assert any(s >= 50 for s in samples)
    assert samples[-1] == 3


def test_leak_without_every_happens_once() -> None:
    """No every: one episode, then base for good."""
    leak = value({"leak": {"base": 0, "peak": 10, "rise": "1s", "fall": "1s"}})
    assert (leak.at(0.5), leak.at(1), leak.at(1.5), leak.at(100)) == (5, 10, 5, 0)


def test_counter_is_floor_of_t() -> None:
    """Exactly floor(t), an int."""
    counter = value({"counter": {}})
    assert [counter.at(t) for t in (0, 0.99, 1, 59.5)] == [0, 0, 1, 59]
    assert isinstance(counter.at(2.5), int)


def test_scaled_point_holds_the_raw_register_the_agent_scales_back() -> None:
    """0.45 MPa at multiplier 0.01 is the register 45; -0.3 at 0.1 offset 1 is -13."""
    pressure = point(
        address="hr:4", type="int16", scale={"multiplier": 0.01}, value={"const": 0.45}
    )
    assert pressure.words(0) == [45]
    shifted = point(
        address="hr:4",
        type="int16",
        scale={"multiplier": 0.1, "offset": 1},
        value={"const": -0.3},
    )
    assert shifted.words(0) == [0xFFF3]


def test_points_encode_with_their_byte_order() -> None:
    """A CDAB float32 holds its low word first."""
    temperature = point(address="hr:2", type="float32", byte_order="CDAB", value={"const": 25.5})
    assert temperature.words(0) == [0x0000, 0x41CC]
    assert decode([0x0000, 0x41CC], "float32", "CDAB") == 25.5


def test_integer_points_saturate_but_counters_wrap() -> None:
    """A value beyond uint16 saturates; a counter wraps like a real one."""
    assert point(address="hr:0", value={"const": 70000}).words(0) == [0xFFFF]
    assert point(address="hr:0", value={"const": -5}).words(0) == [0]
    assert point(address="hr:0", value={"counter": {}}).words(65537.5) == [1]
    assert point(address="hr:0", type="int16", value={"counter": {}}).words(32768) == [0x8000]


def test_bit_points_hold_one_bool() -> None:
    """Coils and discrete inputs hold a bool."""
    assert point(address="co:0", type="bool", value={"const": 1}).words(0) == [True]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"const": 1, "counter": {}}, "exactly one"),
        ({}, "exactly one"),
        ({"const": None}, "const needs a value"),
        ({"sine": {"mean": 1, "amplitude": 1, "period": 5}}, "has no unit"),
        ({"ramp": {"from": 0, "to": 1, "period": "1s", "extra": 1}}, "Extra inputs"),
        (
            {"leak": {"base": 0, "peak": 1, "rise": "5s", "fall": "5s", "every": "8s"}},
            "longer than every",
        ),
    ],
)
def test_bad_value_specs_are_refused(spec: dict[str, Any], message: str) -> None:
    """Each mistake is named."""
    with pytest.raises(ValueError, match=message):
        value(spec)


def test_overlapping_points_are_refused() -> None:
    """A uint16 inside a float32 is a scenario mistake."""
    device = {
        "name": "d",
        "points": [
            {"address": "hr:0", "type": "float32", "value": {"const": 1}},
            {"address": "hr:1", "value": {"const": 1}},
        ],
    }
    with pytest.raises(ValueError, match="hr:1 overlaps point hr:0"):
        Scenario.model_validate({"devices": [device]})


def test_a_coil_must_be_bool() -> None:
    """A bit address cannot hold a uint16."""
    with pytest.raises(ValueError, match="must be bool"):
        point(address="co:3", type="uint16", value={"const": 1})


def test_load_scenario_names_the_file_and_the_field(tmp_path: Path) -> None:
    """Errors come back as ConfigError lines that start with the file."""
    path = tmp_path / "bad.yaml"
    path.write_text("devices:\n  - name: d\n    points: []\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_scenario(path)
    assert caught.value.problems[0].startswith(f"{path}: devices.0.points:")
    with pytest.raises(ConfigFileMissing):
        load_scenario(tmp_path / "missing.yaml")


def test_demo_scenario_loads() -> None:
    """The shipped demo scenario is valid: one device on 5020, unit 1, nine points."""
    scenario = load_scenario(DEMO_SCENARIO)
    [device] = scenario.devices
    assert (device.name, device.port, device.unit, len(device.points)) == (
        "plc-tank-farm",
        5020,
        1,
        9,
    )


def test_demo_config_reads_every_demo_point_as_the_device_stores_it() -> None:
    """config/demo.yaml is a valid AgentConfig whose tags match the scenario point for point."""
    config = AgentConfig.model_validate(yaml.safe_load(DEMO_CONFIG.read_text(encoding="utf-8")))
    [device] = config.devices
    [simulated] = load_scenario(DEMO_SCENARIO).devices
    assert (device.name, device.port, device.unit) == (
        simulated.name,
        simulated.port,
        simulated.unit,
    )
    points = {p.name: p for p in simulated.points}
    assert sorted(points) == sorted(t.tag for t in device.tags)
    for tag in device.tags:
        p = points[tag.tag]
        assert (tag.address, tag.type) == (p.address, p.type), tag.tag
        assert (tag.byte_order or device.byte_order) == p.byte_order, tag.tag
        assert tag.scale == p.scale, tag.tag


# --- units, transports, strings -------------------------------------------------------------

TANK_FARM_SCENARIO = ROOT / "drivers" / "simulator" / "scenarios" / "tank-farm.yaml"


def test_a_device_holds_several_units_with_their_own_behaviour() -> None:
    scenario = Scenario.model_validate(
        {
            "devices": [
                {
                    "name": "bus",
                    "transport": "rtu",
                    "units": [
                        {"unit": 1, "points": [{"address": "hr:0", "value": {"const": 1}}]},
                        {"unit": 2, "delay": "150ms",
                         "points": [{"address": "hr:0", "value": {"const": 2}}]},
                        {"unit": 3, "silent": True,
                         "points": [{"address": "hr:0", "value": {"const": 3}}]},
                    ],
                }
            ]
        }
    )  # fmt: skip
    units = scenario.devices[0].all_units
    assert [(u.unit, u.delay, u.silent) for u in units] == [
        (1, 0.0, False),
        (2, 0.15, False),
        (3, 0.0, True),
    ]


def test_by_default_connections_are_served_concurrently_and_units_answer_data() -> None:
    units = [{"points": [{"address": "hr:0", "value": {"const": 1}}]}]
    device = Scenario.model_validate({"devices": [{"name": "gw", "units": units}]}).devices[0]
    only = device.all_units[0]
    assert not device.serialise
    assert (only.gateway_fails, only.busy_every, only.acknowledge_every) == (False, None, None)


@pytest.mark.parametrize(
    ("device", "message"),
    [
        ({"points": [{"address": "hr:0", "value": {"const": 1}}],
          "units": [{"points": [{"address": "hr:0", "value": {"const": 1}}]}]}, "not both"),
        ({}, "not both"),
        ({"units": [{"unit": 1, "points": [{"address": "hr:0", "value": {"const": 1}}]},
                    {"unit": 1, "points": [{"address": "hr:0", "value": {"const": 1}}]}]},
         "unit ids must be unique"),
        ({"transport": "serial", "points": [{"address": "hr:0", "value": {"const": 1}}]},
         "transport"),
        ({"units": [{"silent": True, "gateway_fails": True,
                     "points": [{"address": "hr:0", "value": {"const": 1}}]}]}, "not both"),
        ({"units": [{"busy_every": 0, "points": [{"address": "hr:0", "value": {"const": 1}}]}]},
         "busy_every"),
        ({"serialise": True, "busy_every": 2,
          "points": [{"address": "hr:0", "value": {"const": 1}}]}, "busy_every"),
    ],
)  # fmt: skip
def test_bad_device_forms_are_refused(device: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Scenario.model_validate({"devices": [{"name": "d", **device}]})


def test_a_string_point_holds_its_text_in_length_registers() -> None:
    p = point(address="hr:0", type="string", length=3, value={"const": "TK-1"})
    assert p.words(0) == [0x544B, 0x2D31, 0x0000]
    assert decode(p.words(0), "string") == "TK-1"


def test_a_raw_range_scaled_point_holds_the_raw_count() -> None:
    """4-20 mA in µA: 50 %LEL on 4000..20000 is 12000."""
    p = point(address="ir:0", type="uint16", scale={"raw": [4000, 20000], "eng": [0, 100]},
              value={"const": 50})  # fmt: skip
    assert p.words(0) == [12000]


def test_the_tank_farm_scenario_serves_every_link_of_the_tank_farm_config() -> None:
    scenario = load_scenario(TANK_FARM_SCENARIO)
    config = AgentConfig.model_validate(
        yaml.safe_load((ROOT / "config" / "tank-farm.yaml").read_text(encoding="utf-8"))
    )
    served = {(d.transport, u.unit) for d in scenario.devices for u in d.all_units}
    wanted = {(d.transport, d.unit) for d in config.devices}
    assert wanted <= served


def test_a_frozen_value_holds_what_it_was_when_the_episode_began() -> None:
    ramp = {"ramp": {"from": 0, "to": 60, "period": "60s"}}
    frozen = Value.model_validate(
        {"frozen": {"value": ramp, "start": "10s", "length": "5s", "every": "30s"}}
    )
    assert [frozen.at(t) for t in (9, 10, 14.9, 15, 40, 44)] == [9, 10, 10, 15, 40, 40]


def test_a_broken_value_reads_its_fault_value_during_the_episode() -> None:
    cut = Value.model_validate(
        {"broken": {"value": {"const": 4320}, "reads": 0, "start": "1s", "length": "2s"}}
    )
    assert [cut.at(t) for t in (0, 1, 2.9, 3, 100)] == [4320, 0, 0, 4320, 4320]
