"""The running agent's figures gathered into the parts of a `service.snapshot.Snapshot`.

Called on the event loop for every /metrics, /healthz and /status request
and every STATUS line: a few indexed SQLite counts, no I/O beyond them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from edge_agent.config.schema import Store as StoreConfig
from edge_agent.model import Quality
from edge_agent.rules import TagRules
from edge_agent.service.snapshot import StoreSnapshot, UplinkSnapshot
from edge_agent.store import Store
from edge_agent.store.capacity import file_bytes
from edge_agent.uplink import Uplink


def store_snapshot(
    store: Store, config: StoreConfig, *, in_flight: int, connected: bool
) -> StoreSnapshot:
    """`connected`: whether the uplink is up (while it is down, everything stored waits)."""
    backlog = store.backlog(in_flight, connected=connected)
    totals = store.figures.losses
    return StoreSnapshot(
        backlog_messages=backlog.messages,
        oldest_ms=backlog.oldest_ms,
        bytes_on_disk=file_bytes(Path(config.path)),
        max_bytes=config.max_size,
        loss_entries=totals.entries,
        lost_items=totals.items,
        write_error=store.write_error,
    )


def uplink_snapshot(uplink: Uplink, now: float) -> UplinkSnapshot:
    stats = uplink.stats
    return UplinkSnapshot(
        connected=stats.connected,
        state_for_s=now - stats.since,
        undelivered_for_s=uplink.undelivered_for(now),
        broker=stats.broker,
        in_flight=uplink.in_flight,
        published=stats.published,
        acked=stats.acked,
        refused=stats.refused,
        refusal=stats.refusal,
        connects=stats.connects,
    )


def tags_by_quality(qualities: Iterable[Quality]) -> dict[str, int]:
    """Count of tags per quality name (snapshot.QUALITY_NAMES), every name present."""
    counts = Counter(quality.name.lower() for quality in qualities)
    return {quality.name.lower(): counts[quality.name.lower()] for quality in Quality}


def alarms_by_kind(rules: Iterable[TagRules]) -> dict[str, int]:
    """Active alarms of every tag, counted by kind."""
    return dict(Counter(str(kind) for tag in rules for kind in tag.alarms.active))
