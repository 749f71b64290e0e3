"""Device configs the planner could never read are refused when the config loads."""

from __future__ import annotations

from typing import Any

import pytest

from edge_agent.drivers.modbus.config import (
    ModbusDevice,
    connection_advice,
    connection_problems,
    shared_link_problems,
)


def device(tags: list[dict[str, Any]], **fields: Any) -> ModbusDevice:
    return ModbusDevice.model_validate(
        {
            "name": "plc",
            "driver": "modbus",
            "host": "127.0.0.1",
            "tags": [{"hazard": "HZ01", **t} for t in tags],
            **fields,
        }
    )


def test_a_tag_wider_than_max_registers_is_refused() -> None:
    """A float64 needs 4 registers in one read; max_registers 2 cannot hold it."""
    with pytest.raises(ValueError, match="raise max_registers to at least 4"):
        device([{"tag": "T.1", "address": "hr:0", "type": "float64"}], max_registers=2)


def test_bits_do_not_count_against_max_registers() -> None:
    """Coils are bits; max_registers 1 is fine for them."""
    config = device([{"tag": "T.1", "address": "co:0", "type": "bool"}], max_registers=1)
    assert config.max_registers == 1


def test_a_value_running_past_the_last_address_is_refused() -> None:
    """A uint32 at hr:65535 would need hr:65536: the fix is an address up to hr:65534."""
    with pytest.raises(ValueError, match="uint32 takes 2 holding registers, so it starts at hr:0"):
        device([{"tag": "T.1", "address": "hr:65535", "type": "uint32"}])


# --- transports -----------------------------------------------------------------------------


def rtu(**fields: Any) -> dict[str, Any]:
    return {
        "name": "gas-rack",
        "driver": "modbus",
        "transport": "rtu",
        "serial": {"port": "/dev/ttyS1", "baudrate": 9600, "parity": "E"},
        "tags": [{"tag": "GT1", "hazard": "HZ01", "address": "ir:0"}],
        **fields,
    }


def test_an_rtu_device_needs_a_serial_line_and_no_host() -> None:
    ModbusDevice.model_validate(rtu())
    with pytest.raises(ValueError, match="needs serial"):
        ModbusDevice.model_validate(rtu(serial=None))
    with pytest.raises(ValueError, match="remove host"):
        ModbusDevice.model_validate(rtu(host="10.0.0.1"))


def test_a_tcp_device_needs_a_host_and_no_serial_line() -> None:
    with pytest.raises(ValueError, match="needs host"):
        device([{"tag": "A", "address": "hr:0"}], host=None)
    with pytest.raises(ValueError, match="remove serial"):
        device([{"tag": "A", "address": "hr:0"}], serial={"port": "/dev/ttyS1"})


def test_the_inter_frame_silence_is_3_5_characters_up_to_19200_baud() -> None:
    line = ModbusDevice.model_validate(rtu()).serial
    assert line is not None
    assert line.silence == pytest.approx(3.5 * 11 / 9600)  # an RTU character is 11 bits
    fast = ModbusDevice.model_validate(rtu(serial={"port": "/dev/ttyS1", "baudrate": 115200}))
    assert fast.serial is not None
    assert fast.serial.silence == 0.00175


def test_devices_sharing_a_link_must_agree_on_it_and_have_distinct_units() -> None:
    one = ModbusDevice.model_validate(rtu(name="a", unit=1))
    two = ModbusDevice.model_validate(rtu(name="b", unit=2))
    same_unit = ModbusDevice.model_validate(rtu(name="c", unit=1))
    other_baud = ModbusDevice.model_validate(
        rtu(name="d", unit=4, serial={"port": "/dev/ttyS1", "baudrate": 19200})
    )
    assert shared_link_problems([one, two]) == []
    assert shared_link_problems([one, same_unit]) == [
        "devices a and c are both unit 1 on /dev/ttyS1"
    ]
    assert shared_link_problems([one, other_baud]) == [
        "devices a and d share /dev/ttyS1 but not its settings (transport, serial line): "
        "give them the same"
    ]


# --- addresses and types --------------------------------------------------------------------


def test_modicon_addresses_follow_the_device_base() -> None:
    tags = [{"tag": "A", "address": 40001}, {"tag": "B", "address": "30010"}]
    assert [str(t.parsed_address) for t in device(tags).tags] == ["hr:0", "ir:9"]
    based0 = device([{"tag": "A", "address": 40001}], address_base=0)
    assert str(based0.tags[0].parsed_address) == "hr:1"


def test_40000_is_refused_under_the_modicon_base() -> None:
    with pytest.raises(ValueError, match="first holding register is 40001"):
        device([{"tag": "A", "address": 40000}])


@pytest.mark.parametrize(
    ("tag", "message"),
    [
        ({"address": "co:0", "type": "uint16"}, "single bit"),
        ({"address": "di:0", "type": "float32"}, "single bit"),
        ({"address": "hr:0.3", "type": "int16"}, "names one bit of a register"),
        ({"address": "hr:0", "type": "string"}, "a string needs length"),
        ({"address": "hr:0", "type": "int16", "length": 2}, "only a string has one"),
        ({"address": "hr:0", "type": "bool", "scale": {"multiplier": 2}}, "cannot have scale"),
        ({"address": "hr:0", "type": "string", "length": 2, "range": {"low": 0, "high": 1}},
         "cannot have range"),
        ({"address": "ir:0", "type": "int16", "current": {"raw_4ma": 0, "raw_20ma": 27648}},
         "needs range"),
        ({"address": "ir:0", "type": "int16", "current": {"raw_4ma": 0, "raw_20ma": 27648},
          "range": {"low": 0, "high": 100}, "scale": {"multiplier": 2}}, "not both"),
        ({"address": "ir:0", "scale": {"multiplier": 2, "raw": [0, 1], "eng": [0, 2]}},
         "not both"),
        ({"address": "ir:0", "scale": {"raw": [0, 1]}}, "go together"),
        ({"address": "ir:0", "range": {"low": 5, "high": 5}}, "must be below"),
    ],
)  # fmt: skip
def test_a_tag_whose_type_does_not_fit_is_refused_with_a_reason(
    tag: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        device([{"tag": "A", **tag}])


def test_a_poll_group_cannot_be_faster_than_its_device() -> None:
    with pytest.raises(ValueError, match="faster than the device's poll"):
        device([{"tag": "A", "address": "hr:0", "poll": "500ms"}], poll="1s")
    ok = device([{"tag": "A", "address": "hr:0", "poll": "10s"}], poll="1s")
    assert ok.interval_of(ok.tags[0]) == 10.0


def test_a_string_counts_its_registers_against_max_registers() -> None:
    with pytest.raises(ValueError, match="raise max_registers to at least 20"):
        device([{"tag": "A", "address": "hr:0", "type": "string", "length": 20}], max_registers=16)


# --- connections ----------------------------------------------------------------------------


def test_own_connections_get_their_own_link_and_shared_units_keep_one() -> None:
    tags = [{"tag": "T.1", "address": "hr:0"}]
    own = device(tags, unit=1, connection="own")
    shared = [device(tags, unit=u) for u in (2, 3)]
    assert own.link_key == ("tcp", "127.0.0.1:502 unit 1")
    assert {d.link_key for d in shared} == {("tcp", "127.0.0.1:502")}
    assert own.endpoint == shared[0].endpoint == "127.0.0.1:502"


def test_a_serial_line_cannot_give_a_unit_its_own_connection() -> None:
    with pytest.raises(ValueError, match="a serial line is one connection"):
        ModbusDevice.model_validate(rtu(connection="own"))


def test_more_connections_than_the_device_allows_are_refused() -> None:
    """Three own units and the shared one need 4 connections; a device allowing 3 at that
    host:port is named, with what to change."""
    tags = [{"tag": "T.1", "address": "hr:0"}]
    devices = [device(tags, name=f"u{u}", unit=u, connection="own") for u in (1, 2, 3)]
    devices.append(device(tags, name="u4", unit=4, max_connections=3))
    elsewhere = device(tags, name="other", unit=1, host="10.0.0.9", connection="own")
    assert connection_problems(enumerate(devices[:3])) == []
    assert connection_problems(enumerate([*devices, elsewhere])) == [
        (
            3,
            "127.0.0.1:502 would get 4 connections (3 own + 1 shared) but device u4 allows "
            "max_connections 3: give fewer units connection: own, or raise max_connections "
            "if the device has the slots",
        )
    ]


def test_check_warns_what_an_own_connection_costs_behind_a_gateway() -> None:
    tags = [{"tag": "T.1", "address": "hr:0"}]
    devices = [device(tags, name="u1", unit=1, connection="own"), device(tags, name="u2", unit=2)]
    (warning,) = connection_advice(devices)
    assert warning.startswith("warning: 1 unit(s) at 127.0.0.1:502 have connection: own (u1)")
    assert "adds no isolation" in warning
    assert connection_advice(devices[1:]) == []
