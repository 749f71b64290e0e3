"""What every tag and device has, whatever driver reads it.

A driver's models add where to read a value; everything here is judged by the
rules stage (edge_agent/rules), the same way for every protocol: the
instrument range and its tolerance, the process limits and their delays,
stuck and rate-of-change checks, report by exception, and the COMM alarm of
a device. docs/alarms.md is the reference for what each field does.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise
from typing import TYPE_CHECKING, Any, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.config import JsonDict
from pydantic_core import PydanticCustomError

from edge_agent.config.types import Delay, Duration, HazardCode, TagCode
from edge_agent.wire import MAX_DECIMALS, NumberFormat

DataPath = tuple[str | int, ...]
"""Where a value sits in the config data: keys and list indexes from the top."""

LOCATED = "located"
"""The error type of a check that knows which part of its model's data it is about."""


def located_error(path: DataPath, message: str) -> PydanticCustomError:
    """An error the config loader reports at `path` (relative to the model that raises it)
    rather than at the model: the line to edit, not the line that names the mapping."""
    return PydanticCustomError(LOCATED, "{summary}", {"summary": message, "path": path})


class Strict(BaseModel):
    """Base of every config model: unknown keys are errors, values are immutable, and each
    value must already have its type: no text for a number or a boolean, no 1 for true.

    Strict, because the JSON Schema an editor checks with has no conversions: pydantic's
    lax mode would take `gzip: "yes"` and `port: true` (as 1) that the schema refuses.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Range(Strict):
    """The instrument's measuring range (量程)."""

    low: float = Field(description="Lowest value the instrument measures.")
    high: float = Field(description="Highest value the instrument measures.")
    tolerance: float = Field(
        10.0,
        ge=0,
        le=100,
        description=(
            "How far outside the range, in percent of its span, a value is still plausible: "
            "kept with q=1 (uncertain). Further out it is a sensor fault: q=3, no value, and "
            "a FAULT alarm."
        ),
    )

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.low >= self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        return self

    @property
    def span(self) -> float:
        return self.high - self.low


_GAS_LEVELS = {"level1": "H", "level2": "HH"}


def _gas_levels_schema(schema: JsonDict) -> None:
    """level1 and level2 in the schema as the loader takes them: other names, never both."""
    properties = schema["properties"]
    assert isinstance(properties, dict), "pydantic puts a model's fields under properties"
    for level, kind in _GAS_LEVELS.items():
        limit = properties[kind]
        assert isinstance(limit, dict)
        properties[level] = {
            **limit,
            "title": level.title(),
            "description": f"A gas detector's name for {kind} (一级/二级报警); give one of them.",
        }
    schema["allOf"] = [{"not": {"required": [level, kind]}} for level, kind in _GAS_LEVELS.items()]


class Limits(Strict):
    """Process alarm limits of one tag (高高报/高报/低报/低低报), with hysteresis and delays."""

    model_config = ConfigDict(json_schema_extra=_gas_levels_schema)

    HH: float | None = Field(None, description="High-high limit: raised when the value reaches it.")
    H: float | None = Field(None, description="High limit: raised when the value reaches it.")
    L: float | None = Field(None, description="Low limit: raised when the value falls to it.")
    LL: float | None = Field(None, description="Low-low limit.")
    deadband: float = Field(
        0.0,
        ge=0,
        description=(
            "Hysteresis in engineering units: a high alarm clears only below limit - deadband, "
            "a low alarm only above limit + deadband."
        ),
    )
    on_delay: Delay = Field(
        0.0,
        description=(
            "A limit must be reached by every good value for this long before its alarm is "
            "raised, e.g. 5s; filters spikes. 0 raises on the first value."
        ),
    )
    off_delay: Delay = Field(
        0.0,
        description="A raised alarm clears only after the value stayed recovered this long.",
    )

    @model_validator(mode="before")
    @classmethod
    def _gas_levels(cls, data: Any) -> Any:
        """Gas detectors say level1/level2 (一级/二级报警): the uplink's H and HH."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for level, kind in _GAS_LEVELS.items():
            if level in data:
                if kind in data:
                    raise ValueError(
                        f"{level} is another name for {kind}: give one of them, not both"
                    )
                data[kind] = data.pop(level)
        return data

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        ordered = [(k, getattr(self, k)) for k in ("LL", "L", "H", "HH")]
        present = [(k, v) for k, v in ordered if v is not None]
        for (lower_name, lower), (upper_name, upper) in pairwise(present):
            if lower >= upper:
                raise ValueError(
                    f"{lower_name} ({lower}) must be below {upper_name} ({upper}): "
                    "limits rise in the order LL < L < H < HH"
                )
        return self

    def items(self) -> list[tuple[str, float]]:
        """The limits that are set, as (kind, limit)."""
        return [(k, v) for k in ("HH", "H", "L", "LL") if (v := getattr(self, k)) is not None]


class Report(Strict):
    """Report by exception: when a reading of the tag is sent to the platform."""

    every: Duration | None = Field(
        None,
        description=(
            "Longest time between two reports of the tag (heartbeat), so a quiet point "
            "still reports. Defaults to the site's required rate (gateway.site): 20s for an "
            "underground mine, 60s otherwise."
        ),
    )
    deadband: float | None = Field(
        None,
        ge=0,
        description=(
            "Report a value only when it moved more than this (engineering units) from the "
            "last one reported. Without a deadband every change is reported."
        ),
    )
    deadband_pct: float | None = Field(
        None,
        ge=0,
        le=100,
        description="The deadband in percent of the instrument range's span; needs range.",
    )

    @model_validator(mode="after")
    def _one_deadband(self) -> Self:
        if self.deadband is not None and self.deadband_pct is not None:
            raise ValueError("give deadband or deadband_pct, not both")
        return self


class Stuck(Strict):
    """A STUCK alarm for a point that must move: no change beyond epsilon for `after`."""

    after: Duration = Field(description="How long the value may stay unchanged, e.g. 30m.")
    epsilon: float = Field(
        0.0, ge=0, description="Changes up to this much (engineering units) count as no change."
    )


class RateOfChange(Strict):
    """A ROC alarm: the value moved more than `limit` within `window`."""

    limit: float = Field(gt=0, description="Largest plausible change within the window.")
    window: Duration = Field(60.0, description="The sliding window, e.g. 60s.")


class TagBase(Strict):
    """Fields every tag carries; a driver's tag model adds where to read it."""

    tag: TagCode = Field(description="Indicator code (指标编码), unique within the gateway.")
    hazard: HazardCode = Field(
        description="Hazard source code (重大危险源编码) or mine/tailings-pond code."
    )
    name: str | None = Field(None, description="Human name of the point, e.g. its P&ID bit number.")
    unit: str | None = Field(None, description="Engineering unit, e.g. m, MPa, %LEL, ppm.")
    range: Range | None = Field(
        None,
        description=(
            "Instrument range: a value outside it is kept with q=1 (uncertain) up to the "
            "tolerance, and beyond it is a sensor fault (q=3)."
        ),
    )
    limits: Limits | None = Field(
        None,
        description=(
            "Process alarm limits, if the point has any. Gas detectors may write level1 and "
            "level2 (first- and second-level alarm) for H and HH."
        ),
    )
    report: Report = Field(
        default_factory=Report,  # type: ignore[arg-type]  # every field has a default
        description=(
            "When readings are sent: on a change beyond a deadband, and at least every so often."
        ),
    )
    poll: Duration | None = Field(
        None,
        description=(
            "Poll this tag at its own interval (a poll group), at least the device's poll. "
            "Defaults to the device's poll."
        ),
    )
    stuck: Stuck | None = Field(None, description="Raise STUCK when the value stops moving.")
    roc: RateOfChange | None = Field(None, description="Raise ROC when the value moves too fast.")
    decimals: int | None = Field(
        None,
        ge=0,
        le=MAX_DECIMALS,
        description=(
            "Round the value to this many decimals before it is judged and sent. By default "
            "a scaled value keeps the decimals its scaling implies (x 0.1: one) and a float32 "
            "the shortest decimal that reads back to the same float32."
        ),
    )

    @model_validator(mode="after")
    def _fits_range(self) -> Self:
        """Limits outside the instrument range could never be reached: a typo, refused."""
        if self.report.deadband_pct is not None and self.range is None:
            raise ValueError("report.deadband_pct is a percent of the range: give range too")
        if self.range is None or self.limits is None:
            return self
        low, high = self.range.low, self.range.high
        for kind, limit in self.limits.items():
            if not low <= limit <= high:
                raise ValueError(
                    f"limit {kind} ({limit:g}) lies outside the instrument range "
                    f"{low:g}..{high:g}: the value can never reach it; fix the limit or the range"
                )
        return self

    @property
    def value_type(self) -> str | None:
        """The value's type as read from the device (`meta`'s `type`); None when not known."""
        return None

    @property
    def implied_decimals(self) -> int | None:
        """The decimals the tag's scaling implies; None when it is not scaled."""
        return None

    @property
    def number_format(self) -> NumberFormat:
        """How the tag's numbers are written on the wire (edge_agent/wire.py)."""
        decimals = self.decimals if self.decimals is not None else self.implied_decimals
        return NumberFormat(self.value_type, decimals)

    @property
    def report_deadband(self) -> float:
        """The report deadband in engineering units (0: every change is reported)."""
        if self.report.deadband_pct is not None and self.range is not None:
            return self.range.span * self.report.deadband_pct / 100
        return self.report.deadband or 0.0


class DeviceBase(Strict):
    """Fields every device carries; a driver's device model adds how to reach it."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="Device name, unique.")
    driver: str = Field(description="Which driver reads the device.")
    poll: Duration = Field(1.0, description="Poll interval, e.g. 1s or 500ms.")
    comm_alarm_after: Duration = Field(
        30.0,
        description=(
            "Raise a COMM alarm on every tag of the device once it has been unreachable this "
            "long; cleared when it answers again."
        ),
    )
    reconnect_min: Duration = Field(0.5, description="First retry after a failure.")
    reconnect_max: Duration = Field(
        30.0, description="Longest wait between retries; waits double with jitter up to it."
    )
    if TYPE_CHECKING:
        # Each driver's model declares its own list of tags, last, where a reader looks for it.
        tags: Sequence[TagBase]

    @model_validator(mode="after")
    def _consistent_timing(self) -> Self:
        if self.reconnect_max < self.reconnect_min:
            raise ValueError("reconnect_max must be at least reconnect_min")
        for tag in self.tags:
            if tag.poll is not None and tag.poll < self.poll:
                raise ValueError(
                    f"tag {tag.tag}: poll {tag.poll:g}s is faster than the device's poll "
                    f"{self.poll:g}s; a poll group can only be slower"
                )
        return self

    def interval_of(self, tag: TagBase) -> float:
        """How often `tag` is read."""
        return self.poll if tag.poll is None else tag.poll
