"""`edge-agent read`: the shipped tank-farm config against the tank-farm simulator.

The simulator runs on its own event loop in a thread (the command runs its
own with asyncio.run); the config is config/tank-farm.yaml with only the
addresses of the links changed to the simulator's. OPC UA devices have their
own tests (test_commission_opcua.py); one here is read beside the tank farm.
"""

from __future__ import annotations

import asyncio
import re
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

from edge_agent.cli import EX_OK, EX_USAGE, main
from edge_agent.drivers.simulator import Simulator, load_scenario, start_simulator

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
    # Nothing answers as unit 9: the gateway says so (exception 11), or nothing does.
    assert re.search(
        r" q=2 BAD .* (exception 11 \(GATEWAY TARGET|timeout)", " ".join(rows["HZ01.GT201"])
    )
    assert "q=0" in rows["HZ01.AT301"]
    assert "2 of 6 tags readable, 4 bad" in out


def test_guess_order_finds_the_word_swap_of_the_plc(
    plant: ThreadedSimulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The PLC stores floats CDAB; a config that says ABCD gets CDAB suggested."""
    config = pointed_at(plant, tmp_path, plc_tank_farm={"byte_order": "ABCD"})
    main(["read", str(config), "--device", "plc-tank-farm", "--guess-order", "--raw"])
    out = capsys.readouterr().out
    assert "suggested byte_order: CDAB (config says ABCD): it puts all 6 tags judged" in out
    assert "HZ01.LT102: CDAB   (ABCD=2.3413e-41, CDAB=12.25," in out


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


# A bench of three simulated devices, each showing one thing `read` must get right:
# values at and beyond the range, numbers as the wire writes them, the reason of a bad
# tag, and a device whose registers come in mixed byte orders.

LOOP = {"raw_4ma": 4000, "raw_20ma": 20000}
"""A 4-20 mA input module that reports the loop current in µA."""

BENCH_SCENARIO = {
    "devices": [
        {"name": "loop", "points": [
            {"address": "ir:0", "type": "uint16", "value": {"const": 3700}},  # 3.7 mA
            {"address": "ir:1", "type": "uint16", "value": {"const": 12000}},  # 12 mA
            {"address": "hr:0", "type": "float32", "value": {"const": 105.0}},
            {"address": "hr:2", "type": "float32", "value": {"const": 1234.5677}},
            {"address": "hr:4", "type": "uint32", "value": {"const": 123456789}},
            {"address": "hr:6", "type": "uint64", "value": {"const": 2**64 - 1}},
        ]},
        {"name": "faulty", "exception_addresses": ["hr:50"], "points": [
            {"address": "hr:0", "type": "float32", "value": {"const": 150.0}},
            {"address": "ir:0", "type": "uint16", "value": {"const": 3000}},  # 3 mA
            {"address": "hr:2", "type": "int16", "value": {"const": 32767}},
        ]},
        {"name": "mixed", "points": [
            {"address": "hr:0", "type": "float32", "byte_order": "ABCD", "value": {"const": 12.34}},
            {"address": "hr:2", "type": "float32", "byte_order": "ABCD", "value": {"const": 5.67}},
            {"address": "hr:4", "type": "float32", "byte_order": "CDAB", "value": {"const": 8.91}},
            {"address": "hr:6", "type": "float32", "byte_order": "CDAB", "value": {"const": 3.45}},
            {"address": "hr:8", "type": "float32", "byte_order": "DCBA", "value": {"const": 6.78}},
            {"address": "hr:10", "type": "float32", "byte_order": "DCBA", "value": {"const": 9.87}},
            {"address": "hr:12", "type": "float32", "value": {"const": 250.0}},  # ABCD
        ]},
    ]
}  # fmt: skip


def _tag(code: str, address: str, type_: str, **more: Any) -> dict[str, Any]:
    return {"tag": code, "hazard": "HZ01", "address": address, "type": type_, **more}


BENCH_DEVICES: list[dict[str, Any]] = [
    {"name": "loop", "tags": [
        _tag("HZ01.GT901", "ir:0", "uint16", current=LOOP, range={"low": 0, "high": 100}),
        _tag("HZ01.GT902", "ir:1", "uint16", current=LOOP, range={"low": 0, "high": 100}),
        _tag("HZ01.PT901", "hr:0", "float32", range={"low": 0, "high": 100}),
        _tag("HZ01.FT901", "hr:2", "float32", range={"low": 0, "high": 5000}),
        _tag("HZ01.FQ901", "hr:4", "uint32", scale={"multiplier": 0.0001}),
        _tag("HZ01.FQ902", "hr:6", "uint64"),
    ]},
    {"name": "faulty", "tags": [
        _tag("HZ01.PT911", "hr:0", "float32", range={"low": 0, "high": 100}),
        _tag("HZ01.GT911", "ir:0", "uint16", current=LOOP, range={"low": 0, "high": 100}),
        _tag("HZ01.PT912", "hr:50", "int16"),
        _tag("HZ01.TT911", "hr:2", "int16", scale={"multiplier": 0.1}, fault_values=[32767]),
    ]},
    {"name": "mixed", "byte_order": "ABCD", "tags": [
        _tag(f"HZ01.LT92{i}", f"hr:{2 * i}", "float32", range={"low": 0, "high": 18})
        for i in range(6)
    ] + [
        _tag("HZ01.LT926", "hr:12", "float32", range={"low": 0, "high": 18}),
    ]},
]  # fmt: skip
# HZ01.LT925 is stored DCBA but configured with a byte order of its own, CDAB.
BENCH_DEVICES[2]["tags"][5]["byte_order"] = "CDAB"


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedSimulator]:
    scenario = tmp_path_factory.mktemp("bench") / "bench.yaml"
    scenario.write_text(yaml.safe_dump(BENCH_SCENARIO), encoding="utf-8")
    simulated = ThreadedSimulator(scenario)
    yield simulated
    simulated.close()


def bench_config(bench: ThreadedSimulator, tmp_path: Path) -> Path:
    """The tank farm's gateway, uplink and store, with the bench's devices."""
    config = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))
    config["devices"] = [
        {**device, "driver": "modbus", "transport": "tcp", "host": "127.0.0.1",
         "port": bench.simulator.ports[device["name"]], "timeout": "300ms"}
        for device in BENCH_DEVICES
    ]  # fmt: skip
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def read_bench(
    bench: ThreadedSimulator, tmp_path: Path, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, str]:
    code = main(["read", str(bench_config(bench, tmp_path)), *args])
    return code, capsys.readouterr().out


def test_a_loop_at_3_7_ma_is_uncertain_as_the_agent_sends_it(
    bench: ThreadedSimulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """3.7 mA lies below 4 mA but above the NE43 band: the range's tolerance makes it q=1."""
    _, out = read_bench(bench, tmp_path, capsys, "--device", "loop")
    row = " ".join(table_rows(out)["HZ01.GT901"])
    assert "0E74 -1.875 q=1 uncertain" in row, out
    assert row.endswith(
        "3.7 mA: -1.875 is outside range 0..100, within its 10% tolerance: sent with q=1"
    )
    assert "q=0 good" in " ".join(table_rows(out)["HZ01.GT902"])


def test_uncertain_tags_are_counted_but_do_not_fail_the_read(
    bench: ThreadedSimulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """q=1 is a value the agent sends: exit 0, with the uncertain ones counted."""
    code, out = read_bench(bench, tmp_path, capsys, "--device", "loop")
    assert code == EX_OK, out
    assert "q=1 uncertain" in " ".join(table_rows(out)["HZ01.PT901"])
    assert out.rstrip().endswith("6 of 6 tags readable, 2 of them uncertain (q=1), 0 bad")


def test_a_value_beyond_the_range_s_tolerance_is_a_bad_sensor_fault(
    bench: ThreadedSimulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """150 on a 0..100 instrument: q=3 and no value, as the agent sends it; read exits 1."""
    code, out = read_bench(bench, tmp_path, capsys, "--device", "faulty")
    assert code == 1
    row = " ".join(table_rows(out)["HZ01.PT911"])
    assert "4316 0000 - q=3 BAD: sensor fault" in row, out
    assert "150.0 is beyond range 0..100 and its 10% tolerance" in row


def test_a_device_read_in_the_wrong_byte_order_fails_the_read(
    bench: ThreadedSimulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Values decoded in a wrong order land far outside their range: q=3, not 'good'."""
    code, out = read_bench(bench, tmp_path, capsys, "--device", "mixed")
    assert code == 1
    rows = table_rows(out)
    assert "q=0" in rows["HZ01.LT920"]
    assert "q=3" in rows["HZ01.LT923"], out  # -107610850.0 on a 0..18 m level


def test_values_are_written_as_the_wire_writes_them(
    bench: ThreadedSimulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A float32 as its shortest decimal, a scaled value with its scaling's decimals, a
    64-bit integer exactly; the --raw column too."""
    _, out = read_bench(bench, tmp_path, capsys, "--device", "loop", "--raw")
    rows = {tag: " ".join(cells[3:]) for tag, cells in table_rows(out).items()}
    assert rows["HZ01.FT901"].startswith("449A 522B 1234.5677 1234.5677 q=0"), out  # raw, value
    assert rows["HZ01.FQ901"].startswith("075B CD15 123456789 12345.6789 q=0")
    big = "18446744073709551615"
    assert rows["HZ01.FQ902"].startswith(f"FFFF FFFF FFFF FFFF {big} {big} q=0")
    assert rows["HZ01.GT902"].startswith("2EE0 12000 50.0 q=0")


def test_a_bad_modbus_tag_shows_the_device_s_own_reason(
    bench: ThreadedSimulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An exception response is named, not 'no answer / refused'; a loop in its NE43
    fault band shows its current, a device's fault value is named."""
    _, out = read_bench(bench, tmp_path, capsys, "--device", "faulty")
    rows = table_rows(out)
    refused = " ".join(rows["HZ01.PT912"])
    assert refused.endswith("q=2 BAD exception 2 (ILLEGAL DATA ADDRESS)"), out
    assert "no answer / refused" not in out
    assert " ".join(rows["HZ01.GT911"]).endswith("3 mA is outside 3.6..21 mA (NE43): "
                                                 "broken wire or dead transmitter")  # fmt: skip
    assert " ".join(rows["HZ01.TT911"]).endswith("q=3 BAD: sensor fault the device sends its "
                                                 "fault value 32767")  # fmt: skip


def test_guess_order_on_mixed_byte_orders_names_each_tag_s_order(
    bench: ThreadedSimulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No one order fits the device: none is suggested for it; each tag that needs
    another gets its own, the tag whose own order is wrong the right one, and the tag
    no order fits is told apart."""
    _, out = read_bench(bench, tmp_path, capsys, "--device", "mixed", "--guess-order")
    guesses = out[out.index("byte order guesses") :]
    assert "suggested byte_order" not in guesses, out
    assert "    HZ01.LT922: CDAB   (ABCD=" in guesses
    assert "    HZ01.LT925: DCBA   (ABCD=" in guesses
    assert "[its own byte_order: CDAB]" in guesses
    advice = guesses[guesses.index("  no single byte_order") :].splitlines()
    assert advice == [
        "  no single byte_order puts all 5 tags judged inside their range (the device's ABCD "
        "fits 2): keep the device's ABCD and give each tag below its own:",
        "    HZ01.LT922: byte_order: CDAB",
        "    HZ01.LT923: byte_order: CDAB",
        "    HZ01.LT924: byte_order: DCBA",
        "    HZ01.LT925: byte_order: DCBA (now CDAB)",
        "  no byte order puts HZ01.LT926 inside its range: not a byte-order problem; check "
        "address, type, scale and range",
        "",
        "4 of 7 tags readable, 1 of them uncertain (q=1), 3 bad",
    ]
