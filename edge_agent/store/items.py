"""Rows <-> the JSON items of `rt`, `alarm` and `stat` (uplink-v1), in the compact form sent.

A reading's item is assembled from a per-tag prefix and its stored value, not
built as a dict and passed to `json.dumps`: packing does this once per reading
and it was a third of the agent's CPU. The text is the same JSON `json.dumps`
writes with compact separators (tests/unit/test_store_items.py checks it for
every kind of value): the numbers are already what the wire carries
(edge_agent/wire.py), and Python writes a float as the shortest text that reads
back to it, which is what `json.dumps` writes too.

Stored values: REAL, INTEGER, TEXT or NULL as SQLite keeps them; flag bits on
the quality say what the row was (`BOOL`: a boolean stored as 0/1; `ALARMED`:
the reading changed an alarm, which thinning keeps).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from typing import Any, Final, TypeVar

from edge_agent.model import AlarmEvent, AlarmKind, AlarmState, Quality, Reading, StatItem, Value

BOOL: Final = 0x10
ALARMED: Final = 0x20
QUALITY: Final = 0x0F
INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1

_COMPACT = (",", ":")

T = TypeVar("T")


def stored(reading: Reading, alarmed: bool = False) -> tuple[Value, int]:
    """A reading's value and flags as a row keeps them.

    Whatever the value, it is kept: an integer beyond SQLite's 64 bits as its
    decimal text (exact, and what the wire sends for a 64-bit tag); a value
    JSON cannot carry becomes null with q=4.
    """
    value = reading.value
    flags = int(reading.quality) | (ALARMED if alarmed else 0)
    if isinstance(value, bool):
        return int(value), flags | BOOL
    if isinstance(value, int):
        return (value if INT64_MIN <= value <= INT64_MAX else str(value)), flags
    if isinstance(value, float):
        return (value, flags) if math.isfinite(value) else (None, _bad(flags))
    if value is None or isinstance(value, str):
        return value, flags
    return None, _bad(flags)


def _bad(flags: int) -> int:
    return (flags & ~QUALITY) | int(Quality.CONFIG)


def tag_prefix(tag: str, hz: str) -> str:
    """The start of every item of one tag, up to its `ts` value."""
    return f'{{"tag":{json.dumps(tag)},"hz":{json.dumps(hz)},"ts":'


def reading_item(prefix: str, ts: int, value: Value, flags: int) -> str:
    """One `rt` item from its tag's prefix and its row."""
    if value is None:
        text = "null"
    elif flags & BOOL:
        text = "true" if value else "false"
    elif isinstance(value, str):
        text = json.dumps(value)
    else:
        text = repr(value)
    return f'{prefix}{ts},"v":{text},"q":{flags & QUALITY}}}'


def alarm_item(event: AlarmEvent) -> str:
    item: dict[str, object] = {
        "id": event.id,
        "tag": event.tag,
        "hz": event.hz,
        "ts": event.ts_ms,
        "kind": str(event.kind),
        "state": str(event.state),
        "v": event.value,
    }
    if event.limit is not None:
        item["limit"] = event.limit
    return _item_json(item)


def stat_item(stat: StatItem) -> str:
    return _item_json(
        {
            "tag": stat.tag,
            "hz": stat.hz,
            "ts": stat.start_ms,
            "win": stat.window_s,
            "min": stat.min,
            "max": stat.max,
            "avg": stat.avg,
            "n": stat.n,
            "bad": stat.bad,
        }
    )


def alarm_event(item: str) -> AlarmEvent:
    """The event back from its item (`alarm_item`)."""
    fields: dict[str, Any] = json.loads(item)
    return AlarmEvent(
        id=fields["id"],
        tag=fields["tag"],
        hz=fields["hz"],
        ts_ms=fields["ts"],
        kind=AlarmKind(fields["kind"]),
        state=AlarmState(fields["state"]),
        value=fields["v"],
        limit=fields.get("limit"),
    )


def _item_json(item: dict[str, object]) -> str:
    """An alarm or statistics item; a number JSON cannot carry goes as null.

    The rules stage sends only carriable numbers (edge_agent/wire.py); this is
    the store's own guard, so a value that slipped through costs its field,
    never the event or a task.
    """
    try:
        return json.dumps(item, allow_nan=False, separators=_COMPACT)
    except (TypeError, ValueError):
        carriable = {key: _carriable(value) for key, value in item.items()}
        return json.dumps(carriable, separators=_COMPACT)


def _carriable(value: object) -> object:
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int | float) and math.isfinite(value):
        return value
    return None


ENVELOPE_BYTES: Final = 256
"""Room for the envelope around a message's items (`{"v":1,"ent":...,"items":`)."""


def fit(items: list[str], max_bytes: int) -> int:
    """How many of `items`, from the first, fit one message of `max_bytes` (at least one,
    so an item never blocks the queue; `fits_alone` says whether that one does)."""
    return len(fitting(items, list, max_bytes))


def fitting(
    rows: Sequence[T], render: Callable[[Sequence[T]], list[str]], max_bytes: int
) -> list[str]:
    """The items of the first `rows` that fit one message of `max_bytes` (at least one),
    `render`ed a chunk of rows at a time: a message smaller than the rows waiting (the
    uplink's pace starts each burst at a few KiB) renders hardly any item it leaves."""
    room = max_bytes - ENVELOPE_BYTES - 1  # the brackets, less the first item's comma
    texts: list[str] = []
    for start in range(0, len(rows), _RENDER_CHUNK):
        for text in render(rows[start : start + _RENDER_CHUNK]):
            room -= len(text) + 1
            if room < 0 and texts:
                return texts
            texts.append(text)
    return texts


_RENDER_CHUNK: Final = 64
"""Rows rendered at a time by `fitting`: about a 4 KiB message's worth of readings."""


def fits_alone(item: str, max_bytes: int) -> bool:
    """Whether a message of `max_bytes` can carry this item at all."""
    return len(item) + 2 <= max_bytes - ENVELOPE_BYTES


def split(items_json: str) -> list[str]:
    """A message's items back as the texts it was joined from, byte for byte (not
    re-encoded: a number keeps the form the wire encoder gave it)."""
    decoder = json.JSONDecoder()
    texts: list[str] = []
    at = 1  # past the opening bracket
    while items_json[at] != "]":
        _, end = decoder.raw_decode(items_json, at)
        texts.append(items_json[at:end])
        at = end + 1 if items_json[end] == "," else end
    return texts


def item_ts(item: str) -> int:
    """The `ts` of one item of any kind."""
    ts: int = json.loads(item)["ts"]
    return ts
