"""The retained `meta` topic: what each tag is (spec: Items on `meta`).

Each tag's entry carries its name, the `type` of its value as read from the
device (when the config says it), unit, range, limits and `every`, the
longest interval between two of its reports; the runtime builds the entries
from the config (reload.py, `meta_entries`). `config` is the SHA-256 of the
tag entries (canonical JSON), so it changes exactly when what the platform
is told changes, and not with the time of publishing.

A tag list too large for one payload is split into retained `meta/1`,
`meta/2`, ...; `meta` itself then carries no tags and `parts`, their count.
The uplink publishes meta on connect when the broker's retained `meta`
carries another `config` (or none), so a restart with an unchanged config
publishes nothing and a changed config is published at once.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from edge_agent.uplink.envelope import Identity

MAX_META_BYTES = 256 * 1024
"""The platform's payload limit."""

HEAD_ROOM = 1024
"""Room in a payload for what surrounds the tag entries (v, ent, gw, ts, config, part)."""


@dataclass(frozen=True, slots=True)
class Meta:
    config_hash: str
    identity: Identity
    head: dict[str, object]
    """What every payload starts with: v, ent, gw, ts, config."""
    entries: list[dict[str, object]]

    def payloads(self, max_bytes: int = MAX_META_BYTES) -> list[tuple[str, bytes]]:
        """(topic, payload) to publish retained, parts first and `meta` last; the parts
        hold at most `max_bytes` of tag entries each (less than MAX_META_BYTES where the
        broker's Maximum Packet Size says so)."""
        identity, head = self.identity, self.head
        parts = _split(self.entries, min(max_bytes, MAX_META_BYTES))
        if len(parts) == 1:
            return [(identity.topic("meta"), _dump({**head, "tags": self.entries}))]
        payloads = [
            (identity.topic(f"meta/{n}"), _dump({**head, "part": n, "tags": part}))
            for n, part in enumerate(parts, start=1)
        ]
        payloads.append((identity.topic("meta"), _dump({**head, "parts": len(parts)})))
        return payloads


def build_meta(identity: Identity, entries: list[dict[str, object]], ts_ms: int) -> Meta:
    """The retained `meta` of these tag entries."""
    canonical = json.dumps(entries, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    config_hash = "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()
    head = {"v": 1, "ent": identity.enterprise, "gw": identity.gateway, "ts": ts_ms}
    head["config"] = config_hash
    return Meta(config_hash, identity, head, entries)


def held_hash(payload: bytes | None) -> str | None:
    """The `config` of a retained meta payload, if it has one."""
    if not payload:
        return None
    try:
        body = json.loads(payload)
    except ValueError:
        return None
    held = body.get("config") if isinstance(body, dict) else None
    return held if isinstance(held, str) else None


def _split(tags: list[dict[str, object]], max_bytes: int) -> list[list[dict[str, object]]]:
    """Consecutive runs of tags whose JSON fits in `max_bytes` each (less room for the head
    around them; a single tag larger than that gets a part of its own)."""
    max_bytes -= HEAD_ROOM
    parts: list[list[dict[str, object]]] = [[]]
    size = 0
    for entry in tags:
        entry_size = len(json.dumps(entry, ensure_ascii=False).encode()) + 1
        if parts[-1] and size + entry_size > max_bytes:
            parts.append([])
            size = 0
        parts[-1].append(entry)
        size += entry_size
    return parts


def _dump(body: dict[str, object]) -> bytes:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
