"""What every table of `edge-agent read` shares: the judging, quality names, cell texts, layout.

A tag's row shows what the running agent would send for it: each sample goes
through the tag's own rules (`judged`, edge_agent/rules/judge.py), so a value
outside the instrument range is q=1 within its tolerance and q=3 beyond it,
exactly as in `edge-agent run`, and every number is written as the wire
writes it (edge_agent/wire.py): a float32 as its shortest decimal, a scaled
value with the decimals of its scaling, a 64-bit integer exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

from edge_agent.config.tags import TagBase
from edge_agent.model import Quality, Sample, Value
from edge_agent.rules import TagRules
from edge_agent.wire import NotCarried, NumberFormat

QUALITY_NAMES = {
    Quality.GOOD: "good",
    Quality.UNCERTAIN: "uncertain",
    Quality.COMM: "BAD: communication",
    Quality.SENSOR: "BAD: sensor fault",
    Quality.CONFIG: "BAD: configuration",
}


@dataclass(frozen=True, slots=True)
class DeviceTable:
    """One device read once: the lines to print, its number of tags, how many are bad
    (q >= 2) and how many uncertain (q=1: outside the range, within its tolerance)."""

    lines: list[str]
    tags: int
    bad: int
    uncertain: int = 0


def layout(rows: list[list[str]]) -> list[str]:
    """Rows as lines under the device's header: each column as wide as its widest cell."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


def judged(tag: TagBase, sample: Sample) -> Sample:
    """The sample as the agent's rules turn it into a reading: the number the wire
    carries, q=4 for NaN, q=1 or q=3 outside the range. Fresh rules per call, so this
    is the tag's first reading, which is always reported."""
    reading, _events = TagRules(tag, every_s=1.0, poll_s=1.0).judge(sample)
    assert reading is not None  # report by exception always reports a tag's first reading
    return Sample(sample.tag, sample.ts_ms, reading.value, reading.quality)


def value_text(number_format: NumberFormat, value: Value) -> str:
    """A value as the uplink writes it (`NumberFormat.carry`): 21.3, 0.7,
    18446744073709551615; a string in quotes; `-` for no value."""
    if value is None:
        return "-"
    if isinstance(value, str) and not number_format.big_integer:
        return repr(value)
    try:
        # Python writes a float with the shortest text that reads back to it, as json does.
        return str(number_format.carry(value))
    except NotCarried:
        return str(value)  # nan, inf: never sent (q=4), shown as decoded


def value_cell(tag: TagBase, sample: Sample) -> str:
    return value_text(tag.number_format, sample.value)


def quality_cell(sample: Sample, reason: str | None = None) -> str:
    """`q=0 good`, `q=2 BAD: communication`; with the protocol's own reason for a
    bad tag (in the reason column) just `q=2 BAD`, not a generic guess at it."""
    if reason is not None and sample.quality.is_bad:
        return f"q={int(sample.quality)} BAD"
    return f"q={int(sample.quality)} {QUALITY_NAMES[sample.quality]}"


def range_reason(tag: TagBase, decoded: Sample, final: Sample) -> str | None:
    """Why the rules made a decoded value q=1 or q=3 (outside the range); None otherwise."""
    span = tag.range
    if span is None or decoded.quality is not Quality.GOOD or final.quality is Quality.GOOD:
        return None
    if final.quality not in (Quality.UNCERTAIN, Quality.SENSOR):
        return None
    value = value_text(tag.number_format, decoded.value)
    where = f"range {span.low:g}..{span.high:g}"
    if final.quality is Quality.UNCERTAIN:
        return (
            f"{value} is outside {where}, within its {span.tolerance:g}% tolerance: sent with q=1"
        )
    return (
        f"{value} is beyond {where} and its {span.tolerance:g}% tolerance: sent as a sensor "
        "fault, no value (wrong byte order, type, scale or range?)"
    )


def count_bad(samples: list[Sample]) -> int:
    return sum(1 for s in samples if s.quality.is_bad)


def count_uncertain(samples: list[Sample]) -> int:
    return sum(1 for s in samples if s.quality is Quality.UNCERTAIN)


def limits(tag: TagBase) -> str:
    parts = [f"{k}={v:g}" for k, v in (tag.limits.items() if tag.limits else [])]
    if tag.range is not None:
        parts.append(f"range {tag.range.low:g}..{tag.range.high:g}")
    return " ".join(parts)
