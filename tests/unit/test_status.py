"""`edge-agent status`: the store read-only, beside a running agent or a stopped one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from stores import SyncStore

from edge_agent.cli import EX_NOINPUT, EX_OK, main
from edge_agent.demo.broker import free_port
from edge_agent.model import Quality, Reading

ROOT = Path(__file__).resolve().parents[2]


def config_with_store(tmp_path: Path) -> Path:
    config = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text(encoding="utf-8"))
    config["store"]["path"] = str(tmp_path / "store.db")
    # A port nobody answers on: an agent running on this machine (a demo on the
    # default 9108) must not answer for the store file under test.
    config["metrics"] = {"listen": f"127.0.0.1:{free_port()}"}
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    return path


def test_status_shows_what_waits_and_what_was_lost(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = config_with_store(tmp_path)
    store = SyncStore.open(tmp_path / "store.db", retention_s=60.0)
    for i in range(10):
        store.add_reading(Reading("HZ01.LT101", "HZ01", i * 1000, 1.0, Quality.GOOD))
    store.flush()
    store.maintain(now_ms=64_500)  # the first five are past the 60 s retention
    running = store  # status works beside a running agent: the store stays open

    assert main(["status", str(config), "--json"]) == EX_OK
    status = json.loads(capsys.readouterr().out)
    assert status["readings_waiting"] == 5
    assert status["oldest_waiting_ms"] == 5000
    assert status["losses_total"] == {"entries": 1, "items": 5}

    assert main(["status", str(config)]) == EX_OK
    screen = capsys.readouterr().out
    assert "5 readings" in screen
    assert "older than the store retention: readings; 5 items sampled" in screen
    running.close()


def test_status_without_a_store_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", str(config_with_store(tmp_path))]) == EX_NOINPUT
    assert "no store yet" in capsys.readouterr().err
