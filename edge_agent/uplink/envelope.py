"""The platform's wire format (spec uplink-v1): topics, the envelope, `state` and the will."""

from __future__ import annotations

import json
from dataclasses import dataclass

from edge_agent.store import Backlog, Loss, StoredMessage, Totals


@dataclass(frozen=True, slots=True)
class Identity:
    prefix: str
    enterprise: str
    gateway: str

    def topic(self, name: str) -> str:
        return f"{self.prefix}/{self.enterprise}/{self.gateway}/{name}"


def envelope(identity: Identity, message: StoredMessage, sent_ms: int) -> bytes:
    """The published payload of a stored message; only `sent` differs between copies."""
    head = json.dumps(
        {
            "v": 1,
            "ent": identity.enterprise,
            "gw": identity.gateway,
            "seq": message.seq,
            "sent": sent_ms,
            "hist": message.hist,
        },
        separators=(",", ":"),
    )
    return f'{head[:-1]},"items":{message.items_json}}}'.encode()


def state_payload(
    identity: Identity,
    *,
    ts_ms: int,
    version: str,
    backlog: Backlog,
    devices: dict[str, str],
    losses: tuple[list[Loss], Totals],
    clock: str | None = None,
    max_bytes: int | None = None,
) -> bytes:
    """The retained `state`; `losses` and `losses_total` appear once anything was lost.

    `clock` is "synced" or "unsynced" (clock.ClockStatus.state); None leaves it out,
    for a caller that does not watch the clock (a benchmark). Within `max_bytes` (the
    broker's packet size), the oldest loss entries are left out as needed and
    `losses_trimmed` says how many; `losses_total` still counts them all.
    """
    body: dict[str, object] = {
        "v": 1,
        "ent": identity.enterprise,
        "gw": identity.gateway,
        "online": True,
        "ts": ts_ms,
        "version": version,
        "backlog": backlog.messages,
        "oldest": backlog.oldest_ms,
        "devices": devices,
    }
    if clock is not None:
        body["clock"] = clock
    entries, totals = losses
    if not totals.entries:
        return _compact(body)
    listed = [loss.as_json() for loss in entries]
    body["losses_total"] = {"entries": totals.entries, "items": totals.items}

    def with_newest(kept: int) -> bytes:
        trimmed = {"losses_trimmed": len(listed) - kept} if kept < len(listed) else {}
        return _compact({**body, "losses": listed[len(listed) - kept :], **trimmed})

    payload = with_newest(len(listed))
    if max_bytes is None or len(payload) <= max_bytes:
        return payload
    fewest, most = 0, len(listed)  # binary search: the most entries that fit
    while fewest < most:
        middle = (fewest + most + 1) // 2
        if len(with_newest(middle)) <= max_bytes:
            fewest = middle
        else:
            most = middle - 1
    return with_newest(fewest)


def _compact(body: dict[str, object]) -> bytes:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def offline_payload(identity: Identity) -> bytes:
    """The last will, and the state published on a clean stop."""
    return json.dumps(
        {"v": 1, "ent": identity.enterprise, "gw": identity.gateway, "online": False},
        separators=(",", ":"),
    ).encode()
