"""`edge-agent status`: this config's running agent on one screen, never another's.

Agents are stood in for by their status servers on this test's loop, on a port and on
the local socket as the runtime serves them; `main` runs in a thread beside them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml
from snapshots import TAKEN_MS, device_down, healthy
from stores import SyncStore

from edge_agent.cli import (
    EX_OK,
    STATUS_DEGRADED,
    STATUS_HEALTHY,
    STATUS_NOT_RUNNING,
    STATUS_OTHER_AGENT,
    main,
)
from edge_agent.config import load_config
from edge_agent.config.loader import file_digest
from edge_agent.demo.broker import free_port
from edge_agent.service.health import HealthLimits
from edge_agent.service.http import StatusServer
from edge_agent.service.local import LocalServer, socket_path
from edge_agent.service.snapshot import ActiveAlarm, Snapshot, TagSnapshot

ROOT = Path(__file__).resolve().parents[2]


def config(tmp_path: Path, port: int, *, enabled: bool = True, gateway: str = "GW-DEMO-01") -> Path:
    """config/demo.yaml as `gateway`, its store in tmp_path and metrics on 127.0.0.1:`port`."""
    data = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text(encoding="utf-8"))
    data["gateway"]["code"] = gateway
    data["store"]["path"] = str(tmp_path / f"{gateway}.db")
    data["metrics"] = {"enabled": enabled, "listen": f"127.0.0.1:{port}"}
    path = tmp_path / f"{gateway}.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


def troubled() -> Snapshot:
    """A device down, a back-log of 4 min, the uplink down, losses declared."""
    snapshot = device_down(healthy(), "plc-boiler", 300)
    store = dataclasses.replace(
        snapshot.store,
        backlog_messages=37,
        oldest_ms=TAKEN_MS - 240_000,
        bytes_on_disk=473_808,
        loss_entries=2,
        lost_items=51200,
    )
    uplink = dataclasses.replace(snapshot.uplink, connected=False, state_for_s=240, in_flight=0)
    return dataclasses.replace(snapshot, store=store, uplink=uplink)


GAS_H = ActiveAlarm("H", TAKEN_MS - 1_200_000, 27.5, 25)
GAS_HH = ActiveAlarm("HH", TAKEN_MS - 480_000, 52.0, 50)
LEVEL_FAULT = ActiveAlarm("FAULT", TAKEN_MS - 86_400_000, None)


def tag(name: str, unit: str | None, *alarms: ActiveAlarm) -> TagSnapshot:
    """A tag of /tags with these alarms active."""
    return TagSnapshot(name, "plc-tank-farm", "HZ01", None, unit, None, "-", "good", None,
                       TAKEN_MS, alarms)  # fmt: skip


class Host:
    """Agents' status servers on one host: each on the local socket of its gateway, and
    on a port when it got one."""

    def __init__(self) -> None:
        self._servers: list[StatusServer | LocalServer] = []

    async def agent(
        self,
        path: Path,
        snapshot: Snapshot,
        *,
        port: int | None = None,
        tags: tuple[TagSnapshot, ...] = (),
        socket: bool = True,
    ) -> None:
        """The agent of config `path`, as it loaded it now; on its gateway's socket unless
        another agent holds it."""
        loaded = load_config(path)
        answer = dataclasses.replace(
            snapshot, gateway=loaded.gateway.code, config_digest=file_digest(path)
        )
        server = StatusServer(
            "127.0.0.1", port or 0, lambda: answer, HealthLimits(), take_tags=lambda: tags
        )
        if port is not None:
            assert await server.start()
            self._servers.append(server)
        if socket:
            local = LocalServer(socket_path(loaded.gateway.code), server.handle)
            await local.start()
            self._servers.append(local)

    async def close(self) -> None:
        for server in self._servers:
            await server.close()


@pytest.fixture
async def host() -> AsyncIterator[Host]:
    running = Host()
    yield running
    await running.close()


class Run:
    """`edge-agent COMMAND ARGS` in a thread (the agents answer on this test's loop): its
    exit code, stdout and stderr."""

    def __init__(self, capsys: pytest.CaptureFixture[str], command: str) -> None:
        self._capsys = capsys
        self._command = command

    async def __call__(self, *args: str) -> tuple[int, str, str]:
        self._capsys.readouterr()  # what the servers logged as they started
        code = await asyncio.to_thread(main, [self._command, *args])
        out, err = self._capsys.readouterr()
        return code, out, err


@pytest.fixture
def status(capsys: pytest.CaptureFixture[str]) -> Run:
    return Run(capsys, "status")


@pytest.fixture
def top(capsys: pytest.CaptureFixture[str]) -> Run:
    return Run(capsys, "top")


def clock(ts_ms: int, pattern: str = "%H:%M") -> str:
    return time.strftime(pattern, time.localtime(ts_ms / 1000))


async def test_a_running_agent_is_summarised_on_one_screen(
    tmp_path: Path, host: Host, status: Run
) -> None:
    """Alarms by tag, newest first, with value, unit and since when; sizes for people."""
    path = config(tmp_path, free_port())
    alarms = (tag("HZ01.GT201", "%LEL", GAS_H, GAS_HH), tag("HZ01.LT101", "m", LEVEL_FAULT))
    await host.agent(path, troubled(), tags=alarms)
    code, screen, _ = await status(str(path))
    assert code == STATUS_DEGRADED
    assert screen.splitlines() == [
        "edge-agent 1.4.0 of gateway GW-DEMO-01, up 2.0 h: DEGRADED",
        "  - device plc-boiler down for 5 min",
        "  - uplink down for 4 min",
        "  - 37 messages wait in the store, oldest sampled 4 min ago",
        "clock      synced",
        "devices    1 up, 1 down: plc-boiler down for 5 min (0 failed polls, 0 reconnects)",
        "tags       40 good, 1 uncertain, 1 sensor fault",
        "alarms     3 active",
        f"           HZ01.GT201 HH 52 %LEL since {clock(GAS_HH.since_ms)}",
        f"           HZ01.GT201 H 27.5 %LEL since {clock(GAS_H.since_ms)}",
        f"           HZ01.LT101 FAULT since {clock(LEVEL_FAULT.since_ms, '%Y-%m-%d %H:%M')}",
        "back-log   37 messages wait, oldest sampled 4 min ago",
        "store      463 KiB of 2 GiB",
        "losses     2 entries, 51200 readings/events since installation",
        "uplink     DOWN for 4 min; 0 in flight; 118 acked, 0 refused; 1 connects since start",
    ]
    assert len(screen.splitlines()) <= 24, "one screen"


async def test_json_for_machines_is_the_agents_own_document_and_its_alarms(
    tmp_path: Path, host: Host, status: Run
) -> None:
    path = config(tmp_path, free_port())
    await host.agent(path, troubled(), tags=(tag("HZ01.GT201", "%LEL", GAS_H),))
    code, out, _ = await status(str(path), "--json")
    assert code == STATUS_DEGRADED
    document = json.loads(out)
    assert document["running"] is True
    assert document["answered_on"] == str(socket_path("GW-DEMO-01"))
    assert document["health"]["status"] == "degraded"
    assert document["snapshot"]["store"]["backlog_messages"] == 37
    assert document["alarms"] == [
        {"tag": "HZ01.GT201", "unit": "%LEL", **dataclasses.asdict(GAS_H)}
    ]


async def test_a_healthy_agent_exits_0_on_its_socket_or_its_port(
    tmp_path: Path, host: Host, status: Run
) -> None:
    port = free_port()
    path = config(tmp_path, port)
    await host.agent(path, healthy(), port=port)
    code, out, _ = await status(str(path))
    assert (code, out.splitlines()[0]) == (
        STATUS_HEALTHY,
        "edge-agent 1.4.0 of gateway GW-DEMO-01, up 2.0 h: OK",
    )
    socket_path("GW-DEMO-01").unlink()  # found by its port alone now
    code, out, _ = await status(str(path), "--json")
    assert (code, json.loads(out)["answered_on"]) == (STATUS_HEALTHY, f"127.0.0.1:{port}")


async def test_another_gateways_agent_on_the_port_is_not_described(
    tmp_path: Path, host: Host, status: Run
) -> None:
    """Both configs keep metrics on one port (as two defaults of 9108 would); B holds it and
    A is not running: status of A meets B there, says so, and describes nothing."""
    port = free_port()
    a, b = config(tmp_path, port, gateway="GW-A"), config(tmp_path, port, gateway="GW-B")
    await host.agent(b, healthy(), port=port)
    code, out, err = await status(str(a))
    assert (code, out) == (STATUS_OTHER_AGENT, "")
    assert f"gateway GW-B answers on 127.0.0.1:{port}, not GW-A" in err


async def test_two_agents_of_one_port_are_each_described_by_its_socket(
    tmp_path: Path, host: Host, status: Run
) -> None:
    """A could not bind the port B holds, but answers on its own socket."""
    port = free_port()
    a, b = config(tmp_path, port, gateway="GW-A"), config(tmp_path, port, gateway="GW-B")
    await host.agent(b, healthy(), port=port)
    await host.agent(a, troubled())
    code, out, _ = await status(str(a))
    assert (code, out.splitlines()[0]) == (
        STATUS_DEGRADED,
        "edge-agent 1.4.0 of gateway GW-A, up 2.0 h: DEGRADED",
    )
    code, out, _ = await status(str(b))
    assert (code, out.splitlines()[0]) == (
        STATUS_HEALTHY,
        "edge-agent 1.4.0 of gateway GW-B, up 2.0 h: OK",
    )


async def test_an_agent_of_the_file_before_an_edit_is_not_described(
    tmp_path: Path, host: Host, status: Run
) -> None:
    """The file was edited after the agent loaded it (and not reloaded)."""
    path = config(tmp_path, free_port())
    await host.agent(path, healthy())
    path.write_text(path.read_text(encoding="utf-8").replace("level1: 25", "level1: 20"))
    code, out, err = await status(str(path))
    assert (code, out) == (STATUS_OTHER_AGENT, "")
    assert "gateway GW-DEMO-01 answers on" in err
    assert "running another config file (sha256:" in err
    assert "systemctl reload edge-agent" in err


async def test_an_agent_of_the_same_gateway_from_another_file_is_not_described(
    tmp_path: Path, host: Host, status: Run
) -> None:
    """Two files of one gateway, apart only in the store: the tags' `meta` hash would be
    equal, the files' digests are not."""
    path = config(tmp_path, free_port())
    other = tmp_path / "other" / path.name
    other.parent.mkdir()
    other.write_text(path.read_text(encoding="utf-8").replace("GW-DEMO-01.db", "other.db"))
    await host.agent(other, healthy())
    code, _, err = await status(str(path))
    assert code == STATUS_OTHER_AGENT
    assert "running another config file" in err


async def test_an_agent_kept_off_its_socket_by_another_of_its_gateway_is_found_on_its_port(
    tmp_path: Path, host: Host, status: Run
) -> None:
    """The other file's agent holds the gateway's socket; this file's answers on its port."""
    port = free_port()
    path = config(tmp_path, port)
    other = tmp_path / "other" / path.name
    other.parent.mkdir()
    other.write_text(path.read_text(encoding="utf-8").replace("GW-DEMO-01.db", "other.db"))
    await host.agent(other, troubled())
    await host.agent(path, healthy(), port=port, socket=False)
    code, out, _ = await status(str(path), "--json")
    assert (code, json.loads(out)["answered_on"]) == (STATUS_HEALTHY, f"127.0.0.1:{port}")


async def test_something_else_on_the_port_is_not_described(tmp_path: Path, status: Run) -> None:
    async def not_found(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        writer.close()

    other = await asyncio.start_server(not_found, "127.0.0.1", 0)
    path = config(tmp_path, other.sockets[0].getsockname()[1])
    code, _, err = await status(str(path))
    assert code == STATUS_OTHER_AGENT
    assert "something that is not edge-agent answers" in err
    other.close()
    await other.wait_closed()


async def test_top_shows_this_configs_agent_and_no_other(
    tmp_path: Path, host: Host, top: Run
) -> None:
    """`top` asks as `status` does: B holds the shared port, A answers on its socket, and C,
    not running, meets B on the port and is shown nothing."""
    port = free_port()
    a, b, c = (config(tmp_path, port, gateway=f"GW-{name}") for name in "ABC")
    await host.agent(b, healthy(), port=port)
    await host.agent(a, troubled())
    code, out, _ = await top(str(a), "--once")
    assert code == EX_OK
    assert out.startswith("edge-agent 1.4.0 of gateway GW-A, up 2.0 h: DEGRADED ")
    assert f"from {socket_path('GW-A')}" in out
    code, out, err = await top(str(c), "--once")
    assert (code, out) == (STATUS_OTHER_AGENT, "")
    assert f"edge-agent top: not shown: gateway GW-B answers on 127.0.0.1:{port}, not GW-C" in err


def test_a_stopped_agent_is_said_so_and_the_store_file_speaks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Nothing on the socket nor on the port: exit 3, the notice on stderr, then the store."""
    port = free_port()
    SyncStore.open(tmp_path / "GW-DEMO-01.db").close()
    assert main(["status", str(config(tmp_path, port))]) == STATUS_NOT_RUNNING
    captured = capsys.readouterr()
    assert (
        f"edge-agent is not running: nothing answers ({socket_path('GW-DEMO-01')}: no socket; "
        f"127.0.0.1:{port}: refused)" in captured.err
    )
    assert "disk       " in captured.out


def test_without_a_store_a_stopped_agent_is_still_not_running(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["status", str(config(tmp_path, free_port())), "--json"]) == STATUS_NOT_RUNNING
    assert "no store yet" in capsys.readouterr().err


async def test_with_metrics_off_the_socket_still_answers(
    tmp_path: Path, host: Host, status: Run
) -> None:
    path = config(tmp_path, free_port(), enabled=False)
    code, _, err = await status(str(path), "--json")
    assert code == STATUS_NOT_RUNNING
    assert "metrics.enabled is false, so no port was asked" in err
    assert "no store yet" in err

    await host.agent(path, healthy())
    assert (await status(str(path)))[0] == STATUS_HEALTHY


def test_the_exit_codes_are_in_the_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["status", "--help"])
    text = capsys.readouterr().out
    for line in ("0  running and healthy", "1  running, degraded", "3  not running",
                 "4  something else answers"):  # fmt: skip
        assert line in text
