"""`edge-agent status`: the store read-only, beside a running agent or a stopped one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from snapshots import TAKEN_MS, healthy
from stores import SyncStore

from edge_agent.ask import Running
from edge_agent.cli import STATUS_NOT_RUNNING, main
from edge_agent.demo.broker import free_port
from edge_agent.model import Quality, Reading
from edge_agent.status import ALARM_LINES, human_size, render_running

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

    assert main(["status", str(config), "--json"]) == STATUS_NOT_RUNNING
    status = json.loads(capsys.readouterr().out)
    assert status["readings_waiting"] == 5
    assert status["oldest_waiting_ms"] == 5000
    assert status["losses_total"] == {"entries": 1, "items": 5}

    assert main(["status", str(config)]) == STATUS_NOT_RUNNING
    screen = capsys.readouterr().out
    assert "5 readings" in screen
    assert "older than the store retention: readings; 5 items sampled" in screen
    running.close()


def test_status_without_a_store_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", str(config_with_store(tmp_path))]) == STATUS_NOT_RUNNING
    assert "no store yet" in capsys.readouterr().err


def test_sizes_are_written_for_people() -> None:
    sizes = [512, 1536, 473_808, 5 * 1024**2, 2 * 1024**3, 3 * 1024**5]
    assert [human_size(size) for size in sizes] == [
        "512 B", "1.5 KiB", "463 KiB", "5 MiB", "2 GiB", "3072 TiB",
    ]  # fmt: skip


def test_a_screen_lists_the_newest_alarms_and_counts_the_rest() -> None:
    alarms = [
        {"kind": "H", "since_ms": TAKEN_MS - i * 60_000, "value": i, "limit": 0}
        for i in range(ALARM_LINES + 2)
    ]
    tags = {
        "tags": [{"tag": f"HZ01.T{i}", "unit": None, "alarms": [a]} for i, a in enumerate(alarms)]
    }
    document = {"snapshot": healthy().as_json(), "health": {"status": "ok", "reasons": []}}
    screen = render_running(Running(document, "here", tags)).splitlines()
    listed = [line.split()[0] for line in screen if line.startswith("           HZ01.")]
    assert listed == [f"HZ01.T{i}" for i in range(ALARM_LINES)]
    assert f"alarms     {ALARM_LINES + 2} active" in screen
    assert "           and 2 more (--json lists them all)" in screen
