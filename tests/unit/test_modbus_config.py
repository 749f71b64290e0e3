"""Device configs the planner could never read are refused when the config loads."""

from __future__ import annotations

from typing import Any

import pytest

from drivers.modbus.config import ModbusDevice


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
    """A uint32 at hr:65535 would need hr:65536."""
    with pytest.raises(ValueError, match="runs past address 65535"):
        device([{"tag": "T.1", "address": "hr:65535", "type": "uint32"}])
