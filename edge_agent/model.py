"""The data that flows through the pipeline: driver -> sample -> rules -> store -> uplink.

This module imports nothing of ours, so every stage can depend on it and on
nothing else of its neighbours.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import ClassVar, NamedTuple

Value = float | int | bool | str | None
"""A tag's value as the uplink carries it; None when there is no valid value."""

Number = float | int | str
"""A number as the uplink carries it: a JSON number, or a decimal string (a 64-bit tag)."""


class BigInteger(int):
    """An int the device holds as a 64-bit integer (`Int64` or `UInt64`).

    A driver that learns a value's type as it reads it (OPC UA) hands 64-bit
    integers on as these, so that a tag without a configured type is written
    as if configured with theirs: decimal strings (edge_agent/wire.py,
    `NumberFormat.learned_from`).
    """

    __slots__ = ()
    value_type: ClassVar[str]
    """The value's type as `meta` names it (edge_agent/wire.py, VALUE_TYPES)."""


class Int64(BigInteger):
    __slots__ = ()
    value_type = "int64"


class UInt64(BigInteger):
    __slots__ = ()
    value_type = "uint64"


class Quality(enum.IntEnum):
    """The uplink's `q` codes (spec: Items on `rt`)."""

    GOOD = 0
    UNCERTAIN = 1
    COMM = 2
    """Bad: no communication with the device (timeout, refused, exception response)."""
    SENSOR = 3
    """Bad: sensor fault (NE43 fault band, device-reported fault)."""
    CONFIG = 4
    """Bad: configuration (address/type mismatch, decoding failed)."""

    @property
    def is_bad(self) -> bool:
        return self >= Quality.COMM


class Sample(NamedTuple):
    """One value of one tag, taken at `ts_ms` (ms since the Unix epoch, UTC).

    A bad sample carries `value=None` and the quality that says why. A
    NamedTuple rather than a frozen dataclass: drivers make one per tag per
    poll, and a tuple is built in well under half the time while staying
    immutable (docs/performance.md, Modbus polling).
    """

    tag: str
    ts_ms: int
    value: Value
    quality: Quality

    @classmethod
    def bad(cls, tag: str, ts_ms: int, quality: Quality) -> Sample:
        return cls(tag, ts_ms, None, quality)


class AlarmKind(enum.StrEnum):
    HH = "HH"
    H = "H"
    L = "L"
    LL = "LL"
    ROC = "ROC"
    STUCK = "STUCK"
    FAULT = "FAULT"
    COMM = "COMM"


class AlarmState(enum.StrEnum):
    RAISED = "raised"
    CLEARED = "cleared"


class Reading(NamedTuple):
    """A sample on its way to the platform: the `rt` item, with the tag's hazard code.

    A NamedTuple like `Sample`, for the same reason: one is made per reported value."""

    tag: str
    hz: str
    ts_ms: int
    value: Value
    quality: Quality


@dataclass(frozen=True, slots=True)
class AlarmEvent:
    """A change of one alarm occurrence; `raised` and its `cleared` share `id`."""

    id: str
    tag: str
    hz: str
    ts_ms: int
    kind: AlarmKind
    state: AlarmState
    value: Value
    limit: Number | None


@dataclass(frozen=True, slots=True)
class StatItem:
    """Window statistics of one tag: the `stat` item. `start_ms` is the window start."""

    tag: str
    hz: str
    start_ms: int
    window_s: int
    min: Number | None
    max: Number | None
    avg: Number | None
    n: int
    bad: int


class LinkState(enum.StrEnum):
    UP = "up"
    DOWN = "down"
