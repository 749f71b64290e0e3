"""`edge-agent status`: the running agent's own account, or failing that the store file's.

- `fetch_running(listen)`: the running agent's /status (service/http.py), or
  None when nothing answers; `render_running` makes it one screen.
- `read_status(path)`: what the store holds and what was lost, from the file.
  It opens the store read-only and takes no lock, so it works beside a running
  agent (WAL readers never block the writer) and on a stopped gateway alike.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edge_agent.config.service import Listen
from edge_agent.config.types import format_size
from edge_agent.service.health import duration
from edge_agent.store import ledger
from edge_agent.store.capacity import file_bytes
from edge_agent.store.hwm import HighWaterMark


@dataclass
class StoreStatus:
    path: str
    bytes_on_disk: int
    max_size: int
    messages_waiting: int
    readings_waiting: int
    alarms_waiting: int
    oldest_waiting_ms: int | None
    next_seq: int
    seq_mark: int
    losses: list[dict[str, Any]] = field(default_factory=list)
    losses_total: dict[str, int] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def read_status(path: Path, max_size: int) -> StoreStatus:
    """Raises FileNotFoundError when there is no store yet."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: no store yet (the agent creates it on its first start)")
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        count = _waiting(db)
        oldest = [
            row[0]
            for row in (
                db.execute("SELECT min(oldest) FROM message").fetchone(),
                db.execute("SELECT ts FROM reading ORDER BY id LIMIT 1").fetchone(),
                db.execute("SELECT ts FROM event ORDER BY id LIMIT 1").fetchone(),
            )
            if row is not None and row[0] is not None
        ]
        (next_seq,) = db.execute("SELECT value FROM counter WHERE name = 'next_seq'").fetchone()
        entries, totals = ledger.entries(db, newest=10), ledger.totals(db)
    mark_path = path.with_name(path.name + ".seq")
    mark = HighWaterMark(mark_path) if mark_path.exists() else None
    status = StoreStatus(
        path=str(path),
        bytes_on_disk=file_bytes(path),
        max_size=max_size,
        messages_waiting=count["message"],
        readings_waiting=count["reading"],
        alarms_waiting=count["event"],
        oldest_waiting_ms=min(oldest) if oldest else None,
        next_seq=next_seq,
        seq_mark=mark.value if mark else 0,
        losses=[loss.as_json() for loss in entries],
        losses_total={"entries": totals.entries, "items": totals.items},
    )
    if mark:
        mark.close()
    return status


def _waiting(db: sqlite3.Connection) -> dict[str, int]:
    """What waits, from the counts the store keeps (schema 4); a store an older agent left
    is counted row by row."""
    counters = dict(db.execute("SELECT name, value FROM counter").fetchall())
    kept = {"message": "messages", "reading": "readings", "event": "events"}
    if all(name in counters for name in kept.values()):
        return {table: int(counters[name]) for table, name in kept.items()}
    return {table: db.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for table in kept}


def render(status: StoreStatus) -> str:
    """One screen for a technician."""
    age = (
        "nothing waits"
        if status.oldest_waiting_ms is None
        else f"oldest waiting item sampled {_ago(status.oldest_waiting_ms)} ago"
    )
    lines = [
        f"store      {status.path}",
        f"disk       {format_size(status.bytes_on_disk)} of {format_size(status.max_size)}",
        f"waiting    {status.messages_waiting} messages, {status.readings_waiting} readings, "
        f"{status.alarms_waiting} alarm events; {age}",
        f"seq        next {status.next_seq}, durable mark {status.seq_mark}",
    ]
    total = status.losses_total
    if not total.get("entries"):
        lines.append("losses     none since installation")
    else:
        lines.append(
            f"losses     {total['entries']} entries, {total['items']} readings/events "
            "since installation; newest:"
        )
        lines += [f"           {_loss_line(entry)}" for entry in status.losses]
    return "\n".join(lines)


def _loss_line(entry: dict[str, Any]) -> str:
    parts = [entry["reason"]]
    if entry.get("items"):
        first = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(entry["first"] / 1000))
        last = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(entry["last"] / 1000))
        parts.append(f"{entry['items']} items sampled {first} .. {last} UTC")
    if "seq" in entry:
        parts.append(f"seq {entry['seq'][0]}..{entry['seq'][1]}")
    return "; ".join(parts)


def _ago(ts_ms: int) -> str:
    return duration(time.time() - ts_ms / 1000)


QUERY_TIMEOUT_S = 3.0
QUALITY_WORDS = {
    "good": "good",
    "uncertain": "uncertain",
    "comm": "no communication",
    "sensor": "sensor fault",
    "config": "config error",
}
_ANY_ADDRESS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


def fetch_running(listen: Listen, timeout: float = QUERY_TIMEOUT_S) -> dict[str, Any] | None:
    """The running agent's /status document, or None when nothing answers on `listen`."""
    host = _ANY_ADDRESS.get(listen.host, listen.host)
    url = f"http://{f'[{host}]' if ':' in host else host}:{listen.port}/status"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            document: dict[str, Any] = json.load(response)
    except (OSError, ValueError):  # refused, timed out, or not our server
        return None
    return document


def render_running(document: dict[str, Any]) -> str:
    """One screen for a technician, from the running agent's /status."""
    snapshot, health = document["snapshot"], document["health"]
    lines = [
        f"edge-agent {snapshot['version']}, up {duration(snapshot['uptime_s'])}: "
        f"{health['status'].upper()}",
        *(f"  - {reason}" for reason in health["reasons"]),
        f"clock      {'synced' if snapshot['clock_synced'] else 'NOT synchronised'}",
        _devices_line(snapshot["devices"]),
        "tags       " + _counts(snapshot["tags_by_quality"], QUALITY_WORDS, "no tags"),
        _alarms_line(snapshot["alarms_active"]),
        *_store_lines(snapshot),
        _uplink_line(snapshot["uplink"]),
    ]
    return "\n".join(lines)


def _devices_line(devices: list[dict[str, Any]]) -> str:
    down = [d for d in devices if d["link"] != "up"]
    line = f"devices    {len(devices) - len(down)} up, {len(down)} down"
    details = [
        f"{d['name']} down for {duration(d['link_for_s'])} "
        f"({d['errors']} failed polls, {d['reconnects']} reconnects)"
        for d in down
    ]
    return line + (": " + "; ".join(details) if details else "")


def _counts(counts: dict[str, int], words: dict[str, str], empty: str) -> str:
    parts = [f"{n} {words.get(key, key)}" for key, n in counts.items() if n]
    return ", ".join(parts) or empty


def _alarms_line(active: dict[str, int]) -> str:
    total = sum(active.values())
    if not total:
        return "alarms     none active"
    kinds = ", ".join(f"{kind} {n}" for kind, n in sorted(active.items()) if n)
    return f"alarms     {total} active: {kinds}"


def _store_lines(snapshot: dict[str, Any]) -> list[str]:
    store = snapshot["store"]
    if store["backlog_messages"]:
        waiting = f"{store['backlog_messages']} messages wait"
        if store["oldest_ms"] is not None:
            age = (snapshot["taken_ms"] - store["oldest_ms"]) / 1000
            waiting += f", oldest sampled {duration(age)} ago"
    else:
        waiting = "nothing waits"
    lines = [
        f"back-log   {waiting}",
        f"store      {format_size(store['bytes_on_disk'])} of {format_size(store['max_bytes'])}"
        + (f"; CANNOT WRITE: {store['write_error']}" if store["write_error"] else ""),
    ]
    if store["loss_entries"]:
        lines.append(
            f"losses     {store['loss_entries']} entries, {store['lost_items']} readings/events "
            "since installation"
        )
    else:
        lines.append("losses     none since installation")
    return lines


def _uplink_line(uplink: dict[str, Any]) -> str:
    since = duration(uplink["state_for_s"])
    if not uplink["connected"]:
        state = f"DOWN for {since}"
    else:
        state = f"connected to {uplink['broker'] or 'the broker'} for {since}"
    refusing = f" (last: {uplink['refusal']})" if uplink.get("refusal") else ""
    return (
        f"uplink     {state}; {uplink['in_flight']} in flight; {uplink['acked']} acked, "
        f"{uplink['refused']} refused{refusing}; {uplink['connects']} connects since start"
    )
