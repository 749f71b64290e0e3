"""Thinning makes an outage coarser, never shorter: every tag keeps readings across all of
it, its peaks, its quality changes and what raised an alarm; and every drop is declared."""

from __future__ import annotations

import itertools
from collections import defaultdict
from pathlib import Path

from stores import SyncStore

from edge_agent.model import Quality, Reading

T0 = 1_764_441_000_000
HOUR_MS = 3_600_000
TAGS = 4


def outage(store: SyncStore, hours: float, every_ms: int = 1000) -> None:
    """Readings of TAGS tags every second for `hours`, committed as the agent would; tag T0
    has one peak of 99 in the middle, tag T1 goes bad for a minute, tag T2 raised an alarm
    once."""
    end = T0 + int(hours * HOUR_MS)
    middle = (T0 + end) // 2
    for ts in range(T0, end, every_ms):
        for n in range(TAGS):
            value: float | None = 50.0 + (ts // every_ms) % 7
            quality = Quality.GOOD
            if n == 0 and ts == middle:
                value = 99.0
            if n == 1 and middle <= ts < middle + 60_000:
                value, quality = None, Quality.COMM
            alarmed = n == 2 and ts == middle + every_ms
            store.add_reading(Reading(f"T{n}", "HZ01", ts, value, quality), alarmed=alarmed)
        if ts % 60_000 == 0:
            store.flush()
            store.maintain(ts)
    store.flush()


def waiting(store: SyncStore) -> dict[str, list[tuple[int, float | None, int]]]:
    rows = store.engine._db.execute(
        "SELECT tag.tag, ts, v, q FROM reading JOIN tag ON tag.id = reading.tag_id ORDER BY ts"
    ).fetchall()
    by_tag: dict[str, list[tuple[int, float | None, int]]] = defaultdict(list)
    for tag, ts, v, q in rows:
        by_tag[tag].append((ts, v, q))
    return by_tag


def test_an_outage_past_the_cap_gets_coarser_and_keeps_its_whole_span(tmp_path: Path) -> None:
    store = SyncStore.open(tmp_path / "store.db", max_bytes=2 * 1024 * 1024)
    outage(store, hours=8)
    kept = waiting(store)
    entries, totals = store.losses()
    assert totals.items > 0, "the cap was reached"
    end = T0 + 8 * HOUR_MS
    for tag in (f"T{n}" for n in range(TAGS)):
        times = [ts for ts, _, _ in kept[tag]]
        assert times[0] - T0 < 10 * 60_000, f"{tag} still starts with the outage"
        assert end - times[-1] < 10 * 60_000, f"{tag} still ends with it"
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert max(gaps) < HOUR_MS, f"{tag}: coarser, not cut out"
    assert any(v == 99.0 for _, v, _ in kept["T0"]), "the peak, with its own time"
    assert any(q & 0x20 for _, _, q in kept["T2"]), "the reading that raised the alarm"
    qualities = [q & 0x0F for _, _, q in kept["T1"]]
    assert int(Quality.COMM) in qualities, "the stretch without communication"
    waiting_rows = sum(len(rows) for rows in kept.values())
    assert waiting_rows + totals.items == 8 * 3600 * TAGS, "every reading kept or declared"
    reasons = {entry.reason for entry in entries}
    assert reasons == {"store full: thinned back-log"}
    assert len(entries) < 10, "consecutive passes grow one entry"
    store.close()
