"""`edge-agent status`: the running agent's one-screen summary, or else the store file's."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml
from snapshots import TAKEN_MS, device_down, healthy
from stores import SyncStore

from edge_agent.cli import EX_NOINPUT, EX_OK, main
from edge_agent.demo.broker import free_port
from edge_agent.service.health import HealthLimits
from edge_agent.service.http import StatusServer
from edge_agent.service.snapshot import Snapshot

ROOT = Path(__file__).resolve().parents[2]


def config(tmp_path: Path, port: int, enabled: bool = True) -> Path:
    """config/demo.yaml with its store in tmp_path and metrics on 127.0.0.1:`port`."""
    data = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text(encoding="utf-8"))
    data["store"]["path"] = str(tmp_path / "store.db")
    data["metrics"] = {"enabled": enabled, "listen": f"127.0.0.1:{port}"}
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


def troubled() -> Snapshot:
    """A device down, a back-log of 4 min, the uplink down, losses declared."""
    snapshot = device_down(healthy(), "plc-boiler", 300)
    store = dataclasses.replace(
        snapshot.store,
        backlog_messages=37,
        oldest_ms=TAKEN_MS - 240_000,
        loss_entries=2,
        lost_items=51200,
    )
    uplink = dataclasses.replace(snapshot.uplink, connected=False, state_for_s=240, in_flight=0)
    return dataclasses.replace(snapshot, store=store, uplink=uplink)


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[Path]:
    """An agent's status server (on this test's loop) fed with `troubled()`; its config."""
    server = StatusServer("127.0.0.1", 0, troubled, HealthLimits())
    assert await server.start()
    yield config(tmp_path, server.port)
    await server.close()


async def test_a_running_agent_is_summarised_on_one_screen(
    running: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await asyncio.to_thread(main, ["status", str(running)]) == EX_OK
    screen = capsys.readouterr().out
    assert screen.splitlines() == [
        "edge-agent 1.4.0, up 2.0 h: DEGRADED",
        "  - device plc-boiler down for 5 min",
        "  - uplink down for 4 min",
        "  - 37 messages wait in the store, oldest sampled 4 min ago",
        "clock      synced",
        "devices    1 up, 1 down: plc-boiler down for 5 min (0 failed polls, 0 reconnects)",
        "tags       40 good, 1 uncertain, 1 sensor fault",
        "alarms     2 active: H 1, HH 1",
        "back-log   37 messages wait, oldest sampled 4 min ago",
        "store      5MiB of 2GiB",
        "losses     2 entries, 51200 readings/events since installation",
        "uplink     DOWN for 4 min; 0 in flight; 118 acked, 0 refused; 1 connects since start",
    ]
    assert len(screen.splitlines()) <= 24, "one screen"


async def test_json_for_machines_is_the_agents_own_document(
    running: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await asyncio.to_thread(main, ["status", str(running), "--json"]) == EX_OK
    document = json.loads(capsys.readouterr().out)
    assert document["running"] is True
    assert document["health"]["status"] == "degraded"
    assert document["snapshot"]["store"]["backlog_messages"] == 37


def test_a_stopped_agent_is_said_so_and_the_store_file_speaks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Nothing on the metrics port: the notice on stderr, then what status told before."""
    assert main(["status", str(config(tmp_path, free_port())), "--json"]) == EX_NOINPUT
    err = capsys.readouterr().err
    assert "edge-agent is not running (nothing answers on 127.0.0.1:" in err
    assert "no store yet" in err


def test_with_metrics_off_the_store_file_speaks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    SyncStore.open(tmp_path / "store.db").close()
    assert main(["status", str(config(tmp_path, free_port(), enabled=False)), "--json"]) == EX_OK
    captured = capsys.readouterr()
    assert "metrics.enabled is false" in captured.err
    document = json.loads(captured.out)
    assert document["running"] is False
    assert document["messages_waiting"] == 0
