"""The number rules of the platform's interface (uplink-v1, Items on `rt`), in one place.

Every number the agent sends goes through a tag's `NumberFormat`: readings on
`rt`, an alarm's `v` and `limit`, the `min`/`max`/`avg` of `stat`, and the
`range` and `limits` of `meta`. The rules:

- A value the device holds as a 32-bit float is written with the shortest
  decimal that reads back to the same float32: 21.3, not 21.299999237060547.
- A scaled value carries the decimals its scaling implies, or the tag's own
  `decimals`: 7 x 0.1 is 0.7, not 0.7000000000000001.
- Every value of a 64-bit integer tag (int64, uint64) is a decimal string,
  "18446744073709551615" and "42" alike: a platform that reads JSON numbers
  as doubles would round large ones, and a tag's JSON type must not change
  with its value. Its limits and statistics are strings too. A tag is one
  by its configured type, or, with no type configured, once its device sent
  a 64-bit integer (`model.BigInteger`; `NumberFormat.learned_from`).
- NaN and the infinities are not values: `carry` refuses them (`NotCarried`),
  and the rules stage sends `null` with the bad quality that says why.
- `avg` of a statistics window lies within its `min` and `max` as written.

Two steps, because the rules judge numbers: `number` makes the value the
platform will see (rounded to what the wire carries), so alarms are judged
on exactly what is sent; `wire` then gives its JSON form (a string for a
64-bit tag, the number itself otherwise). `json.dumps` of a number from
`number` prints the intended digits, because Python writes a float with the
shortest text that reads back to it, and `number` returns the float nearest
the intended decimal.

This module imports nothing of ours but the model, so every stage can use it.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Final

from edge_agent.model import BigInteger, Number, Value

BIG_INTEGER_TYPES: Final = frozenset({"int64", "uint64"})
VALUE_TYPES: Final = (
    "bool",
    "int8",
    "uint8",
    "int16",
    "uint16",
    "int32",
    "uint32",
    "int64",
    "uint64",
    "float32",
    "float64",
    "string",
)
"""The `type` names `meta` gives a tag's value (uplink-v1, Items on `meta`)."""

MAX_DECIMALS: Final = 12
_FLOAT32 = struct.Struct("<f")
_pack, _unpack = _FLOAT32.pack, _FLOAT32.unpack
_FLOAT32_MAX = 3.4028234663852886e38


class NotCarried(ValueError):
    """The value has no place on the wire (NaN, an infinity, beyond float32)."""


def shortest_float32(value: float) -> float:
    """The float nearest the shortest decimal that reads back to float32(`value`).

    `value` is widened from a float32 (what a driver decodes); a float64 that
    is not a float32 is first rounded to the nearest one.
    """
    if not math.isfinite(value) or abs(value) > _FLOAT32_MAX:
        raise NotCarried(f"{value!r} is not a finite float32")
    single = _as_float32(value)
    if single == 0.0:
        return single  # 0.0 or -0.0, kept as they are
    # The shortest round-tripping precision is the least number of digits that
    # reads back; more digits only come closer. A measured value needs 7 to 9
    # (nearly always 7 or 8), a set point fewer: start at 7 and move whichever
    # way round-tripping says.
    text = _DIGITS[7] % single
    if _as_float32(float(text)) == single:
        # %g drops trailing zeros, so fewer digits than the text shows give it again:
        # try from one digit fewer than it has (21.3 tries 2 digits, not 6, 5, 4, 3, 2).
        for digits in range(_significant(text) - 1, 0, -1):
            shorter = _DIGITS[digits] % single
            if _as_float32(float(shorter)) != single:
                break
            text = shorter
        return float(text)
    text = _DIGITS[8] % single
    if _as_float32(float(text)) == single:
        return float(text)
    return float(_DIGITS[9] % single)  # 9 digits always read back


_DIGITS: Final = tuple(f"%.{digits}g" for digits in range(10))


def _significant(text: str) -> int:
    """The significant digits of a %g text ("-0.00123" and "1.23e-05": 3)."""
    mantissa = text.partition("e")[0]
    return len(mantissa.replace("-", "").replace(".", "").lstrip("0"))


def _as_float32(value: float) -> float:
    single: float = _unpack(_pack(value))[0]
    return single


def decimals_of(step: float) -> int:
    """The decimals that show every multiple of `step` (a scaling's raw step, an offset).

    A short decimal step gives its own decimals (0.1 -> 1, 0.25 -> 2, 5 -> 0);
    any other step (100/27648, a 4-20 mA count) the decimals that still tell
    two neighbouring raw counts apart, plus one.
    """
    step = abs(step)
    if step == 0 or not math.isfinite(step):
        return 0
    exponent = Decimal(repr(step)).normalize().as_tuple().exponent
    assert isinstance(exponent, int)  # a finite step has a numeric exponent
    if -exponent <= 6:
        return max(-exponent, 0)
    return min(max(math.ceil(-math.log10(step)), 0) + 1, MAX_DECIMALS)


@dataclass(frozen=True, slots=True)
class NumberFormat:
    """How one tag's numbers are written. The default writes numbers as they are."""

    type: str | None = None
    """The value's type as read from the device (VALUE_TYPES), for `meta`; None when unknown."""
    decimals: int | None = None
    """Round values to this many decimals (scaled values, or the tag's `decimals`)."""

    @property
    def big_integer(self) -> bool:
        return self.type in BIG_INTEGER_TYPES

    def learned_from(self, value: Value) -> NumberFormat:
        """The format once the device sent `value`: a tag whose type is not known in
        advance becomes a 64-bit integer tag, as if configured so, on a `BigInteger`;
        otherwise the format is kept."""
        if self.type is not None or not isinstance(value, BigInteger):
            return self
        return replace(self, type=value.value_type)

    def number(self, value: float | int) -> float | int:
        """The value as the platform will see it, as a number (see the module docstring)."""
        if isinstance(value, int):
            return value  # exact at any number of decimals; a float would lose 64-bit digits
        if not math.isfinite(value):
            raise NotCarried(f"{value!r} is not a finite number")
        if self.decimals is not None:
            return _rounded(value, self.decimals)
        if self.type == "float32":
            return shortest_float32(value)
        return value

    def wire(self, value: Value) -> Value:
        """A value from `number` (or a bool, a string, None) as the JSON value to send."""
        if not self.big_integer or value is None or isinstance(value, bool | str):
            return value
        return _decimal_text(value)

    def wire_number(self, value: float | int) -> Number:
        """`wire` for a number from `number`."""
        return _decimal_text(value) if self.big_integer else value

    def carry(self, value: Value) -> Value:
        """`number`, then `wire`: a reading's value, ready for JSON; raises NotCarried."""
        if isinstance(value, int | float) and not isinstance(value, bool):
            return self.wire(self.number(value))
        return value

    def limit(self, value: Number) -> Number:
        """A configured number (a limit, a range end) as the wire writes it for this tag."""
        if self.big_integer and not isinstance(value, str):
            return _decimal_text(value)
        return value

    def average(self, total: float | int, n: int, low: float | int, high: float | int) -> Number:
        """The wire form of the mean of a window's `n` values, which sum to `total` and
        span [low, high] (numbers from `number`): written like the tag's values and kept
        within low and high as written, however it rounds."""
        if self.big_integer:
            places = Decimal(1).scaleb(-(self.decimals or 3))
            mean = (_exact(total) / n).quantize(places).normalize()
            clamped = min(max(mean, _exact(low)), _exact(high))
            return format(clamped, "f")
        average = total / n
        if self.decimals is None and self.type != "float32":
            average = float(f"{average:.15g}")  # no binary noise in the average
        else:
            average = self.number(average)
        return min(max(average, low), high)


def _exact(value: float | int) -> Decimal:
    return Decimal(value) if isinstance(value, int) else Decimal(repr(value))


def _rounded(value: float, decimals: int) -> float:
    rounded = round(value, decimals)
    return 0.0 if rounded == 0 else rounded  # no "-0.0" from a value that rounds to zero


def _decimal_text(value: float | int) -> str:
    """A number as plain decimal text: 42, 18446744073709551615, 12.5 (never 1e+20).

    A float gives the digits of its shortest repr, no more: 4.61161564968321e+18
    is "4611615649683210000", not the 4611615649683210240 its binary holds.
    """
    if isinstance(value, int):
        return str(value)
    if not math.isfinite(value):
        raise NotCarried(f"{value!r} is not a finite number")
    exact = _exact(value)
    return format(exact.to_integral_value() if value.is_integer() else exact, "f")


PLAIN: Final = NumberFormat()
"""Numbers as they are: a tag whose type is not known in advance."""
