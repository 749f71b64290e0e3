"""One DataValue (from a read or a data-change notification) -> one Sample.

Value mapping (the uplink carries numbers, booleans and strings):
Boolean -> bool; SByte..UInt32 -> int; Int64, UInt64 -> model.Int64,
model.UInt64 (ints that say they are 64-bit, so that a tag without `type`
is sent as a 64-bit integer tag: decimal strings); Float, Double -> float
(NaN and infinities are q=4: JSON cannot carry them and no instrument reads them);
String -> str; DateTime -> ISO 8601 UTC text ("2026-11-29T22:30:00.123Z");
StatusCode -> its name ("BadSensorFailure"). Any other built-in type, an empty
value, an array without `index`, an index past the end, or a type other than
the tag's `type` -> q=4 with no value, and a reason the driver logs once.

The sample's time is the report time the caller gives (`report_time` for a
notification; the arrival of the answer for a read).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from asyncua import ua

from edge_agent.drivers.opcua.config import OpcuaTag
from edge_agent.drivers.opcua.quality import quality_of, status_name
from edge_agent.model import Int64, Quality, Sample, UInt64, Value

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
_INTEGERS: dict[ua.VariantType, Callable[[Any], int]] = {
    ua.VariantType.SByte: int,
    ua.VariantType.Byte: int,
    ua.VariantType.Int16: int,
    ua.VariantType.UInt16: int,
    ua.VariantType.Int32: int,
    ua.VariantType.UInt32: int,
    ua.VariantType.Int64: Int64,
    ua.VariantType.UInt64: UInt64,
}
"""Each integer type -> the int it becomes; a 64-bit one says so (model.BigInteger)."""


class Refused(Exception):
    """The value cannot be carried for this tag; the message says why (q=4)."""


def epoch_ms(moment: datetime) -> int:
    if moment.tzinfo is None:  # asyncua hands out aware datetimes; a naive one is UTC
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // _MS


def to_sample(tag: OpcuaTag, data: ua.DataValue, ts: int) -> tuple[Sample, str | None]:
    """The sample at report time `ts` (`report_time`), and the reason when its quality is
    bad (None when good or uncertain)."""
    code = data.StatusCode.value if data.StatusCode is not None else 0
    quality = quality_of(code)
    if quality.is_bad:
        return Sample.bad(tag.tag, ts, quality), status_name(code)
    try:
        value = _value(tag, data.Value)
    except Refused as exc:
        return Sample.bad(tag.tag, ts, Quality.CONFIG), str(exc)
    return Sample(tag.tag, ts, value, quality), None


def report_time(data: ua.DataValue, arrived_ms: int, max_skew_ms: int) -> tuple[int, int | None]:
    """A notification's report time, and its SourceTimestamp's skew when that was refused.

    The server's SourceTimestamp is the time of the change, and the spec's `ts`
    when the device's clock is right; a clock further than `max_skew_ms` from the
    gateway's (a PLC on local time as if it were UTC: 8 h) is not believed, and
    the arrival time is sent instead. No SourceTimestamp: the arrival time.
    """
    if data.SourceTimestamp is None:
        return arrived_ms, None
    source = epoch_ms(data.SourceTimestamp)
    skew = source - arrived_ms
    if abs(skew) > max_skew_ms:
        return arrived_ms, skew
    return source, None


def _value(tag: OpcuaTag, variant: ua.Variant | None) -> Value:
    if variant is None or variant.VariantType == ua.VariantType.Null:
        raise Refused("the node has no value")
    raw: Any = variant.Value
    if _is_array(variant):
        if tag.index is None:
            raise Refused(f"the node holds an array ({type_name(variant)}): give the tag an index")
        if tag.index >= len(raw):
            raise Refused(f"index {tag.index} is past the end of the array ({len(raw)} elements)")
        raw = raw[tag.index]
    elif tag.index is not None:
        raise Refused(f"index {tag.index} given, but the node holds a scalar")
    expected = tag.element_type
    if expected is not None and variant.VariantType.name != expected:
        raise Refused(f"type mismatch: the node holds {variant.VariantType.name}, not {expected}")
    return convert(variant.VariantType, raw)


def type_name(variant: ua.Variant | None) -> str | None:
    """The built-in type a value came as: Double, or Double[3] for an array; None for none."""
    if variant is None or variant.VariantType == ua.VariantType.Null:
        return None
    name = str(variant.VariantType.name)
    return f"{name}[{len(variant.Value)}]" if _is_array(variant) else name


def _is_array(variant: ua.Variant) -> bool:
    return bool(variant.is_array) or isinstance(variant.Value, list)


def convert(kind: ua.VariantType, raw: Any) -> Value:
    """One scalar of a built-in type -> the uplink's value; Refused for what it cannot carry."""
    if kind == ua.VariantType.Boolean:
        return bool(raw)
    if (integer := _INTEGERS.get(kind)) is not None:
        return integer(raw)
    if kind in (ua.VariantType.Float, ua.VariantType.Double):
        number = float(raw)
        if not math.isfinite(number):
            raise Refused(f"{kind.name} value {number} is not a finite number")
        return number
    if kind == ua.VariantType.String:
        return str(raw)
    if kind == ua.VariantType.DateTime:
        moment: datetime = raw if raw.tzinfo is not None else raw.replace(tzinfo=UTC)
        return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    if kind == ua.VariantType.StatusCode:
        return status_name(raw.value if isinstance(raw, ua.StatusCode) else int(raw))
    raise Refused(f"values of type {kind.name} are not carried: point the tag at a scalar")
