"""The shipped underground mine (config/underground-mine.yaml) as the tests run it.

Its OPC UA simulator runs as `edge-agent simulate` in its own process, so stopping
it and starting it again on the same port is a real server restart (sessions and
subscriptions gone). The device is the shipped config's, pointed at loopback
without security (the security modes have their own tests), with short timings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from edge_agent.demo.platform import Received

ROOT = Path(__file__).resolve().parents[1]
SCENARIO = ROOT / "drivers" / "simulator" / "scenarios" / "underground-mine.yaml"


def simulate_args(port: int) -> tuple[str, ...]:
    """`edge-agent` arguments that serve the mine's OPC UA server on 127.0.0.1:`port`."""
    return ("simulate", str(SCENARIO), "--port", f"ua-mine-vent={port}")


def mine_device(port: int, **overrides: Any) -> dict[str, Any]:
    config = yaml.safe_load((ROOT / "config" / "underground-mine.yaml").read_text("utf-8"))
    device: dict[str, Any] = config["devices"][0]
    for key in ("security", "username_file", "password_file"):
        device.pop(key)
    return {
        **device,
        "endpoint": f"opc.tcp://127.0.0.1:{port}",
        "poll": "500ms",
        "publishing_interval": "200ms",
        "comm_alarm_after": "1s",
        "reconnect_min": "200ms",
        "reconnect_max": "1s",
        **overrides,
    }


def items(messages: list[Received], kind: str) -> list[dict[str, Any]]:
    """Every item of every message of `kind` (rt, alarm, stat), in arrival order."""
    return [i for m in messages if m.kind == kind for i in m.body["items"]]
