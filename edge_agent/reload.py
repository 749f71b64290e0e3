"""What a SIGHUP reload keeps, rebuilds and refuses, decided before anything is touched.

The runtime applies a `ReloadPlan` (docs/operations.md tells operators):

- A device whose config is equal keeps its driver and its connection (an
  OPC UA subscription also needs the same shortest report interval: its
  keep-alive is sized to it); a changed or added one gets a new driver; a
  removed one is closed.
- A tag whose rules are built from equal inputs (`RulesSpec`: its config, its
  poll and report intervals, the statistics window) keeps its rules and their
  state: active alarms, report by exception, the open statistics window.
  Other tags get new rules; their active alarms are taken back from the store
  as at a start (kept when the new rules can raise them, cleared otherwise).
- The uplink is restarted (offline state, reconnect, `meta` published) when
  `uplink`, `gateway` or what `meta` tells the platform changed; the
  status server and the local socket when `metrics` or the gateway code (the
  socket's name) changed; statistics when `stats` changed.
- `store.commit_interval` applies at once. Any other `store` change refuses
  the whole reload: the store is the agent's only durable state, and it is
  reopened only by a restart, never under a running pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from edge_agent.config.schema import AgentConfig, Device
from edge_agent.config.schema import Uplink as UplinkConfig
from edge_agent.config.tags import TagBase
from edge_agent.drivers.opcua.config import OpcuaDevice
from edge_agent.rules import TagRules
from edge_agent.store import StoreSettings
from edge_agent.uplink import Identity
from edge_agent.uplink.meta import Meta, build_meta
from edge_agent.uplink.session import TlsFiles
from edge_agent.uplink.settings import BrokerAddress, UplinkSettings


class RulesSpec(NamedTuple):
    """Everything a tag's rules are built from: equal specs, interchangeable rules."""

    tag: TagBase
    every_s: float
    poll_s: float
    stats_window_s: int | None

    def build(self) -> TagRules:
        return TagRules(
            self.tag,
            every_s=self.every_s,
            poll_s=self.poll_s,
            stats_window_s=self.stats_window_s,
        )


def rule_specs(config: AgentConfig) -> dict[str, RulesSpec]:
    """Tag name -> the spec of its rules."""
    window = int(config.stats.window) if config.stats.enabled else None
    return {
        tag.tag: RulesSpec(tag, config.report_every(tag), device.interval_of(tag), window)
        for device in config.devices
        for tag in device.tags
    }


def identity_of(config: AgentConfig) -> Identity:
    return Identity(config.uplink.mqtt.topic_prefix, config.gateway.enterprise, config.gateway.code)


@dataclass(frozen=True, slots=True)
class ReloadPlan:
    refused: str | None
    """Why the new config cannot be applied without a restart; None: it can."""
    kept_devices: frozenset[str]
    kept_tags: frozenset[str]
    restart_uplink: bool
    restart_metrics: bool
    restart_stats: bool


def plan_reload(old: AgentConfig, new: AgentConfig) -> ReloadPlan:
    old_devices = {device.name: device for device in old.devices}
    old_specs, new_specs = rule_specs(old), rule_specs(new)
    return ReloadPlan(
        refused=_store_change(old, new),
        kept_devices=frozenset(
            device.name
            for device in new.devices
            if (was := old_devices.get(device.name)) is not None
            and _built_from(old, was) == _built_from(new, device)
        ),
        kept_tags=frozenset(tag for tag, spec in new_specs.items() if old_specs.get(tag) == spec),
        restart_uplink=(
            old.uplink != new.uplink
            or old.gateway != new.gateway
            or _meta_hash(old) != _meta_hash(new)
        ),
        restart_metrics=old.metrics != new.metrics or old.gateway.code != new.gateway.code,
        restart_stats=old.stats != new.stats,
    )


def _built_from(config: AgentConfig, device: Device) -> tuple[Device, float | None]:
    """What a device's driver is built from: its config, and for an OPC UA subscription
    the report interval its keep-alive is sized to (build_driver's `report_every`)."""
    sized = isinstance(device, OpcuaDevice) and device.mode == "subscribe"
    return device, config.report_every_of(device) if sized else None


def _store_change(old: AgentConfig, new: AgentConfig) -> str | None:
    """The store settings that changed, but commit_interval (applied at once)."""
    changed = [
        name
        for name in type(old.store).model_fields
        if name != "commit_interval" and getattr(old.store, name) != getattr(new.store, name)
    ]
    if not changed:
        return None
    return (
        f"store.{', store.'.join(changed)} changed: the store is reopened only by a restart "
        "(systemctl restart edge-agent); the running config stays in force"
    )


def _meta_hash(config: AgentConfig) -> str:
    return meta_of(config, 0).config_hash


def meta_of(config: AgentConfig, ts_ms: int) -> Meta:
    """The retained `meta` of this config."""
    entries = [
        _meta_entry(tag, config.report_every(tag))
        for device in config.devices
        for tag in device.tags
    ]
    return build_meta(identity_of(config), entries, ts_ms)


def _meta_entry(tag: TagBase, every_s: float) -> dict[str, object]:
    """What `meta` tells of one tag; range and limits written by the tag's NumberFormat
    (edge_agent/wire.py): decimal strings for a 64-bit integer tag, as its values are."""
    entry: dict[str, object] = {"tag": tag.tag, "hz": tag.hazard}
    number = tag.number_format
    if tag.name is not None:
        entry["name"] = tag.name
    if number.type is not None:
        entry["type"] = number.type
    if tag.unit is not None:
        entry["unit"] = tag.unit
    if tag.range is not None:
        entry["range"] = [number.limit(tag.range.low), number.limit(tag.range.high)]
    if tag.limits is not None and tag.limits.items():
        entry["limits"] = {kind: number.limit(limit) for kind, limit in tag.limits.items()}
    entry["every"] = round(every_s)
    return entry


def uplink_settings(config: AgentConfig) -> UplinkSettings:
    """The uplink's own settings, from the `uplink` section."""
    return uplink_settings_of(config.uplink)


def uplink_settings_of(uplink: UplinkConfig) -> UplinkSettings:
    mqtt = uplink.mqtt
    tls = TlsFiles(**mqtt.tls.model_dump()) if mqtt.tls else TlsFiles()
    return UplinkSettings(
        brokers=tuple(BrokerAddress(b.host, b.port) for b in mqtt.endpoints()),
        topic_prefix=mqtt.topic_prefix,
        mqtt5=mqtt.protocol == "5",
        keepalive_s=mqtt.keepalive,
        connect_timeout_s=mqtt.connect_timeout,
        reconnect_min_s=mqtt.reconnect_min,
        reconnect_max_s=mqtt.reconnect_max,
        tls=tls if mqtt.uses_tls else None,
        username_file=mqtt.username_file,
        password_file=mqtt.password_file,
        max_inflight=uplink.max_inflight,
        state_interval_s=uplink.state_interval,
        linger_s=uplink.batch.linger,
        max_items=uplink.batch.max_items,
        max_bytes=uplink.batch.max_bytes,
        gzip=uplink.batch.gzip,
        backfill_rate=uplink.backfill_rate,
        alarm_priority=uplink.alarm_priority,
    )


def store_settings(config: AgentConfig) -> StoreSettings:
    store = config.store
    return StoreSettings(Path(store.path), store.max_size, store.retention, store.synchronous)


def batch_limits(config: AgentConfig) -> tuple[int, int]:
    """Most items and most bytes of one message (`uplink.batch`)."""
    return config.uplink.batch.max_items, config.uplink.batch.max_bytes
