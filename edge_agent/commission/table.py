"""What every table of `edge-agent read` shares: quality names, cell texts, the layout."""

from __future__ import annotations

from dataclasses import dataclass

from edge_agent.config.tags import TagBase
from edge_agent.model import Quality, Sample

QUALITY_NAMES = {
    Quality.GOOD: "good",
    Quality.UNCERTAIN: "uncertain (out of range)",
    Quality.COMM: "BAD: no answer / refused",
    Quality.SENSOR: "BAD: sensor fault",
    Quality.CONFIG: "BAD: cannot decode",
}


@dataclass(frozen=True, slots=True)
class DeviceTable:
    """One device read once: the lines to print, its number of tags, how many are bad."""

    lines: list[str]
    tags: int
    bad: int


def layout(rows: list[list[str]]) -> list[str]:
    """Rows as lines under the device's header: each column as wide as its widest cell."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


def value_cell(sample: Sample) -> str:
    return "-" if sample.value is None else text(sample.value)


def quality_cell(sample: Sample) -> str:
    return f"q={int(sample.quality)} {QUALITY_NAMES[sample.quality]}"


def count_bad(samples: list[Sample]) -> int:
    return sum(1 for s in samples if s.quality.is_bad)


def text(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, str):
        return repr(value)
    return str(value)


def limits(tag: TagBase) -> str:
    parts = [f"{k}={v:g}" for k, v in (tag.limits.items() if tag.limits else [])]
    if tag.range is not None:
        parts.append(f"range {tag.range.low:g}..{tag.range.high:g}")
    return " ".join(parts)
