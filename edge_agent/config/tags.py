"""What every tag has, whatever driver reads it: identity, unit, range and limits."""

from __future__ import annotations

from itertools import pairwise
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from edge_agent.config.types import HazardCode, TagCode


class Strict(BaseModel):
    """Base of every config model: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Limits(Strict):
    """Process alarm limits of one tag (高高报/高报/低报/低低报)."""

    HH: float | None = Field(None, description="High-high limit: raised when the value reaches it.")
    H: float | None = Field(None, description="High limit (first-level alarm of a gas detector).")
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


class TagBase(Strict):
    """Fields every tag carries; a driver's tag model adds where to read it."""

    tag: TagCode = Field(description="Indicator code (指标编码), unique within the gateway.")
    hazard: HazardCode = Field(
        description="Hazard source code (重大危险源编码) or mine/tailings-pond code."
    )
    name: str | None = Field(None, description="Human name of the point, e.g. its P&ID bit number.")
    unit: str | None = Field(None, description="Engineering unit, e.g. m, MPa, %LEL, ppm.")
    limits: Limits | None = Field(None, description="Process alarm limits, if the point has any.")
