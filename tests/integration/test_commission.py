"""`edge-agent read`: the shipped tank-farm config against the tank-farm simulator.

The simulator runs on its own event loop in a thread (the command runs its
own with asyncio.run); the config is config/tank-farm.yaml with only the
addresses of the links changed to the simulator's. OPC UA devices have their
own tests (test_commission_opcua.py); one here is read beside the tank farm.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest
import structlog
import yaml
from opcua_helpers import tag
from opcua_sim import (
    NAMESPACE,
    Sim,
    opcua_sim_fixture,  # noqa: F401  # registers the fixture opcua_sim
)

from drivers.simulator import Simulator, load_scenario, start_simulator
from edge_agent.cli import EX_OK, EX_USAGE, main

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config" / "tank-farm.yaml"
SCENARIO = ROOT / "drivers" / "simulator" / "scenarios" / "tank-farm.yaml"


class ThreadedSimulator:
    """A scenario served on an event loop in a thread."""

    def __init__(self, scenario: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.simulator: Simulator = self.call(start_simulator(load_scenario(scenario)))

    def call(self, coroutine: Any) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        return future.result(timeout=10)

    def close(self) -> None:
        self.call(self.simulator.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture(autouse=True)
def unconfigured_logging() -> Iterator[None]:
    """`read` configures structlog onto the captured stderr; undo it for the tests after."""
    yield
    structlog.reset_defaults()


@pytest.fixture(scope="module")
def plant() -> Iterator[ThreadedSimulator]:
    simulated = ThreadedSimulator(SCENARIO)
    yield simulated
    simulated.close()


def pointed_at(plant: ThreadedSimulator, tmp_path: Path, **changes: Any) -> Path:
    """config/tank-farm.yaml with its links moved to the simulator; `changes` per device."""
    config = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))
    ports = plant.simulator.ports
    serial = plant.simulator.serial_port("gas-bus")
    for device in config["devices"]:
        if device["transport"] == "rtu":
            # A pseudo-terminal refuses parity (EINVAL): the simulated line runs 8N1.
            device["serial"] = {**device["serial"], "port": serial, "parity": "N"}
        else:
            device["host"] = "127.0.0.1"
            device["port"] = ports[device["name"]]
        device["timeout"] = "300ms"
        device.update(changes.get(device["name"].replace("-", "_"), {}))
    path = tmp_path / "tank-farm.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def table_rows(out: str) -> dict[str, list[str]]:
    rows = {}
    for line in out.splitlines():
        cells = line.split()
        if cells and cells[0].startswith("HZ01."):
            rows[cells[0]] = cells
    return rows


def test_read_prints_every_tag_of_the_tank_farm_and_exits_0(
    plant: ThreadedSimulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["read", str(pointed_at(plant, tmp_path))])
    out = capsys.readouterr().out
    assert code == EX_OK, out
    rows = table_rows(out)
    config = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))
    assert set(rows) == {t["tag"] for d in config["devices"] for t in d["tags"]}
    assert rows["HZ01.LT102"][1:5] == ["hr:10", "float32", "0000", "4144"]  # 12.25, CDAB
    assert "12.25" in rows["HZ01.LT102"]
    assert "'TANKFARM_V3.2'" in rows["HZ01.PLCPRG"]
    assert "q=0" in rows["HZ01.GT101"]
    assert "HH=50 H=25 range 0..100" in out
    assert out.rstrip().endswith(f"{len(rows)} of {len(rows)} tags readable, 0 bad")


def test_a_dead_link_makes_read_exit_1_and_says_why(
    plant: ThreadedSimulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = pointed_at(plant, tmp_path, gas_ctrl_b={"unit": 9})  # nothing answers as unit 9
    code = main(["read", str(config), "--device", "gas-ctrl-b", "--device", "ai-gas-2"])
    out = capsys.readouterr().out
    assert code == 1
    rows = table_rows(out)
    assert set(rows) == {"HZ01.GT201", "HZ01.GT202", "HZ01.GT203", "HZ01.GAS.B.FAULT",
                         "HZ01.AT201", "HZ01.AT301"}  # fmt: skip
    assert "BAD: no answer / refused" in " ".join(rows["HZ01.GT201"])
    assert "q=0" in rows["HZ01.AT301"]
    assert "2 of 6 tags readable, 4 bad" in out


def test_guess_order_finds_the_word_swap_of_the_plc(
    plant: ThreadedSimulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The PLC stores floats CDAB; a config that says ABCD gets CDAB suggested."""
    config = pointed_at(plant, tmp_path, plc_tank_farm={"byte_order": "ABCD"})
    main(["read", str(config), "--device", "plc-tank-farm", "--guess-order", "--raw"])
    out = capsys.readouterr().out
    assert "suggested byte_order: CDAB (config says ABCD)" in out
    assert "HZ01.LT102: CDAB   (ABCD=2.34129e-41, CDAB=12.25," in out


def test_read_names_an_unknown_device(
    plant: ThreadedSimulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["read", str(pointed_at(plant, tmp_path)), "--device", "nope"]) == EX_USAGE
    assert "no device named nope" in capsys.readouterr().err


@pytest.mark.asyncio(loop_scope="session")
async def test_modbus_and_opcua_devices_are_read_together_and_counted_together(
    plant: ThreadedSimulator, opcua_sim: Sim, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The tank farm and an OPC UA server in one config: every table in config order, one
    count; --raw and --guess-order shape the Modbus tables only."""
    path = pointed_at(plant, tmp_path)
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    ua_tags = [tag("MINE1.CO", "s=Mine.Vent.CO", unit="ppm"), tag("MINE1.I32", "s=Mine.Vent.I32")]
    endpoint = opcua_sim.endpoint("plant")
    config["devices"].append({"name": "ua-vent", "driver": "opcua", "endpoint": endpoint,
                              "namespace": NAMESPACE, "tags": ua_tags})  # fmt: skip
    path.write_text(yaml.safe_dump(config, allow_unicode=True, sort_keys=False), encoding="utf-8")
    # The command runs its own event loop; the OPC UA simulator serves on this one meanwhile.
    code = await asyncio.to_thread(main, ["read", str(path), "--raw", "--guess-order"])
    out = capsys.readouterr().out
    assert code == EX_OK, out
    headers = [line.split()[0] for line in out.splitlines() if line and not line.startswith(" ")]
    assert headers[:-1] == [d["name"] for d in config["devices"]]
    ua_table = out[out.index("ua-vent  (opcua") :].splitlines()
    assert ua_table[1].split() == ["tag", "node", "type", "value", "unit", "quality", "limits",
                                   "reason"]  # fmt: skip
    assert ua_table[2].split()[:6] == ["MINE1.CO", "s=Mine.Vent.CO", "->", "ns=2;s=Mine.Vent.CO",
                                       "Double", "4.5"]  # fmt: skip
    assert ua_table[3].split()[4:6] == ["Int32", "-320000"]
    assert ua_table[4] == ""  # neither a raw value column nor byte-order guesses
    total = sum(len(d["tags"]) for d in config["devices"])
    assert out.rstrip().endswith(f"{total} of {total} tags readable, 0 bad")
