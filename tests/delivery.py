"""The proofs the fault tests make about what the platform received.

Kept apart from the tests so each campaign states its scenario and calls the
same three checks: no `seq` gap, identical copies, no reading lost outside
the known downtime.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

from edge_agent.demo.platform import Received

ENVELOPE_TOPICS = ("rt", "alarm", "stat")


def envelopes(messages: list[Received]) -> list[Received]:
    return [m for m in messages if m.kind in ENVELOPE_TOPICS]


def assert_no_seq_gap(messages: list[Received]) -> int:
    """Every `seq` from 1 to the highest received is present; returns the highest."""
    seqs = {m.body["seq"] for m in envelopes(messages)}
    assert seqs, "no envelope received"
    missing = sorted(set(range(1, max(seqs) + 1)) - seqs)
    assert not missing, f"seq gaps: {missing[:20]} (of {len(missing)})"
    return max(seqs)


def assert_copies_identical(messages: list[Received]) -> int:
    """Every copy of a `seq` has the same topic, `hist` and items; returns the duplicates seen."""
    copies: dict[int, list[Received]] = defaultdict(list)
    for message in envelopes(messages):
        copies[message.body["seq"]].append(message)
    for seq, same in copies.items():
        first = same[0]
        for other in same[1:]:
            assert (other.topic, other.body["hist"], other.body["items"]) == (
                first.topic,
                first.body["hist"],
                first.body["items"],
            ), f"seq {seq} was sent with different content"
    return sum(len(same) - 1 for same in copies.values())


@dataclass(frozen=True)
class Downtime:
    """A window in which the agent could not sample or keep samples: [start, end] in seconds."""

    start: float
    end: float


def counter_readings(messages: list[Received], tag: str) -> list[tuple[int, float]]:
    """(value, sample time in s) of every good reading of `tag`, de-duplicated, by value."""
    seen = {
        (item["v"], item["ts"] / 1000)
        for m in envelopes(messages)
        if m.kind == "rt"
        for item in m.body["items"]
        if item["tag"] == tag and item["q"] == 0
    }
    return sorted(seen)


def assert_counter_complete(
    messages: list[Received], tag: str, downtimes: list[Downtime], slack_s: float
) -> None:
    """A counter rising by 1 a second shows a hole only where a gap in sampling covers a downtime.

    `slack_s` is what may be lost before a downtime starts: the commit
    interval plus one poll, plus scheduling jitter.
    """
    readings = counter_readings(messages, tag)
    assert readings, f"no good reading of {tag}"
    for (before, ts_before), (after, ts_after) in itertools.pairwise(readings):
        if after <= before + 1:
            continue
        explained = any(
            d.start - slack_s <= ts_before and ts_after >= d.start and ts_before <= d.end
            for d in downtimes
        )
        assert explained, (
            f"{tag}: values {before + 1}..{after - 1} missing between "
            f"{ts_before:.3f} and {ts_after:.3f}, not across a downtime {downtimes}"
        )


def declared_losses(messages: list[Received]) -> list[dict[str, object]]:
    """The loss ledger of the newest online `state` (its newest 100 entries)."""
    states = [m.body for m in messages if m.kind == "state" and m.body.get("online")]
    entries: list[dict[str, object]] = states[-1].get("losses", []) if states else []
    return entries


def assert_holes_declared(messages: list[Received], tag: str, max_gap_s: float) -> int:
    """Every gap of more than `max_gap_s` between two readings of `tag` meets a declared
    loss (a ledger entry whose time range falls in it); returns how many gaps there were."""
    times = sorted(
        {
            item["ts"]
            for m in envelopes(messages)
            if m.kind == "rt"
            for item in m.body["items"]
            if item["tag"] == tag
        }
    )
    spans = [
        (int(str(e["first"])), int(str(e["last"])))
        for e in declared_losses(messages)
        if "first" in e and "last" in e
    ]
    holes = [(a, b) for a, b in itertools.pairwise(times) if b - a > max_gap_s * 1000]
    for before, after in holes:
        assert any(first < after and last > before for first, last in spans), (
            f"{tag}: no reading from {before} to {after} and no declared loss there: {spans}"
        )
    return len(holes)


def drained(messages: list[Received]) -> bool:
    """The last `state` says nothing waits."""
    states = [m for m in messages if m.kind == "state" and m.body.get("online")]
    return bool(states) and states[-1].body["backlog"] == 0


def drained_since(since_s: float) -> Callable[[list[Received]], bool]:
    """A predicate: a `state` sampled after `since_s` (epoch s) says nothing waits."""

    def predicate(messages: list[Received]) -> bool:
        return drained(messages) and any(
            m.kind == "state" and m.body.get("online") and m.body["ts"] / 1000 > since_s
            for m in messages
        )

    return predicate
