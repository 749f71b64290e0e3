"""`edge-agent status`: the running agent's own account, or failing that the store file's.

- `render_running(answer)`: one screen from the running agent's /status and
  /tags (ask.py asks, and makes sure it is this config's agent).
- `read_status(path)`: what the store holds and what was lost, from the file.
  It opens the store read-only and takes no lock, so it works beside a running
  agent (WAL readers never block the writer) and on a stopped gateway alike.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

from edge_agent.ask import Running
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
        f"disk       {human_size(status.bytes_on_disk)} of {human_size(status.max_size)}",
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


QUALITY_WORDS: Final = {
    "good": "good",
    "uncertain": "uncertain",
    "comm": "no communication",
    "sensor": "sensor fault",
    "config": "config error",
}
NO_ALARMS: Final = "alarms     none active"
ALARM_LINES: Final = 6
"""Active alarms listed on the screen, newest first; `--json` has them all."""
_SIZE_UNITS: Final = ("B", "KiB", "MiB", "GiB", "TiB")


def render_running(answer: Running) -> str:
    """One screen for a technician, from the running agent's /status and /tags."""
    snapshot, health = answer.document["snapshot"], answer.document["health"]
    lines = [
        f"edge-agent {snapshot['version']} of gateway {snapshot['gateway']}, "
        f"up {duration(snapshot['uptime_s'])}: {health['status'].upper()}",
        *(f"  - {reason}" for reason in health["reasons"]),
        f"clock      {'synced' if snapshot['clock_synced'] else 'NOT synchronised'}",
        _devices_line(snapshot["devices"]),
        "tags       " + _counts(snapshot["tags_by_quality"], QUALITY_WORDS, "no tags"),
        *_alarms_lines(snapshot, active_alarms(answer)),
        *_store_lines(snapshot),
        _uplink_line(snapshot["uplink"]),
    ]
    return "\n".join(lines)


def active_alarms(answer: Running) -> list[dict[str, Any]] | None:
    """Every active alarm with its tag and unit, newest first; None without /tags."""
    if answer.tags is None:
        return None
    alarms = [
        {"tag": tag["tag"], "unit": tag["unit"], **alarm}
        for tag in answer.tags["tags"]
        for alarm in tag["alarms"]
    ]
    return sorted(alarms, key=lambda alarm: -alarm["since_ms"])


def human_size(size: float) -> str:
    """463 KiB, 2 GiB, 1.5 MiB: for people, where a config writes 2GiB."""
    unit = 0
    while size >= 1024 and unit < len(_SIZE_UNITS) - 1:
        size /= 1024
        unit += 1
    figures = f"{size:.1f}".removesuffix(".0") if size < 10 else f"{size:.0f}"
    return f"{figures} {_SIZE_UNITS[unit]}"


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


def _alarms_lines(snapshot: dict[str, Any], alarms: list[dict[str, Any]] | None) -> list[str]:
    """`HZ01.GT201 H 27.5 %LEL since 10:42`, one line each; counts by kind without /tags."""
    if alarms is None:
        active = snapshot["alarms_active"]
        kinds = ", ".join(f"{kind} {n}" for kind, n in sorted(active.items()) if n)
        return [f"alarms     {sum(active.values())} active: {kinds}" if kinds else NO_ALARMS]
    if not alarms:
        return [NO_ALARMS]
    now_ms = snapshot["taken_ms"]
    lines = [f"alarms     {len(alarms)} active"]
    lines += [f"           {_alarm(alarm, now_ms)}" for alarm in alarms[:ALARM_LINES]]
    if len(alarms) > ALARM_LINES:
        lines.append(f"           and {len(alarms) - ALARM_LINES} more (--json lists them all)")
    return lines


def _alarm(alarm: dict[str, Any], now_ms: int) -> str:
    value = alarm["value"]
    if value is None:  # FAULT and COMM are raised without one
        reading = ""
    else:
        number = f"{value:.7g}" if isinstance(value, float) else str(value)
        reading = f" {number}" + (f" {alarm['unit']}" if alarm["unit"] else "")
    return f"{alarm['tag']} {alarm['kind']}{reading} since {_clock(alarm['since_ms'], now_ms)}"


def _clock(ts_ms: int, now_ms: int) -> str:
    """The gateway's local time: 10:42 today, 2025-11-28 10:42 before."""
    then, now = time.localtime(ts_ms / 1000), time.localtime(now_ms / 1000)
    same_day = then[:3] == now[:3]
    return time.strftime("%H:%M" if same_day else "%Y-%m-%d %H:%M", then)


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
        f"store      {human_size(store['bytes_on_disk'])} of {human_size(store['max_bytes'])}"
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
