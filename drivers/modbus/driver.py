"""The Modbus driver: one unit id on one link (TCP, RTU over serial, RTU over TCP).

Invariants:
- Read-only. Every request goes through `Link.request`, which calls only the
  four reads (function codes 1-4). No write method is named in this package.
- `read()` returns one Sample per tag due in this poll, in config order: every
  tag polled at the device's interval, plus the tags of each slower poll group
  whose own monotonic deadline has come. It never raises for what the device
  or the network does; a cancelled `read()` still raises CancelledError.
- Qualities: an exception response -> q=2 for that request's tags only; no
  answer, a gateway's exception 10/11 or a transport error -> q=2 for that
  request and every request after it in this poll; a value that cannot be
  decoded -> q=4 for that tag only; an NE43 fault band or a device fault
  value -> q=3, no value; outside the instrument range -> q=1, value kept;
  while the link is down or the unit demoted -> q=2 for every due tag,
  without touching the network. With `read_all`, every bad tag says why
  (`Reading.reason`, in the words of `reasons.py`).
- Within one poll: a request whose connection dropped is resent once on a new
  connection (`Link.recover`); a request answered busy (6) or acknowledge (5)
  is resent after a pause, up to BUSY_RETRIES times. Only what still fails
  is q=2.
- A merged read refused with exception 2 (illegal address) is bisected and
  the halves re-sent in the same poll, until each refused part is one tag;
  the parts that answered are joined again where they touch (`plan.coalesce`).
  The learned plan is kept, and tried whole again after REPROBE_S.
- Isolation: a unit that gives no answer in DEMOTE_AFTER polls in a row is
  demoted and only probed (`health.py`); the link is dropped only when the
  transport fails or every unit on it is silent. Up/down is debounced.
- A sample's ts_ms is the wall clock when its response arrived (or when the
  request failed).
- Logs state changes only: link up/down, a unit demoted or promoted, a request
  refused or answered again, a learned read plan, a tag failing or passing
  decoding, a poll group overrun.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import cast

import structlog
from pymodbus.pdu import ModbusPDU

from edge_agent.drivers.modbus import reasons
from edge_agent.drivers.modbus.codec import Area
from edge_agent.drivers.modbus.config import ModbusDevice
from edge_agent.drivers.modbus.health import DEMOTE_AFTER, UnitHealth
from edge_agent.drivers.modbus.link import (
    SILENCE_ERRORS,
    TRANSPORT_ERRORS,
    Link,
    join_link,
    leave_link,
)
from edge_agent.drivers.modbus.plan import ReadRequest, Slot, bisect, coalesce, plan_reads
from edge_agent.drivers.modbus.values import (
    Raw,
    RequestDecoder,
    compile_request,
    decode_batch,
    pack_registers,
    to_sample,
)
from edge_agent.model import LinkState, Quality, Sample
from edge_agent.schedule import Deadline

__all__ = ["ModbusDriver", "Reading", "Stats", "to_sample"]

_Out = list[Sample | None]
_DECODE_ERRORS = (ValueError, IndexError, struct.error)

BUSY_RETRIES = 2
"""Resends of a request the device answered busy (6) or acknowledge (5), in one poll."""
BUSY_PAUSE_S = 0.05
"""The pause before the first such resend; the second waits twice as long."""

REPROBE_S = 600.0
"""A learned read plan is tried whole again after this long: PLC programs change."""


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(slots=True)
class PollGroup:
    """Tags read at one interval, and their requests."""

    interval: float
    plan: list[ReadRequest]
    planned: tuple[ReadRequest, ...]
    """The plan from the config, before any hole was learned."""
    schedule: Deadline = field(init=False)
    overruns: int = 0
    refused_spans: set[tuple[Area, int, int]] = field(default_factory=set)
    """Spans answered with exception 2, which `coalesce` never joins over again."""
    learned_at: float | None = None
    """When a hole was learned (monotonic): the plan goes back to `planned` REPROBE_S later."""
    learned: tuple[str, ...] = ()
    """The plan last learned, as text: learning it again after a re-probe is not news."""

    def __post_init__(self) -> None:
        self.schedule = Deadline(self.interval)

    @property
    def size(self) -> int:
        """Tags in the group."""
        return sum(len(r.slots) for r in self.plan)


@dataclass(slots=True)
class Stats:
    polls: int = 0
    requests: int = 0
    refused: int = 0
    failed: int = 0
    overruns: int = 0
    values: int = 0
    busy_retries: int = 0
    drop_retries: int = 0
    skipped_demoted: int = 0
    """Polls answered q=2 without asking, while the unit was demoted."""


@dataclass(slots=True)
class Reading:
    """A sample with the raw registers (or bits) it came from, for commissioning."""

    sample: Sample
    raw: Raw | None = field(default=None)
    reason: str | None = field(default=None)
    """Why the tag has no good value, in Modbus terms (`drivers/modbus/reasons.py`)."""


class ModbusDriver:
    """Reads every tag of one Modbus unit with the fewest requests."""

    def __init__(self, device: ModbusDevice, *, health: UnitHealth | None = None) -> None:
        self._device = device
        self._tags = device.tags
        self._groups = self._make_groups(device)
        self._always_all = [g.interval for g in self._groups] == [device.poll]
        self._health = health or UnitHealth.demotion(device.reconnect_max)
        self._link: Link | None = None
        self._retried_drop = False
        with contextlib.suppress(RuntimeError):  # no running loop: join on the first read
            # Joining now lets the link count every unit on it from the start, so one
            # silent unit is never taken for a dead link before its siblings polled.
            self._link = join_link(device)
        self._lock = asyncio.Lock()
        self._state = LinkState.DOWN
        self._state_known = False
        self._down_reason: str | None = None
        self._refused: dict[tuple[int, int, int], int] = {}
        self._unexpected: set[str] = set()
        self._undecodable: set[int] = set()
        self._raw: dict[int, Raw] = {}
        self._reasons: dict[int, str] = {}
        self._keep_raw = False
        # id(request) -> (request, its decoder); holding the request keeps its id from
        # being reused by another request while the entry lives.
        self._decoders: dict[int, tuple[ReadRequest, RequestDecoder]] = {}
        self.stats = Stats()
        self._log = structlog.get_logger().bind(device=device.name)

    @staticmethod
    def _make_groups(device: ModbusDevice) -> list[PollGroup]:
        by_interval: dict[float, list[int]] = {}
        for index, tag in enumerate(device.tags):
            by_interval.setdefault(device.interval_of(tag), []).append(index)
        groups = []
        for interval in sorted(by_interval):
            indices = by_interval[interval]
            plan = plan_reads(
                [device.tags[i] for i in indices],
                max_registers=device.max_registers,
                max_bits=device.max_bits,
                max_gap=device.max_gap,
                indices=indices,
            )
            groups.append(PollGroup(interval, plan, planned=tuple(plan)))
        return groups

    @property
    def name(self) -> str:
        return self._device.name

    @property
    def link(self) -> LinkState:
        return self._state

    @property
    def link_reason(self) -> str | None:
        """Why the device is down, as its `link_down` line said; None while up
        (`edge_agent.drivers.base.ExplainsLink`: /healthz shows it)."""
        return self._down_reason

    @property
    def requests(self) -> int:
        """Requests sent since start (`edge_agent.drivers.base.CountsRequests`)."""
        return self.stats.requests

    @property
    def plan(self) -> tuple[ReadRequest, ...]:
        """The requests one full poll sends while the link is up, in order."""
        return tuple(r for g in self._groups for r in g.plan)

    @property
    def groups(self) -> tuple[PollGroup, ...]:
        return tuple(self._groups)

    async def read(self) -> list[Sample]:
        out = await self._read(force=False)
        if self._always_all:
            return out  # type: ignore[return-value]  # every tag is due on every poll
        return [s for s in out if s is not None]

    async def read_all(self) -> list[Reading]:
        """Every tag once, whatever its poll group, with its raw registers."""
        self._keep_raw = True
        self._raw.clear()
        self._reasons.clear()
        try:
            samples = await self._read(force=True)
        finally:
            self._keep_raw = False
        return [
            Reading(s, self._raw.get(i), self._reasons.get(i))
            for i, s in enumerate(samples)
            if s is not None
        ]

    async def close(self) -> None:
        link, self._link = self._link, None
        if link is not None:
            leave_link(link, self._device.unit)

    async def _read(self, *, force: bool) -> _Out:
        async with self._lock:
            due = self._due(time.monotonic(), force)
            try:
                out = await self._poll(due)
            except asyncio.CancelledError:
                if self._link is not None and not self._link.shared:
                    self._link.drop()  # a request may be half done: start clean
                raise
            self.stats.polls += 1
            self.stats.values += sum(g.size for g in due)
            return out

    def _due(self, now: float, force: bool) -> list[PollGroup]:
        """The device's own group always; a slower group when its deadline has come.

        A slower group's deadlines are its own, on the monotonic clock, half a
        device poll of tolerance; a missed deadline is skipped and counted.
        """
        due = []
        slack = self._device.poll / 2
        for group in self._groups:
            if group.interval == self._device.poll:
                due.append(group)
                continue
            if not group.schedule.due(now, slack):
                if force:
                    due.append(group)  # commissioning reads it without moving its deadline
                continue
            due.append(group)
            missed = group.schedule.passed(now)
            if missed:
                group.overruns += missed
                self.stats.overruns += missed
                self._log.warning("poll_overrun", group=f"{group.interval:g}s", missed=missed)
        return due

    async def _poll(self, due: list[PollGroup]) -> _Out:
        out: _Out = [None] * len(self._tags)
        if not due:
            return out
        if self._link is None:
            self._link = join_link(self._device)
        link = self._link
        if link.was_lost:
            self._log.info("connection_lost", link=link.label)
        now = time.monotonic()
        self._retried_drop = False
        if not self._health.may_ask(now):
            self.stats.skipped_demoted += 1
            reason = (
                f"demoted: no answer in {DEMOTE_AFTER} polls in a row; "
                f"asked again in {self._health.probe_in(now):.0f}s"
            )
            self._fill_groups(out, due, reason)
            self._poll_ended(reason)
            return out
        if not await link.open(self._device.timeout):
            reason = f"connection: {link.last_error or 'waiting to reconnect'}"
            self._fill_groups(out, due, reason)
            self._poll_ended(reason)
            return out
        failed: str | None = None
        async with link.turn():  # the poll's requests in one turn on the link
            for group in due:
                if failed is not None:
                    self._fill_groups(out, [group], failed)
                else:
                    failed = await self._poll_group(link, group, out)
        self._poll_ended(failed)
        return out

    async def _poll_group(self, link: Link, group: PollGroup, out: _Out) -> str | None:
        """Send a group's requests; why, if the unit or link failed on the way.

        Responses are decoded once the group's last answer is in: a sample made
        on arrival would stay alive through the awaits of the requests after
        it, and with many devices polled at once those samples set off the
        garbage collector's passes (bench/modbus_poll.py, 20 devices of 100
        tags at 1 s: 30 in 10 s and now and then a full one, against 1-3 when
        decoded here).
        """
        self._reprobe_holes(group)
        pending = deque(group.plan)
        kept: list[ReadRequest] = []
        answered: list[tuple[ReadRequest, ModbusPDU, int]] = []
        good: set[int] = set()
        learned = False
        failed: str | None = None
        while pending:
            request = pending.popleft()
            response, failed = await self._ask(link, request)
            now = _now_ms()
            if response is None:
                for later in (request, *pending):
                    self._fill(out, later.slots, now, Quality.COMM, failed or "")
                kept.extend((request, *pending))
                break
            code = response.exception_code if response.isError() else 0
            if code == 2 and len(request.slots) > 1:
                group.refused_spans.add((request.area, request.address, request.count))
                pending.extendleft(reversed(bisect(request)))
                learned = True
                continue
            if code:
                self.stats.refused += 1
                self._note_refused(request, code)
                self._fill(out, request.slots, now, Quality.COMM, reasons.refused(code))
            else:
                if self._refused:
                    self._note_accepted(request)
                answered.append((request, response, now))
                good.add(id(request))
            kept.append(request)
        if learned:
            self._learned(group, kept, good)
        for request, response, now in answered:
            self._decode(request, response, now, out)
        return failed

    async def _ask(
        self, link: Link, request: ReadRequest
    ) -> tuple[ModbusPDU, None] | tuple[None, str]:
        """The device's answer (an exception response included), or why the unit or the
        link failed; never raises for what the device or the network does."""
        try:
            response = await self._exchange(link, request)
        except Exception as exc:  # the request boundary: nothing the device does escapes
            return None, self._failed(link, exc, request)
        if response.isError() and response.exception_code in reasons.UNIT_UNREACHABLE:
            link.answered()  # the gateway answers: the link is fine, the unit is not
            return None, self._unit_unreachable(link, request, response.exception_code)
        self._answered(link)
        return response, None

    async def _exchange(self, link: Link, request: ReadRequest) -> ModbusPDU:
        """One request, with what the protocol allows again within the poll: a resend on
        a new connection when the connection dropped (once per poll), and a resend after a
        pause when the device says busy or acknowledge (up to BUSY_RETRIES times)."""
        unit, timeout = self._device.unit, self._device.timeout
        busy = 0
        while True:
            generation = link.generation
            self.stats.requests += 1
            try:
                response = await link.request(
                    request.function_code, request.address, request.count, unit, timeout
                )
            except SILENCE_ERRORS:
                raise
            except TRANSPORT_ERRORS:
                if self._retried_drop:
                    raise
                self._retried_drop = True
                if not await link.recover(generation, timeout):
                    raise
                self.stats.drop_retries += 1
                continue
            if (
                response.isError()
                and response.exception_code in reasons.RETRY_LATER
                and busy < BUSY_RETRIES
            ):
                busy += 1
                self.stats.busy_retries += 1
                await asyncio.sleep(BUSY_PAUSE_S * busy)
                continue
            return response

    def _reprobe_holes(self, group: PollGroup) -> None:
        """Programs change: a learned plan goes back to the planned one now and then."""
        if group.learned_at is not None and time.monotonic() - group.learned_at >= REPROBE_S:
            group.plan = list(group.planned)
            group.refused_spans.clear()
            group.learned_at = None
            self._decoders.clear()

    def _learned(self, group: PollGroup, kept: list[ReadRequest], good: set[int]) -> None:
        device = self._device
        group.plan = coalesce(
            kept,
            good,
            group.refused_spans,
            max_registers=device.max_registers,
            max_bits=device.max_bits,
        )
        group.learned_at = time.monotonic()
        self._decoders.clear()
        learned = tuple(str(r) for r in group.plan)
        if learned != group.learned:
            group.learned = learned
            planned = [str(r) for r in group.planned]
            self._log.warning("read_plan_learned", before=planned, after=list(learned))

    def _fill_groups(self, out: _Out, groups: Sequence[PollGroup], reason: str) -> None:
        now = _now_ms()
        for group in groups:
            for request in group.plan:
                self._fill(out, request.slots, now, Quality.COMM, reason)

    # values

    def _decode(self, request: ReadRequest, response: ModbusPDU, now: int, out: _Out) -> None:
        if request.is_bits:
            self._decode_bits(request, response.bits, now, out)
            return
        self.decode_registers(request, cast(list[int], response.registers), now, out)

    def decode_registers(
        self, request: ReadRequest, registers: list[int], now: int, out: _Out
    ) -> None:
        """The samples of a register request's tags from its answer, into `out` at their
        indices; a tag its registers do not decode for is q=4. Never raises."""
        decoder = self._decoder_for(request)
        be, sw = pack_registers(registers, decoder.swapped)
        for batch in decoder.batches:
            decode_batch(batch, sw if batch.swapped else be, now, out, self._note_undecodable)
        for index, single in decoder.singles:
            try:
                out[index] = single(registers, be, sw, now)
            except _DECODE_ERRORS as exc:
                out[index] = Sample.bad(self._tags[index].tag, now, Quality.CONFIG)
                self._note_undecodable(index, exc)
        if self._undecodable:
            self._note_recovered(request, out)
        if self._keep_raw:
            for slot in request.slots:
                self._raw[slot.index] = [
                    int(r) for r in registers[slot.start : slot.start + slot.count]
                ]

    def _decode_bits(self, request: ReadRequest, bits: Sequence[bool], now: int, out: _Out) -> None:
        good = Quality.GOOD
        for slot in request.slots:
            out[slot.index] = Sample(slot.tag.tag, now, bool(bits[slot.start]), good)
        if self._keep_raw:
            for slot in request.slots:
                self._raw[slot.index] = [bool(bits[slot.start])]

    def _decoder_for(self, request: ReadRequest) -> RequestDecoder:
        """The compiled decoder of a request, built on first use."""
        cached = self._decoders.get(id(request))
        if cached is None:
            slots = [(slot.index, slot.tag, slot.start) for slot in request.slots]
            decoder = compile_request(slots, self._device.byte_order)
            cached = self._decoders[id(request)] = (request, decoder)
        return cached[1]

    def _note_recovered(self, request: ReadRequest, out: _Out) -> None:
        for slot in request.slots:
            sample = out[slot.index]
            if slot.index in self._undecodable and sample and sample.quality != Quality.CONFIG:
                self._undecodable.discard(slot.index)
                self._log.info("decode_recovered", tag=slot.tag.tag)

    def _note_undecodable(self, index: int, exc: Exception) -> None:
        if self._keep_raw:
            self._reasons[index] = f"cannot decode: {exc}"
        if index in self._undecodable:
            return
        self._undecodable.add(index)
        tag = self._tags[index]
        self._log.warning("decode_failed", tag=tag.tag, address=tag.address, error=str(exc))

    def _fill(self, out: _Out, slots: tuple[Slot, ...], now: int, q: Quality, reason: str) -> None:
        for slot in slots:
            self._fill_one(out, slot.index, now, q, reason)

    def _fill_one(self, out: _Out, index: int, now: int, q: Quality, reason: str) -> None:
        out[index] = Sample.bad(self._tags[index].tag, now, q)
        if self._keep_raw:
            self._reasons[index] = reason

    # state

    def _failed(self, link: Link, exc: Exception, request: ReadRequest) -> str:
        """Why the exchange failed; the unit (silence) or the link (transport) is told."""
        self.stats.failed += 1
        reason = reasons.failure(exc)
        if isinstance(exc, SILENCE_ERRORS):  # TimeoutError before OSError, its base class
            self._unit_silent(link, request, reason)
            if link.silent():
                reason += "; no unit on the link answered: it reconnects"
            return reason
        link.fail(f"{reason} on {request}")
        if not isinstance(exc, TRANSPORT_ERRORS) and reason not in self._unexpected:
            self._unexpected.add(reason)
            self._log.error("read_failed_unexpectedly", request=str(request), exc_info=exc)
        return reason

    def _unit_unreachable(self, link: Link, request: ReadRequest, code: int) -> str:
        self.stats.refused += 1
        reason = reasons.refused(code)
        self._unit_silent(link, request, reason)
        return reason

    def _unit_silent(self, link: Link, request: ReadRequest, reason: str) -> None:
        if self._health.silent(time.monotonic(), link.shared):
            self._log.warning(
                "unit_demoted",
                link=self._link_label,
                unit=self._device.unit,
                request=str(request),
                reason=reason,
                asked_again_in=round(self._health.probe_in(time.monotonic())),
            )

    def _answered(self, link: Link) -> None:
        link.answered()
        if self._health.answered():
            self._log.info("unit_promoted", link=self._link_label, unit=self._device.unit)

    def _poll_ended(self, failed: str | None) -> None:
        """The debounced up/down state (drivers/modbus/health.py), logged when it changes."""
        verdict = self._health.poll_ended(failed is None)
        if verdict is None and self._state_known:
            return
        up = failed is None if verdict is None else verdict
        state = LinkState.UP if up else LinkState.DOWN
        if state is self._state and self._state_known:
            return
        self._state, self._state_known = state, True
        self._down_reason = None if up else failed
        if up:
            self._log.info("link_up", link=self._link_label, unit=self._device.unit)
        else:
            self._log.warning(
                "link_down", link=self._link_label, unit=self._device.unit, reason=failed
            )

    @property
    def _link_label(self) -> str:
        return self._device.link_key[1]

    def _note_refused(self, request: ReadRequest, code: int) -> None:
        key = (request.function_code, request.address, request.count)
        if self._refused.get(key) == code:
            return
        self._refused[key] = code
        self._log.warning(
            "read_refused",
            request=str(request),
            function_code=request.function_code,
            exception_code=code,
            tags=[slot.tag.tag for slot in request.slots],
        )

    def _note_accepted(self, request: ReadRequest) -> None:
        key = (request.function_code, request.address, request.count)
        if self._refused.pop(key, None) is not None:
            self._log.info("read_recovered", request=str(request))
