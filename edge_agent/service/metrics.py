"""The Prometheus text exposition of a `Snapshot` (served at /metrics).

API: `exposition(snapshot, health) -> bytes`, with `CONTENT_TYPE`.

Every metric is named `edge_agent_*`. Counters count since the agent started
(Prometheus handles the reset on a restart); gauges are the state at the
snapshot. The families are built afresh from each snapshot by a collector in a
private registry, so nothing here holds state and the runtime keeps its
counters where they are.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from edge_agent.service.health import Health
from edge_agent.service.snapshot import QUALITY_NAMES, Latency, Snapshot

CONTENT_TYPE: Final = CONTENT_TYPE_LATEST
HEALTH_STATES: Final = ("ok", "degraded", "failing")


def exposition(snapshot: Snapshot, health: Health) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_SnapshotCollector(snapshot, health))
    return generate_latest(registry)


class _SnapshotCollector:
    def __init__(self, snapshot: Snapshot, health: Health) -> None:
        self._snapshot = snapshot
        self._health = health

    def collect(self) -> Iterator[Metric]:
        yield from self._agent()
        yield from self._devices()
        yield from self._tags_and_alarms()
        yield from self._store()
        yield from self._uplink()

    def _agent(self) -> Iterator[Metric]:
        s = self._snapshot
        info = GaugeMetricFamily("edge_agent_info", "The agent's version.", labels=["version"])
        info.add_metric([s.version], 1)
        yield info
        yield GaugeMetricFamily("edge_agent_uptime_seconds", "Time since start.", s.uptime_s)
        yield GaugeMetricFamily(
            "edge_agent_clock_synced", "1 when the system clock is synchronised.", s.clock_synced
        )
        health = GaugeMetricFamily(
            "edge_agent_health", "1 for the current health state (see /healthz).", labels=["state"]
        )
        for state in HEALTH_STATES:
            health.add_metric([state], state == self._health.state)
        yield health
        yield GaugeMetricFamily(
            "edge_agent_stalled",
            "1 while the data does not flow (a hang; the systemd watchdog's pings stop).",
            s.stalled is not None,
        )
        failures = CounterMetricFamily(
            "edge_agent_task_failures",
            "Failures of a supervised task (each one logged and the task restarted).",
            labels=["task"],
        )
        for task, count in sorted(s.task_failures.items()):
            failures.add_metric([task], count)
        yield failures

    def _devices(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "edge_agent_device_up", "1 when the device link is up.", labels=["device"]
        )
        polls = CounterMetricFamily(
            "edge_agent_device_polls", "Polls of the device.", labels=["device"]
        )
        errors = CounterMetricFamily(
            "edge_agent_device_poll_errors", "Polls that got no good value.", labels=["device"]
        )
        reconnects = CounterMetricFamily(
            "edge_agent_device_reconnects", "Reconnects to the device.", labels=["device"]
        )
        latency = HistogramMetricFamily(
            "edge_agent_device_poll_duration_seconds", "Time one poll took.", labels=["device"]
        )
        replaced = CounterMetricFamily(
            "edge_agent_device_timestamps_replaced",
            "Device timestamps too far from the gateway's clock, replaced by its own time.",
            labels=["device"],
        )
        for device in self._snapshot.devices:
            label = [device.name]
            up.add_metric(label, device.link == "up")
            polls.add_metric(label, device.polls)
            errors.add_metric(label, device.errors)
            reconnects.add_metric(label, device.reconnects)
            latency.add_metric(label, _buckets(device.latency), device.latency.sum_s)
            replaced.add_metric(label, device.timestamps_replaced)
        yield from (up, polls, errors, reconnects, latency, replaced)

    def _tags_and_alarms(self) -> Iterator[Metric]:
        s = self._snapshot
        tags = GaugeMetricFamily(
            "edge_agent_tags", "Tags by their current quality.", labels=["quality"]
        )
        for quality in QUALITY_NAMES:
            tags.add_metric([quality], s.tags_by_quality.get(quality, 0))
        yield tags
        alarms = GaugeMetricFamily(
            "edge_agent_alarms_active", "Raised alarms, by kind.", labels=["kind"]
        )
        for kind, count in sorted(s.alarms_active.items()):
            alarms.add_metric([kind], count)
        yield alarms

    def _store(self) -> Iterator[Metric]:
        s = self._snapshot
        store = s.store
        oldest_age = 0.0 if store.oldest_ms is None else max(s.taken_ms - store.oldest_ms, 0) / 1000
        yield from (
            GaugeMetricFamily(
                "edge_agent_store_backlog_messages",
                "Messages waiting in the store (all of them while the uplink is down).",
                store.backlog_messages,
            ),
            GaugeMetricFamily(
                "edge_agent_store_oldest_age_seconds",
                "Age of the oldest item waiting (0 when nothing waits).",
                oldest_age,
            ),
            GaugeMetricFamily(
                "edge_agent_store_bytes", "Disk used by the store.", store.bytes_on_disk
            ),
            GaugeMetricFamily(
                "edge_agent_store_max_bytes", "The store's size cap.", store.max_bytes
            ),
            CounterMetricFamily(
                "edge_agent_store_loss_entries", "Loss ledger entries.", store.loss_entries
            ),
            CounterMetricFamily(
                "edge_agent_store_lost_items", "Readings and events lost.", store.lost_items
            ),
            GaugeMetricFamily(
                "edge_agent_store_writable",
                "1 while commits succeed.",
                store.write_error is None,
            ),
        )

    def _uplink(self) -> Iterator[Metric]:
        uplink = self._snapshot.uplink
        yield from (
            GaugeMetricFamily(
                "edge_agent_uplink_connected", "1 while connected to a broker.", uplink.connected
            ),
            GaugeMetricFamily(
                "edge_agent_uplink_in_flight", "Messages awaiting PUBACK.", uplink.in_flight
            ),
            GaugeMetricFamily(
                "edge_agent_uplink_undelivered_seconds",
                "How long messages have waited on the connection with none delivered.",
                uplink.undelivered_for_s,
            ),
            CounterMetricFamily(
                "edge_agent_uplink_published", "Messages published.", uplink.published
            ),
            CounterMetricFamily("edge_agent_uplink_acked", "Messages acknowledged.", uplink.acked),
            CounterMetricFamily(
                "edge_agent_uplink_refused", "PUBACKs with a failure reason code.", uplink.refused
            ),
            CounterMetricFamily(
                "edge_agent_uplink_connects", "Successful connects.", uplink.connects
            ),
        )


def _buckets(latency: Latency) -> list[tuple[str, float]]:
    buckets = [
        (repr(bound), float(n)) for bound, n in zip(latency.bounds, latency.counts, strict=True)
    ]
    buckets.append(("+Inf", float(latency.count)))
    return buckets
