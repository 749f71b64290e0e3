"""`edge-agent status`: what the store holds and what was lost, read from the store file.

It opens the store read-only and takes no lock, so it works beside a running
agent (WAL readers never block the writer) and on a stopped gateway alike.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edge_agent.config.types import format_size
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
        count = {
            table: db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            for table in ("message", "reading", "event")
        }
        oldest = [
            row[0]
            for row in (
                db.execute("SELECT min(oldest) FROM message").fetchone(),
                db.execute("SELECT ts FROM reading ORDER BY id LIMIT 1").fetchone(),
                db.execute("SELECT min(ts) FROM event").fetchone(),
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
    seconds = max(time.time() - ts_ms / 1000, 0)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
