"""What the uplink is told: its own settings type, and the store it takes messages from.

The uplink knows neither the config models nor the concrete store: the
runtime builds `UplinkSettings` from the `uplink` config section
(reload.py, `uplink_settings`), and hands it anything that is an `Outbox`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from edge_agent.store import Admission, Backlog, Loss, StoredMessage, Totals
from edge_agent.uplink.session import TlsFiles


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    host: str
    port: int


@dataclass(frozen=True, slots=True)
class UplinkSettings:
    brokers: tuple[BrokerAddress, ...]
    """In the order they are tried."""
    topic_prefix: str = "safety/v1"
    mqtt5: bool = True
    keepalive_s: float = 30.0
    connect_timeout_s: float = 10.0
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 60.0
    tls: TlsFiles | None = None
    """None: plain TCP."""
    username_file: str | None = None
    password_file: str | None = None
    max_inflight: int = 20
    state_interval_s: float = 60.0
    linger_s: float = 0.5
    max_items: int = 500
    max_bytes: int = 64 * 1024
    gzip: bool = False
    backfill_rate: int | None = None
    """Payload bytes per second of back-fill; None: unlimited."""
    alarm_priority: bool = True


class Outbox(Protocol):
    """What the uplink needs of the store."""

    async def take(
        self, admission: Admission, skip: set[int], now_ms: int, linger_ms: int
    ) -> list[StoredMessage]: ...

    async def mark_live(self) -> None: ...

    async def losses(self) -> tuple[list[Loss], Totals]: ...

    def ack(self, seq: int) -> None: ...

    async def repack(self, seqs: list[int], max_bytes: int) -> None: ...

    def backlog(self, in_flight: int, *, connected: bool = True) -> Backlog: ...

    def holds_only(self, in_flight: int) -> bool: ...
