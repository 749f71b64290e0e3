"""`edge-agent read` on OPC UA devices, against the session's OPC UA simulator (opcua_sim.py).

The command runs its own event loop (asyncio.run), so each test runs it in a
thread while the simulator keeps serving on the session's loop.
"""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import agent_config
from opcua_helpers import tag
from opcua_sim import (
    NAMESPACE,
    Sim,
    opcua_sim_fixture,  # noqa: F401  # registers the fixture opcua_sim
)

from edge_agent.cli import EX_OK, main
from edge_agent.demo.broker import free_port

pytestmark = pytest.mark.asyncio(loop_scope="session")


def ua_device(endpoint: str, tags: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
    return {
        "name": "ua-vent",
        "driver": "opcua",
        "endpoint": endpoint,
        "namespace": NAMESPACE,
        "timeout": "500ms",
        "connect_timeout": "1s",
        "tags": tags,
        **fields,
    }


async def read(tmp_path: Path, device: dict[str, Any]) -> int:
    """`edge-agent read` of a config holding `device` (its uplink is never contacted)."""
    config = agent_config(tmp_path, 1883, [device])
    return await asyncio.to_thread(main, ["read", str(config)])


def table_rows(out: str) -> dict[str, list[str]]:
    return {
        cells[0]: cells
        for line in out.splitlines()
        if (cells := line.split()) and cells[0].startswith("MINE1.")
    }


@pytest.mark.parametrize("mode", ["poll", "subscribe"])
async def test_read_prints_a_row_per_opcua_tag_and_exits_0(
    opcua_sim: Sim, tmp_path: Path, capsys: pytest.CaptureFixture[str], mode: str
) -> None:
    """Every addressing form, read by Read in either mode (in batches: the plant's
    MaxNodesPerRead is 3); the uncertain tag does not make the exit code 1."""
    tags = [
        tag("MINE1.CO", "s=Mine.Vent.CO", type="Double", unit="ppm",
            range={"low": 0, "high": 500}, limits={"H": 24}),
        tag("MINE1.COUNT", "Mine/Vent/COUNT"),
        tag("MINE1.I32", f"nsu={NAMESPACE};s=Mine.Vent.I32"),
        tag("MINE1.ARR", "s=Mine.Vent.ARR", type="Double[]", index=1),
        tag("MINE1.UNSURE", "s=Mine.Vent.UNSURE"),
        tag("MINE1.U64", "s=Mine.Vent.U64"),
    ]  # fmt: skip
    endpoint = opcua_sim.endpoint("plant")
    code = await read(tmp_path, ua_device(endpoint, tags, mode=mode))
    out = capsys.readouterr().out
    assert code == EX_OK, out
    assert out.startswith(f"ua-vent  (opcua {endpoint} security None)\n"), out
    rows = table_rows(out)
    assert rows["MINE1.CO"][1:8] == [
        "s=Mine.Vent.CO", "->", "ns=2;s=Mine.Vent.CO", "Double", "4.5", "ppm", "q=0",
    ]  # fmt: skip
    assert "H=24 range 0..500" in out
    assert rows["MINE1.COUNT"][1:5] == [
        "/Mine/Vent/COUNT",
        "->",
        "ns=2;s=Mine.Vent.COUNT",
        "UInt32",
    ]
    assert rows["MINE1.I32"][1:7] == [
        f"nsu={NAMESPACE};s=Mine.Vent.I32", "->", "ns=2;s=Mine.Vent.I32", "Int32", "-320000", "q=0",
    ]  # fmt: skip
    assert rows["MINE1.ARR"][1:7] == [
        "s=Mine.Vent.ARR[1]", "->", "ns=2;s=Mine.Vent.ARR", "Double[3]", "7.0", "q=0",
    ]  # fmt: skip
    assert rows["MINE1.UNSURE"][6:8] == ["q=1", "uncertain"]
    # Without `type` too, a 64-bit integer is written as the wire sends it: its digits.
    assert rows["MINE1.U64"][4:6] == ["UInt64", "9223372036854775813"]
    assert out.rstrip().endswith("6 of 6 tags readable, 1 of them uncertain (q=1), 0 bad")


async def test_bad_nodes_are_shown_bad_with_their_reason_and_exit_1(
    opcua_sim: Sim, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A wrong NodeId, a browse path that leads nowhere, a type mismatch and a sensor the
    server calls failed, among a good tag: each bad with the reason, the good one read."""
    tags = [
        tag("MINE1.CO", "s=Mine.Vent.CO"),
        tag("MINE1.NOPE", "s=Mine.Vent.NOPE"),
        tag("MINE1.LOST", "Mine/Vent/NOPE"),
        tag("MINE1.INT", "s=Mine.Vent.CO", type="Int32"),
        tag("MINE1.BAD", "s=Mine.Vent.BAD"),
    ]
    code = await read(tmp_path, ua_device(opcua_sim.endpoint("plant"), tags))
    out = capsys.readouterr().out
    assert code == 1, out
    lines = {cells[0]: " ".join(cells) for line in out.splitlines() if (cells := line.split())}
    assert "q=0 good" in lines["MINE1.CO"]
    assert lines["MINE1.NOPE"].endswith("q=4 BAD: configuration BadNodeIdUnknown")
    assert lines["MINE1.LOST"].endswith("browse path /Mine/Vent/NOPE not found (BadNoMatch)")
    assert "Double" in lines["MINE1.INT"]  # what the server holds, beside the reason
    assert lines["MINE1.INT"].endswith("type mismatch: the node holds Double, not Int32")
    assert lines["MINE1.BAD"].endswith("q=3 BAD: sensor fault BadSensorFailure")
    assert out.rstrip().endswith("1 of 5 tags readable, 4 bad")


def _untrusted(sim: Sim, tmp_path: Path, tags: list[dict[str, Any]]) -> dict[str, Any]:
    """The secure server, with a trust list holding another server's certificate."""
    trust = tmp_path / "trust"
    trust.mkdir()
    certificate = sim.simulator["outage"].certificate
    assert certificate is not None
    (trust / "outage.der").write_bytes(certificate)
    security = {
        "policy": "Basic256Sha256",
        "mode": "SignAndEncrypt",
        "certificate": str(sim.client_cert),
        "private_key": str(sim.client_key),
        "trust_dir": str(trust),
    }
    return ua_device(sim.endpoint("secure"), tags, security=security)


@pytest.mark.parametrize(
    ("server", "reason"),
    [
        ("closed port", "cannot connect: connection refused"),
        ("silent", "cannot connect: timed out"),
        ("untrusted", "is not in the trust list"),
    ],
)
async def test_a_server_that_cannot_be_read_says_why_at_once_and_exits_1(
    opcua_sim: Sim, tmp_path: Path, capsys: pytest.CaptureFixture[str], server: str, reason: str
) -> None:
    """Header, one line with the reason, every tag bad; a silent server costs connect_timeout."""
    tags = [tag("MINE1.CO", "s=Mine.Vent.CO"), tag("MINE1.COUNT", "s=Mine.Vent.COUNT")]
    with socket.socket() as silent:  # accepts connections (the kernel does) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        device = {
            "closed port": ua_device(f"opc.tcp://127.0.0.1:{free_port()}", tags),
            "silent": ua_device(f"opc.tcp://127.0.0.1:{silent.getsockname()[1]}", tags),
            "untrusted": _untrusted(opcua_sim, tmp_path, tags),
        }[server]
        started = time.monotonic()
        code = await read(tmp_path, device)
        took = time.monotonic() - started
    out = capsys.readouterr().out
    assert code == 1, out
    header, line = out.splitlines()[:2]
    assert header.startswith(f"ua-vent  (opcua {device['endpoint']} security ")
    assert line.startswith("  cannot connect: ")
    assert reason in line
    assert line.endswith("(2 tags not read)")
    assert out.rstrip().endswith("0 of 2 tags readable, 2 bad")
    assert took < 3.0  # connect_timeout 1s, then at most timeout 0.5s to close
