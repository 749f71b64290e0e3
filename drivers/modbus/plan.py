"""The read planner: a device's tags -> the fewest Modbus read requests.

Pure: no I/O, no clock. The driver builds the plan once, when it is created, and
sends the same requests on every poll.

Invariants (each pinned by tests/unit/test_modbus_plan.py):
- One function code per area: hr -> 3, ir -> 4, co -> 1, di -> 2.
- Every tag is served by exactly one request, and a tag's registers are never
  split across two requests.
- No request reads more than `max_registers` registers (hr, ir) or `max_bits`
  bits (co, di).
- Tags merge into one request when their ranges overlap or touch, or leave at
  most `max_gap` unused addresses between them. The default gap is 0 because an
  address no tag names may not exist on the device, and a device answers a read
  that touches one with an exception for the whole request.
- The plan depends on the set of tags, not their order in the config.
- `bisect` only ever narrows a request: its parts read no address the request
  did not, and serve exactly the request's tags; `coalesce` joins only reads
  that answered and touch, never over a span that was refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from edge_agent.drivers.modbus.codec import BIT_AREAS, Area, register_count
from edge_agent.drivers.modbus.config import ModbusTag

FUNCTION_CODES: dict[Area, int] = {"co": 1, "di": 2, "hr": 3, "ir": 4}
"""The read function code of each area; the driver sends no other codes."""

_AREA_ORDER: tuple[Area, ...] = ("hr", "ir", "co", "di")

_Span = tuple[int, int, int, ModbusTag]
"""A tag in a request being planned: offset, width, index in the device, tag."""


@dataclass(frozen=True, slots=True)
class Slot:
    """Where one tag's data sits in a request's response."""

    index: int
    """The tag's position in the device's `tags` list."""
    tag: ModbusTag
    start: int
    """Offset of the tag's first register (or bit) in the response."""
    count: int
    """Registers (or bits) the tag occupies."""


@dataclass(frozen=True, slots=True)
class ReadRequest:
    """One read: `count` registers (or bits) of `area` from `address` on."""

    area: Area
    address: int
    count: int
    slots: tuple[Slot, ...]

    @property
    def function_code(self) -> int:
        return FUNCTION_CODES[self.area]

    @property
    def is_bits(self) -> bool:
        return self.area in BIT_AREAS

    def __str__(self) -> str:
        return f"{self.area}:{self.address}+{self.count}"


def plan_reads(
    tags: Sequence[ModbusTag],
    *,
    max_registers: int = 125,
    max_bits: int = 2000,
    max_gap: int = 0,
    indices: Sequence[int] | None = None,
) -> list[ReadRequest]:
    """Group `tags` into read requests, in the order hr, ir, co, di and by address.

    `indices` are the tags' positions in the device's list (default: their
    positions in `tags`). Raises ValueError if one tag alone is wider than
    `max_registers`: such a device config can never be read.
    """
    if max_gap < 0:
        raise ValueError(f"max_gap must be 0 or more, not {max_gap}")
    spans: dict[Area, list[_Span]] = {area: [] for area in _AREA_ORDER}
    for position, tag in enumerate(tags):
        index = position if indices is None else indices[position]
        address = tag.parsed_address
        width = 1 if address.area in BIT_AREAS else register_count(tag.type, tag.length)
        spans[address.area].append((address.offset, width, index, tag))
    requests: list[ReadRequest] = []
    for area in _AREA_ORDER:
        cap = max_bits if area in BIT_AREAS else max_registers
        requests.extend(_merge(area, spans[area], cap, max_gap))
    return requests


def bisect(request: ReadRequest) -> list[ReadRequest]:
    """A request refused with exception 2 (illegal address), in two halves.

    The tags are grouped into runs that share addresses (a run is never cut:
    its tags need the same registers) and the runs are halved, each half read
    over its own span only. Halving again whatever is refused again finds a
    hole in about log2(tags) requests; a single run refused is read one tag
    at a time, and a single tag refused is what the hole costs.
    """
    slots = request.slots
    if len(slots) <= 1:
        return [request]
    spans = sorted(
        ((request.address + s.start, s.count, s.index, s.tag) for s in slots),
        key=lambda span: (span[0], -span[1], span[2]),
    )
    runs: list[list[_Span]] = []
    end = -1
    for span in spans:
        if runs and span[0] < end:
            runs[-1].append(span)
            end = max(end, span[0] + span[1])
        else:
            runs.append([span])
            end = span[0] + span[1]
    if len(runs) == 1:
        return [_request(request.area, o, o + w, [(o, w, i, t)]) for o, w, i, t in spans]
    half = len(runs) // 2
    return [_spanning(request.area, run) for run in (runs[:half], runs[half:])]


def coalesce(
    requests: Sequence[ReadRequest],
    answered: set[int],
    refused: set[tuple[Area, int, int]],
    *,
    max_registers: int = 125,
    max_bits: int = 2000,
) -> list[ReadRequest]:
    """The plan after a bisection: neighbours that answered joined again where they
    touch, up to the size cap, unless the joined read would cover a span already
    refused (a device that refuses large reads with exception 2 looks like a hole).
    `answered` holds the `id()` of the requests that answered."""
    plan: list[ReadRequest] = []
    for request in requests:
        last = plan[-1] if plan else None
        if last is not None and id(last) in answered and id(request) in answered:
            joined = _join(last, request, max_bits if request.is_bits else max_registers)
            if joined is not None and not _covers_refused(joined, refused):
                plan[-1] = joined
                answered.add(id(joined))
                continue
        plan.append(request)
    return plan


def _spanning(area: Area, runs: list[list[_Span]]) -> ReadRequest:
    group = [span for run in runs for span in run]
    return _request(area, group[0][0], max(o + w for o, w, _, _ in group), group)


def _join(first: ReadRequest, second: ReadRequest, cap: int) -> ReadRequest | None:
    if first.area != second.area or first.address + first.count != second.address:
        return None
    if first.count + second.count > cap:
        return None
    moved = tuple(Slot(s.index, s.tag, s.start + first.count, s.count) for s in second.slots)
    return ReadRequest(first.area, first.address, first.count + second.count, first.slots + moved)


def _covers_refused(request: ReadRequest, refused: set[tuple[Area, int, int]]) -> bool:
    end = request.address + request.count
    return any(
        area == request.area and request.address <= address and address + count <= end
        for area, address, count in refused
    )


def _merge(area: Area, spans: list[_Span], cap: int, max_gap: int) -> list[ReadRequest]:
    """Greedy merge in address order: optimal for a cap plus a gap limit.

    A tag that does not fit closes the current request and opens the next one;
    a later tag that would have fitted the closed one fits the new one too,
    since the new one starts no later than that tag and ends no earlier.
    """
    requests: list[ReadRequest] = []
    group: list[_Span] = []
    start = end = 0
    for offset, width, index, tag in sorted(spans, key=lambda s: (s[0], -s[1], s[2])):
        if offset + width > 65536:
            raise ValueError(f"tag {tag.tag} ({tag.type} at {tag.address}) runs past address 65535")
        if width > cap:
            raise ValueError(
                f"tag {tag.tag} ({tag.type} at {tag.address}) needs {width} registers "
                f"but the device reads at most {cap} per request"
            )
        if group and offset - end <= max_gap and max(end, offset + width) - start <= cap:
            end = max(end, offset + width)
        else:
            if group:
                requests.append(_request(area, start, end, group))
            group, start, end = [], offset, offset + width
        group.append((offset, width, index, tag))
    if group:
        requests.append(_request(area, start, end, group))
    return requests


def _request(area: Area, start: int, end: int, group: list[_Span]) -> ReadRequest:
    slots = tuple(Slot(index, tag, offset - start, width) for offset, width, index, tag in group)
    return ReadRequest(area, start, end - start, slots)
