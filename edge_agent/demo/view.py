"""Prints what the platform receives, one readable line per message, and a closing summary.

Values are rounded as the tag suggests (its scaling's decimals, else its unit's
usual precision), alarm kinds are named as the config names them (a gas
detector's level1/level2, the uplink's H/HH), and quality marks are explained
once, in a legend at the start.
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import yaml

from edge_agent.config import load_config
from edge_agent.demo.platform import Received

_QUALITY = {0: "", 1: "?", 2: " [no comm]", 3: " [sensor fault]", 4: " [config]"}
LEGEND = (
    "quality marks: ? doubtful (q=1: out of range, or the clock is not synchronised), "
    "[no comm] no answer from the device (q=2), [sensor fault] (q=3), [config] (q=4)"
)
UNIT_DECIMALS = {"%LEL": 1, "%VOL": 1, "%": 1, "°C": 1, "℃": 1, "ppm": 0, "MPa": 3, "kPa": 1}
"""Decimals a unit is usually read to, for a float without scaling or `decimals`."""
FLOAT_DECIMALS = 2
GAS_LEVELS = {"H": "level1", "HH": "level2"}


@dataclass
class Tally:
    """What the demo's platform received, for the closing summary."""

    readings: int = 0
    backfill: int = 0
    raised: int = 0
    cleared: int = 0
    outages: int = 0
    seqs: set[int] = field(default_factory=set)


class View:
    def __init__(self, config: Path, out: TextIO = sys.stdout) -> None:
        agent = load_config(config)
        tags = [t for d in agent.devices for t in d.tags]
        self._units = {t.tag: t.unit or "" for t in tags}
        self._decimals = {
            t.tag: _decimals(t.number_format.decimals, t.unit, t.value_type) for t in tags
        }
        self._kind_names = _kind_names(config)
        self._out = out
        self._lock = threading.Lock()
        self._colour = out.isatty()
        self._online: bool | None = None
        self.tally = Tally()

    def banner(self, broker_port: int, plc_port: int, workdir: Path) -> None:
        self._print(
            f"demo: Mosquitto on 127.0.0.1:{broker_port}, simulated PLC on 127.0.0.1:{plc_port}, "
            f"logs in {workdir}; Ctrl-C stops"
        )
        self._print(f"demo: {LEGEND}")

    def note(self, text: str) -> None:
        self._print(f"demo: {text}", highlight=True)

    def show(self, msg: Received) -> None:
        body = msg.body
        if msg.kind in ("rt", "alarm", "stat"):
            self.tally.seqs.add(body["seq"])
        if msg.kind == "state":
            line = self._state(body)
            if line is not None:
                self._print(line)
        elif msg.kind == "rt":
            self.tally.readings += len(body["items"])
            self.tally.backfill += len(body["items"]) if body["hist"] else 0
            self._print(self._readings(body))
        elif msg.kind == "alarm":
            for item in body["items"]:
                raised = item["state"] == "raised"
                self.tally.raised += raised
                self.tally.cleared += not raised
                self._print(self._alarm(body, item), highlight=raised)

    def summary(self) -> None:
        """The closing lines: what arrived, and whether any `seq` is missing."""
        t = self.tally
        self._print(
            f"demo: {t.readings} readings ({t.backfill} back-filled after "
            f"{t.outages} outage{'s' if t.outages != 1 else ''}), "
            f"alarms {t.raised} raised and {t.cleared} cleared"
        )
        if t.seqs:
            missing = set(range(min(t.seqs), max(t.seqs) + 1)) - t.seqs
            gaps = f"{len(missing)} missing" if missing else "no gap"
            self._print(f"demo: seq {min(t.seqs)}-{max(t.seqs)}, {gaps}")

    def _state(self, body: dict[str, Any]) -> str | None:
        """A line when the gateway's state says something new: an outage once, not once per
        copy of the offline state (the will, the retained copy after a restart)."""
        online = bool(body.get("online"))
        was, self._online = self._online, online
        if not online:
            if was is False:
                return None
            self.tally.outages += 1
            return "state    gateway OFFLINE"
        devices = ", ".join(f"{k}={v}" for k, v in body.get("devices", {}).items())
        clock = "; clock unsynced: readings carry ?" if body.get("clock") == "unsynced" else ""
        return f"state    online, backlog {body.get('backlog')} messages, devices: {devices}{clock}"

    def _readings(self, body: dict[str, Any]) -> str:
        latest: dict[str, str] = {}
        for item in body["items"]:
            latest[item["tag"]] = self._value(item["tag"], item["v"]) + _QUALITY.get(item["q"], "")
        hist = " (back-fill)" if body["hist"] else ""
        shown = "  ".join(f"{tag}={value}" for tag, value in latest.items())
        return f"rt       seq {body['seq']:>5}{hist}  {len(body['items'])} readings  {shown}"

    def _alarm(self, body: dict[str, Any], item: dict[str, Any]) -> str:
        tag = item["tag"]
        limit = f" (limit {self._value(tag, item['limit'])})" if "limit" in item else ""
        kind = self._kind_names.get(tag, {}).get(item["kind"], item["kind"])
        latency = time.time() - item["ts"] / 1000
        return (
            f"ALARM    seq {body['seq']:>5}  {item['state'].upper():7} {kind:6} "
            f"{tag} = {self._value(tag, item['v'])}{limit}  id {item['id'][:8]}  "
            f"(received {latency * 1000:.0f} ms after the sample)"
        )

    def _value(self, tag: str, value: object) -> str:
        """A value with its unit, rounded as the tag suggests; `no value` for null."""
        if value is None:
            return "no value"
        unit = self._units.get(tag, "")
        if isinstance(value, float):
            value = f"{value:.{self._decimals.get(tag, FLOAT_DECIMALS)}f}"
        return f"{value} {unit}" if unit else f"{value}"

    def _print(self, line: str, highlight: bool = False) -> None:
        stamp = time.strftime("%H:%M:%S")
        if highlight and self._colour:
            line = f"\x1b[1;31m{line}\x1b[0m"
        with self._lock:
            print(f"{stamp}  {line}", file=self._out, flush=True)


def _decimals(scaled: int | None, unit: str | None, value_type: str | None) -> int:
    if scaled is not None:
        return scaled
    if value_type is not None and "int" in value_type:
        return 0
    return UNIT_DECIMALS.get(unit or "", FLOAT_DECIMALS)


def _kind_names(config: Path) -> dict[str, dict[str, str]]:
    """Per tag, how its config names the uplink's H and HH: level1/level2 for a gas
    detector written that way (the loader keeps only H/HH)."""
    raw = yaml.safe_load(config.read_text())
    names: dict[str, dict[str, str]] = {}
    for device in raw.get("devices", []):
        for tag in device.get("tags", []):
            limits = tag.get("limits") or {}
            if "level1" in limits or "level2" in limits:
                names[tag["tag"]] = GAS_LEVELS
    return names
