"""Prints what the platform receives, one readable line per message."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import Any, TextIO

from edge_agent.config import load_config
from edge_agent.demo.platform import Received

_QUALITY = {0: "", 1: "?", 2: " [no comm]", 3: " [sensor fault]", 4: " [config]"}


class View:
    def __init__(self, config: Path, out: TextIO = sys.stdout) -> None:
        agent = load_config(config)
        self._units = {t.tag: t.unit or "" for d in agent.devices for t in d.tags}
        self._out = out
        self._lock = threading.Lock()
        self._colour = out.isatty()

    def banner(self, broker_port: int, plc_port: int, workdir: Path) -> None:
        self._print(
            f"demo: Mosquitto on 127.0.0.1:{broker_port}, simulated PLC on 127.0.0.1:{plc_port}, "
            f"logs in {workdir}; Ctrl-C stops"
        )

    def note(self, text: str) -> None:
        self._print(f"demo: {text}", highlight=True)

    def show(self, msg: Received) -> None:
        body = msg.body
        if msg.kind == "state":
            self._print(self._state(body))
        elif msg.kind == "rt":
            self._print(self._readings(body))
        elif msg.kind == "alarm":
            for item in body["items"]:
                self._print(self._alarm(body, item), highlight=item["state"] == "raised")

    def _state(self, body: dict[str, Any]) -> str:
        if not body.get("online"):
            return "state    gateway OFFLINE"
        devices = ", ".join(f"{k}={v}" for k, v in body.get("devices", {}).items())
        return f"state    online, backlog {body.get('backlog')} messages, devices: {devices}"

    def _readings(self, body: dict[str, Any]) -> str:
        latest: dict[str, str] = {}
        for item in body["items"]:
            latest[item["tag"]] = self._value(item)
        hist = " (back-fill)" if body["hist"] else ""
        shown = "  ".join(f"{tag}={value}" for tag, value in latest.items())
        return f"rt       seq {body['seq']:>5}{hist}  {len(body['items'])} readings  {shown}"

    def _alarm(self, body: dict[str, Any], item: dict[str, Any]) -> str:
        unit = self._units.get(item["tag"], "")
        limit = f" (limit {item['limit']} {unit})" if "limit" in item else ""
        latency = time.time() - item["ts"] / 1000
        return (
            f"ALARM    seq {body['seq']:>5}  {item['state'].upper():7} {item['kind']:2} "
            f"{item['tag']} = {item['v']} {unit}{limit}  id {item['id'][:8]}  "
            f"(received {latency * 1000:.0f} ms after the sample)"
        )

    def _value(self, item: dict[str, Any]) -> str:
        value = item["v"]
        if isinstance(value, float):
            value = f"{value:.2f}"
        return f"{value}{self._units.get(item['tag'], '')}{_QUALITY.get(item['q'], '')}"

    def _print(self, line: str, highlight: bool = False) -> None:
        stamp = time.strftime("%H:%M:%S")
        if highlight and self._colour:
            line = f"\x1b[1;31m{line}\x1b[0m"
        with self._lock:
            print(f"{stamp}  {line}", file=self._out, flush=True)
