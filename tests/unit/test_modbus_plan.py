"""The read planner: fewest requests, caps respected, no tag split."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from edge_agent.drivers.modbus.config import ModbusTag
from edge_agent.drivers.modbus.plan import ReadRequest, bisect, coalesce, plan_reads


def tag(address: str, data_type: str = "uint16", name: str | None = None) -> ModbusTag:
    code = name or f"T.{address.replace(':', '_')}"
    return ModbusTag.model_validate(
        {"tag": code, "hazard": "HZ01", "address": address, "type": data_type}
    )


def shape(requests: list[ReadRequest]) -> list[tuple[str, int, int, int]]:
    """(area, address, count, function code) of each request."""
    return [(r.area, r.address, r.count, r.function_code) for r in requests]


def slots(request: ReadRequest) -> list[tuple[str, int, int]]:
    return [(s.tag.address, s.start, s.count) for s in request.slots]


def test_contiguous_tags_merge_into_one_request() -> None:
    """uint16, float32, int16 back to back are one read of 4 registers."""
    tags = [tag("hr:0"), tag("hr:1", "float32"), tag("hr:3", "int16")]
    requests = plan_reads(tags)
    assert shape(requests) == [("hr", 0, 4, 3)]
    assert slots(requests[0]) == [("hr:0", 0, 1), ("hr:1", 1, 2), ("hr:3", 3, 1)]


def test_a_gap_splits_requests_by_default() -> None:
    """An address no tag names is not read: it may not exist on the device."""
    requests = plan_reads([tag("hr:0"), tag("hr:2")])
    assert shape(requests) == [("hr", 0, 1, 3), ("hr", 2, 1, 3)]


def test_an_allowed_gap_is_read_across() -> None:
    """With max_gap, small holes are read and ignored."""
    requests = plan_reads([tag("hr:0"), tag("hr:3")], max_gap=2)
    assert shape(requests) == [("hr", 0, 4, 3)]
    assert slots(requests[0]) == [("hr:0", 0, 1), ("hr:3", 3, 1)]
    assert shape(plan_reads([tag("hr:0"), tag("hr:4")], max_gap=2)) == [
        ("hr", 0, 1, 3),
        ("hr", 4, 1, 3),
    ]


def test_requests_stop_at_125_registers() -> None:
    """200 contiguous registers take two reads: 125 + 75."""
    requests = plan_reads([tag(f"hr:{i}") for i in range(200)])
    assert shape(requests) == [("hr", 0, 125, 3), ("hr", 125, 75, 3)]


def test_a_multi_register_tag_is_never_split_at_the_cap() -> None:
    """A float32 at 124-125 moves whole into the next request."""
    tags = [tag(f"hr:{i}") for i in range(124)] + [tag("hr:124", "float32")]
    requests = plan_reads(tags)
    assert shape(requests) == [("hr", 0, 124, 3), ("hr", 124, 2, 3)]
    assert slots(requests[1]) == [("hr:124", 0, 2)]


def test_a_smaller_device_cap_is_respected() -> None:
    """max_registers=4: ten uint16 take three reads."""
    requests = plan_reads([tag(f"ir:{i}") for i in range(10)], max_registers=4)
    assert shape(requests) == [("ir", 0, 4, 4), ("ir", 4, 4, 4), ("ir", 8, 2, 4)]


def test_bits_count_bits_not_registers() -> None:
    """2,100 coils take two reads (2000 + 100); 200 inputs take one."""
    tags = [tag(f"co:{i}", "bool") for i in range(2100)]
    tags += [tag(f"di:{i}", "bool") for i in range(200)]
    assert shape(plan_reads(tags)) == [("co", 0, 2000, 1), ("co", 2000, 100, 1), ("di", 0, 200, 2)]


def test_areas_are_never_mixed_and_come_in_a_fixed_order() -> None:
    """hr, ir, co, di each have their own requests, whatever the config order."""
    tags = [tag("di:0", "bool"), tag("co:0", "bool"), tag("ir:0"), tag("hr:0")]
    assert shape(plan_reads(tags)) == [
        ("hr", 0, 1, 3),
        ("ir", 0, 1, 4),
        ("co", 0, 1, 1),
        ("di", 0, 1, 2),
    ]


def test_overlapping_tags_share_one_read() -> None:
    """A uint32 and the uint16 views of its two halves are one read of 2 registers."""
    tags = [tag("hr:10", "uint32", "T.whole"), tag("hr:10", name="T.hi"), tag("hr:11", name="T.lo")]
    requests = plan_reads(tags)
    assert shape(requests) == [("hr", 10, 2, 3)]
    assert sorted((s.tag.tag, s.start, s.count) for s in requests[0].slots) == [
        ("T.hi", 0, 1),
        ("T.lo", 1, 1),
        ("T.whole", 0, 2),
    ]


def test_every_tag_is_served_once_with_its_index() -> None:
    """Slots point back at the tag's position in the config."""
    tags = [tag("hr:5"), tag("co:1", "bool"), tag("hr:4")]
    served = sorted(s.index for r in plan_reads(tags) for s in r.slots)
    assert served == [0, 1, 2]
    for request in plan_reads(tags):
        for slot in request.slots:
            assert tags[slot.index] is slot.tag


def test_unsorted_input_gives_the_same_plan() -> None:
    """The plan depends on the set of tags, not on their order in the config."""
    tags = [tag(f"hr:{i}", "float32") for i in range(0, 300, 2)] + [tag("hr:400")]
    shuffled = tags[:]
    random.Random(7).shuffle(shuffled)
    assert shape(plan_reads(shuffled)) == shape(plan_reads(tags))
    assert shape(plan_reads(tags)) == [
        ("hr", 0, 124, 3),
        ("hr", 124, 124, 3),
        ("hr", 248, 52, 3),
        ("hr", 400, 1, 3),
    ]


def test_a_tag_wider_than_the_cap_is_refused() -> None:
    """A float64 cannot be read 2 registers at a time."""
    with pytest.raises(ValueError, match="needs 4 registers but the device reads at most 2"):
        plan_reads([tag("hr:0", "float64")], max_registers=2)


def test_no_tags_no_requests() -> None:
    """An empty tag list plans nothing."""
    assert plan_reads([]) == []


# --- learning holes: bisect a refused read, coalesce what answered ---------------------------


def learn(
    requests: list[ReadRequest], refuses: Callable[[ReadRequest], bool], cap: int = 125
) -> tuple[list[ReadRequest], int]:
    """The driver's learning poll, without the device: the plan it keeps and the requests
    the learning sent. `refuses(request)` plays a device answering exception 2."""
    pending, kept, good, refused, sent = list(requests), [], set(), set(), 0
    while pending:
        request = pending.pop(0)
        sent += 1
        if refuses(request):
            if len(request.slots) > 1:
                refused.add((request.area, request.address, request.count))
                pending[:0] = bisect(request)
                continue
        else:
            good.add(id(request))
        kept.append(request)
    return coalesce(kept, good, refused, max_registers=cap), sent


def hole(start: int, end: int) -> Callable[[ReadRequest], bool]:
    """A device without registers start..end-1."""
    return lambda r: r.address < end and start < r.address + r.count


def test_bisect_halves_the_tags_and_reads_each_half_over_its_own_span() -> None:
    (merged,) = plan_reads([tag(f"hr:{a}") for a in range(8)])
    parts = bisect(merged)
    assert shape(parts) == [("hr", 0, 4, 3), ("hr", 4, 4, 3)]
    assert [s.index for p in parts for s in p.slots] == list(range(8))


def test_bisect_never_cuts_tags_that_share_registers() -> None:
    """hr:0 as float32 and hr:1 as uint16 share hr:1: they stay in one part."""
    (merged,) = plan_reads([tag("hr:0", "float32"), tag("hr:1"), tag("hr:2"), tag("hr:3")])
    assert shape(bisect(merged)) == [("hr", 0, 2, 3), ("hr", 2, 2, 3)]
    (shared,) = plan_reads([tag("hr:0", "float32"), tag("hr:1")])
    assert shape(bisect(shared)) == [("hr", 0, 2, 3), ("hr", 1, 1, 3)]


def test_a_single_tag_read_is_not_split_further() -> None:
    (single,) = plan_reads([tag("hr:7")])
    assert bisect(single) == [single]


def test_one_hole_costs_the_two_sides_plus_the_tags_inside_it() -> None:
    """30 one-register tags at hr:0-29, hr:10-19 missing: 12 requests per poll (the two
    sides and the ten tags of the hole), not one per tag."""
    tags = [tag(f"hr:{a}") for a in range(30)]
    plan, sent = learn(plan_reads(tags), hole(10, 20))
    assert shape(plan)[0] == ("hr", 0, 10, 3)
    assert shape(plan)[-1] == ("hr", 20, 10, 3)
    assert len(plan) == 2 + 10
    assert sent < 30  # bisection learns in fewer requests than one per tag


def test_a_wide_tag_in_a_hole_costs_one_request() -> None:
    """hr:0-4 good, a float64 at hr:5 (hr:5-8) in the hole, hr:9-12 good: three requests."""
    tags = [tag(f"hr:{a}") for a in range(5)]
    tags += [tag("hr:5", "float64")] + [tag(f"hr:{a}") for a in range(9, 13)]
    plan, _ = learn(plan_reads(tags), hole(6, 7))
    assert shape(plan) == [("hr", 0, 5, 3), ("hr", 5, 4, 3), ("hr", 9, 4, 3)]


def test_coalesce_never_joins_over_a_span_the_device_refused() -> None:
    """A device that refuses reads of more than 8 registers with exception 2 is not a
    hole: the learned plan reads 8 at a time and is never joined back into the refused
    read (which would be refused, and learned, on every poll)."""
    tags = [tag(f"hr:{a}") for a in range(16)]
    plan, _ = learn(plan_reads(tags), lambda r: r.count > 8)
    assert shape(plan) == [("hr", 0, 8, 3), ("hr", 8, 8, 3)]


def test_learned_plans_serve_every_tag_once_and_read_no_hole() -> None:
    """Random tags and holes: every tag is in exactly one request, and a request that
    touches a hole holds one tag: the hole costs only the tags that name it."""
    rng = random.Random(3)
    for _ in range(200):
        offsets = sorted(rng.sample(range(100), 20))
        tags = [tag(f"hr:{o}", rng.choice(["uint16", "float32"]), name=f"T{o}") for o in offsets]
        start = rng.randrange(100)
        refuses = hole(start, start + rng.randrange(1, 10))
        plan, _ = learn(plan_reads(tags, max_gap=rng.choice([0, 3])), refuses)
        assert sorted(s.index for r in plan for s in r.slots) == list(range(len(tags)))
        for request in plan:
            if refuses(request):
                assert len(request.slots) == 1


def test_bisect_parts_read_nothing_the_request_did_not() -> None:
    rng = random.Random(3)
    for _ in range(50):
        offsets = sorted(rng.sample(range(100), 12))
        tags = [tag(f"hr:{o}", name=f"T{o}") for o in offsets]
        for request in plan_reads(tags, max_gap=5):
            parts = bisect(request)
            assert sorted(s.index for p in parts for s in p.slots) == sorted(
                s.index for s in request.slots
            )
            for part in parts:
                assert request.address <= part.address
                assert part.address + part.count <= request.address + request.count
