"""Property tests of the alarm state machine over arbitrary value/quality sequences.

Whatever the samples: each `raised` is followed by at most one `cleared` of
the same id, ids are never reused, bad samples never move a limit alarm,
hysteresis and on/off delays hold, and a restart in the middle (alarms taken
back from what was active) says exactly what an uninterrupted run says.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

from hypothesis import given
from hypothesis import strategies as st

from edge_agent.config.tags import Limits, TagBase
from edge_agent.drivers.modbus.config import ModbusTag
from edge_agent.model import AlarmEvent, AlarmKind, AlarmState, Quality, Sample
from edge_agent.rules import TagRules

HIGH = {AlarmKind.H, AlarmKind.HH}
LIMIT_KINDS = {AlarmKind.H, AlarmKind.HH, AlarmKind.L, AlarmKind.LL}

Step = tuple[int, float, Quality]  # (ms since the previous sample, value, quality)

steps = st.lists(
    st.tuples(
        st.integers(1, 2500),
        st.floats(-5, 105, allow_nan=False),
        st.sampled_from(list(Quality)),
    ),
    max_size=80,
)
limit_sets = st.builds(
    lambda ll, l_, h, hh, deadband, on, off: Limits(
        LL=ll, L=l_, H=h, HH=hh, deadband=deadband, on_delay=f"{on}ms", off_delay=f"{off}ms"
    ),
    st.just(10.0),
    st.just(20.0),
    st.just(60.0),
    st.just(80.0),
    st.sampled_from([0.0, 2.0, 5.0]),
    st.sampled_from([0, 1000, 3000]),
    st.sampled_from([0, 1000, 3000]),
)


def make_rules(limits: Limits, new_id: Callable[[], str]) -> TagRules:
    tag = TagBase(tag="T", hazard="HZ01", limits=limits, range={"low": 0, "high": 100})
    return TagRules(tag, every_s=60, poll_s=1, new_id=new_id)


def samples(sequence: list[Step]) -> list[Sample]:
    out, ts = [], 0
    for dt, value, quality in sequence:
        ts += dt
        out.append(Sample("T", ts, None if quality.is_bad else value, quality))
    return out


def judge_all(rules: TagRules, sequence: list[Sample]) -> list[tuple[Sample, list[AlarmEvent]]]:
    return [(sample, rules.judge(sample)[1]) for sample in sequence]


def counter() -> Callable[[], str]:
    numbers = itertools.count()
    return lambda: f"id{next(numbers)}"


@given(steps, limit_sets)
def test_every_cleared_follows_its_raised_and_ids_are_never_reused(
    sequence: list[Step], limits: Limits
) -> None:
    judged = judge_all(make_rules(limits, counter()), samples(sequence))
    events = [e for _, es in judged for e in es]
    active: dict[AlarmKind, str] = {}
    seen: set[str] = set()
    for event in events:
        if event.state is AlarmState.RAISED:
            assert event.kind not in active
            assert event.id not in seen
            seen.add(event.id)
            active[event.kind] = event.id
        else:
            assert active.pop(event.kind) == event.id


@given(steps, limit_sets)
def test_bad_samples_never_move_a_limit_alarm(sequence: list[Step], limits: Limits) -> None:
    for sample, events in judge_all(make_rules(limits, counter()), samples(sequence)):
        if sample.quality.is_bad:
            assert all(e.kind is AlarmKind.FAULT for e in events)


def reached(kind: AlarmKind, value: float, limit: float) -> bool:
    return value >= limit if kind in HIGH else value <= limit


def recovered(kind: AlarmKind, value: float, limit: float, deadband: float) -> bool:
    return value < limit - deadband if kind in HIGH else value > limit + deadband


def held_since(good: list[Sample], upto: int, condition: Callable[[float], bool]) -> int:
    """The time from which `condition` held at every good sample up to index `upto`."""
    since = good[upto].ts_ms
    for sample in reversed(good[: upto + 1]):
        assert isinstance(sample.value, float)
        if not condition(sample.value):
            break
        since = sample.ts_ms
    return since


@given(steps, limit_sets)
def test_hysteresis_and_delays_hold(sequence: list[Step], limits: Limits) -> None:
    judged = judge_all(make_rules(limits, counter()), samples(sequence))
    good = [sample for sample, _ in judged if not sample.quality.is_bad]
    for sample, events in judged:
        for event in (e for e in events if e.kind in LIMIT_KINDS):
            assert isinstance(sample.value, float)
            assert event.limit is not None
            value, limit, kind = sample.value, event.limit, event.kind
            index = good.index(sample)
            if event.state is AlarmState.RAISED:
                assert reached(kind, value, limit)
                since = held_since(good, index, lambda v, k=kind, lim=limit: reached(k, v, lim))
                assert sample.ts_ms - since >= limits.on_delay * 1000
            else:
                assert recovered(kind, value, limit, limits.deadband)
                since = held_since(
                    good,
                    index,
                    lambda v, k=kind, lim=limit: recovered(k, v, lim, limits.deadband),
                )
                assert sample.ts_ms - since >= limits.off_delay * 1000


@given(steps, st.integers(0, 80), st.sampled_from([0.0, 2.0]))
def test_a_restart_anywhere_says_what_an_uninterrupted_run_says(
    sequence: list[Step], cut: int, deadband: float
) -> None:
    limits = Limits(LL=10, L=20, H=60, HH=80, deadband=deadband)
    all_samples = samples(sequence)
    uninterrupted = [
        e for _, es in judge_all(make_rules(limits, counter()), all_samples) for e in es
    ]
    ids = counter()
    before = make_rules(limits, ids)
    first = [e for _, es in judge_all(before, all_samples[:cut]) for e in es]
    active = {e.id: e for e in first if e.state is AlarmState.RAISED}
    for e in first:
        if e.state is AlarmState.CLEARED:
            del active[e.id]
    after = make_rules(limits, ids)
    for raised in active.values():
        assert after.restore(raised)
    rest = [e for _, es in judge_all(after, all_samples[cut:]) for e in es]
    assert first + rest == uninterrupted


@given(
    steps,
    limit_sets,
    st.sampled_from([None, {"low": 0, "high": 100}]),
    st.sampled_from(["float32", "int16"]),
)
def test_the_quick_path_for_good_numbers_judges_as_the_full_one(
    sequence: list[Step], limits: Limits, span: dict[str, float] | None, kind: str
) -> None:
    # TagRules.judge takes a shortcut for good plain numbers; TagRules._judge is the
    # full path every sample could take. Both must say exactly the same, statistics too.
    def build() -> TagRules:
        ids = itertools.count()
        tag = ModbusTag(
            tag="T",
            hazard="HZ01",
            address="hr:0",
            type=kind,
            limits=limits,
            range=span,
            stuck={"after": "3s"},
            roc={"limit": 30, "window": "5s"},
        )
        return TagRules(tag, every_s=60, poll_s=1, stats_window_s=10, new_id=lambda: str(next(ids)))

    quick, full = build(), build()
    for sample in samples(sequence):
        value = sample.value
        judged = sample._replace(value=int(value)) if kind != "float32" and value else sample
        assert quick.judge(judged) == full._judge(judged)
    assert quick.close_stats(10**9) == full.close_stats(10**9)
