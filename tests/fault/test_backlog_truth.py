"""What waits is told while the broker is away: /metrics, /healthz and `edge-agent status`
count everything stored during an outage and before the first connect, within seconds."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import Rig, agent_config, counter_device, reporting_every_poll
from delivery import counter_readings

from edge_agent.cli import STATUS_DEGRADED
from edge_agent.demo.broker import free_port

pytestmark = pytest.mark.fault

WITHIN_S = 15.0
"""Well inside one `state` interval (60 s)."""


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def metric(text: str, name: str) -> float:
    line = next(line for line in text.splitlines() if line.startswith(name + " "))
    return float(line.split()[1])


def wait_for_backlog(listen: str) -> str:
    """The /metrics text once it counts messages waiting and their age."""
    deadline = time.monotonic() + WITHIN_S
    while True:
        try:
            _, body = get(f"http://{listen}/metrics")
        except urllib.error.URLError:  # not listening yet
            body = b""
        text = body.decode()
        if text and (
            metric(text, "edge_agent_store_backlog_messages") > 0
            and metric(text, "edge_agent_store_oldest_age_seconds") > 1
        ):
            return text
        assert time.monotonic() < deadline, text or "nothing listens"
        time.sleep(0.5)


def status_of(config: Path) -> dict[str, Any]:
    """`status --json` of an agent whose broker is away: degraded, so exit 1."""
    done = subprocess.run(
        [sys.executable, "-m", "edge_agent", "status", str(config), "--json"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == STATUS_DEGRADED, done.stderr
    document: dict[str, Any] = json.loads(done.stdout)
    return document


def assert_everything_tells_what_waits(config: Path) -> None:
    listen = yaml.safe_load(config.read_text())["metrics"]["listen"]
    wait_for_backlog(listen)
    code, body = get(f"http://{listen}/healthz")
    health = json.loads(body)
    assert code in (200, 503)
    assert any("messages wait in the store" in reason for reason in health["reasons"]), health
    status = status_of(config)
    assert status["running"] is True
    assert status["snapshot"]["store"]["backlog_messages"] > 0
    assert status["snapshot"]["store"]["oldest_ms"] is not None


def test_during_an_outage_the_back_log_is_told_by_every_means(rig: Rig) -> None:
    sim = rig.plant([{"address": "hr:0", "type": "uint32", "value": {"counter": {}}}])
    device = reporting_every_poll(counter_device(sim.port, 0.2, level=False))
    config = rig.agent_config([device])
    agent = rig.spawn("agent", "run", str(config))
    rig.platform.wait_for(lambda ms: len(counter_readings(ms, "HZ01.CNT")) >= 3, 15, "readings")
    rig.broker.stop()
    assert_everything_tells_what_waits(config)
    assert agent.terminate() == 0


def test_before_the_first_connect_the_back_log_is_told_too(tmp_path: Path, rig: Rig) -> None:
    sim = rig.plant([{"address": "hr:0", "type": "uint32", "value": {"counter": {}}}])
    device = reporting_every_poll(counter_device(sim.port, 0.2, level=False))
    config = agent_config(tmp_path, free_port(), [device])  # no broker ever answers there
    agent = rig.spawn("agent", "run", str(config))
    assert_everything_tells_what_waits(config)
    assert agent.terminate() == 0
