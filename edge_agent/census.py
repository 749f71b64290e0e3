"""The running agent's figures gathered into the parts of a `service.snapshot.Snapshot`,
and each tag's state into a `TagSnapshot`.

Called on the event loop for every /metrics, /healthz, /status and /tags
request and every STATUS line: a few indexed SQLite counts, no I/O beyond them.

A tag's reason is told from what the agent knows when asked, so polling pays
nothing for it: the rules failed on it; its value is outside the range (the
words of `edge-agent read`); the clock is not synchronised; the value is not
a number the wire carries; its device's link is down (the driver's words);
else what its quality code means.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Final

from edge_agent.commission.table import range_reason, value_text
from edge_agent.config.schema import Store as StoreConfig
from edge_agent.config.tags import TagBase
from edge_agent.model import Quality, Sample, Value
from edge_agent.rules import TagRules
from edge_agent.service.snapshot import ActiveAlarm, StoreSnapshot, TagSnapshot, UplinkSnapshot
from edge_agent.store import Store
from edge_agent.store.capacity import file_bytes
from edge_agent.uplink import Uplink
from edge_agent.wire import NotCarried, NumberFormat

QUALITY_MEANS: Final = {
    Quality.UNCERTAIN: "the device marks the value uncertain",
    Quality.COMM: "no value from the device: it did not answer, or refused the read",
    Quality.SENSOR: "sensor fault: the device reports its fault value",
    Quality.CONFIG: "the value cannot be decoded: check the tag's address and type",
}
"""What a quality code says when nothing more is known."""


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


def tag_snapshot(
    tag: TagBase,
    device: str,
    rules: TagRules,
    latest: tuple[Sample, Quality] | None,
    *,
    link_reason: str | None,
    clock_synced: bool,
    rules_failed: bool,
) -> TagSnapshot:
    """`latest`: the tag's latest sample as the driver gave it (after the clock guard), and
    the quality its rules gave it; None before the first. `link_reason`: why its device's
    link is down, or None."""
    alarms = tuple(
        ActiveAlarm(str(event.kind), event.ts_ms, event.value, event.limit)
        for event in rules.alarms.raised
    )
    about = (tag.tag, device, tag.hazard, tag.name, tag.unit)
    if latest is None:
        return TagSnapshot(*about, None, "-", None, "not read yet", None, alarms)
    sample, quality = latest
    number_format = rules.number_format  # a 64-bit integer type learned from the device too
    value = None if quality.is_bad else _carried(number_format, sample.value)
    if rules_failed:
        reason: str | None = "the rules failed on this value (see rules_failed in the log)"
    else:
        reason = _reason(tag, sample, quality, link_reason, clock_synced)
    text = value_text(number_format, value)
    name = quality.name.lower()
    return TagSnapshot(*about, value, text, name, reason, sample.ts_ms, alarms)


def _carried(number_format: NumberFormat, value: Value) -> Value:
    """The value as the wire carries it; None for one it cannot (its quality says so)."""
    try:
        return number_format.carry(value)
    except NotCarried:
        return None


def _reason(
    tag: TagBase, sample: Sample, quality: Quality, link_reason: str | None, clock_synced: bool
) -> str | None:
    if quality is Quality.GOOD:
        return None
    judged = Sample(sample.tag, sample.ts_ms, None, quality)
    out_of_range = range_reason(tag, sample, judged)
    if out_of_range is not None:
        return out_of_range
    if quality is Quality.UNCERTAIN and not clock_synced:
        return "the gateway's clock is not synchronised: sent with q=1"
    value = sample.value
    if quality is Quality.CONFIG and isinstance(value, float) and not math.isfinite(value):
        return f"{value} is not a number the platform can be sent: sent with q=4, no value"
    if quality is Quality.COMM and link_reason is not None:
        return f"device link down: {link_reason}"
    return QUALITY_MEANS[quality]
