"""The OPC UA driver: one server endpoint, read by batched polls or by a subscription.

Invariants:
- Read-only. The driver sends Read, TranslateBrowsePaths, GetEndpoints and the
  session and subscription services; it never sends Write or Call (a test
  greps this package for them).
- `read()` never raises for what the server or the network does (a cancelled
  `read()` still raises CancelledError). Every connect is bounded by
  `connect_timeout`, every request by `timeout`.
- Poll mode: `read()` returns one sample per due tag (every tag at the device's
  poll, a poll group's tags when its deadline comes), read in batches of at most
  the server's MaxNodesPerRead. Every call with many operations (Read,
  TranslateBrowsePathsToNodeIds, CreateMonitoredItems) is cut to the server's
  operation limits, announced or found out (drivers/opcua/limits.py); what is
  found out is kept for the life of the driver.
- Subscribe mode: `read()` returns every data change received since the last
  call, in arrival order (a spike between two polls is not lost), then, for each
  tag that did not change, its latest value again, stamped with the
  subscription's last Publish response: the live subscription vouches that it
  was current then, so the rules stage sees every tag at every poll and can send
  its heartbeat. A tag with no value yet (just subscribed) is left out until its
  first notification. The keep-alive asked for is at most half `report_every`
  (the shortest report interval of the tags); one the server revised past that
  is logged once (`keepalive_too_long`), since the driver cannot change it.
- Qualities: from each value's StatusCode (drivers/opcua/quality.py); a node
  that cannot be resolved, or whose value cannot be carried (an array without
  index, a type mismatch) -> q=4, logged once per tag and reason; while the link
  is down or backing off -> q=2 for every due tag, without touching the network.
- A failed request, a dropped connection or a stale subscription that cannot
  be made again ends the session: link DOWN, retry after a backoff delay
  (reconnect_min doubling to reconnect_max, with jitter), reset by the first
  good read. A new session re-resolves every tag and re-creates the subscription.
- While the session is up, the tags refused at connect (a browse path or a
  namespace URI that did not resolve; in subscribe mode a monitored item the
  server refused) are tried again every RETRY_REFUSED_EVERY, from `read()`
  after its samples: resolved again, and their monitored items added to the
  live subscription. The other tags and the subscription are not touched; a
  retry is bounded by `timeout`, and one that fails changes nothing and ends
  nothing (a lost connection is found by the next read).
- Logs state changes only: link up/down, a tag failing or recovering, a stale
  subscription, dropped notifications, an operation limit found out. A tag
  still refused at a retry logs nothing. A reason (link_down, `read_all`'s
  failure, `link_reason`) is drivers/opcua/explain.py's: the cause in the
  technician's words, never an exception's class.
- `read_all()` (for `edge-agent read`) reads every tag once by Read, in either
  mode, on a session of its own that it closes again; it too never raises for
  what the server or the network does, and is bounded by the same timeouts.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import structlog
from asyncua import ua

from edge_agent.backoff import Backoff
from edge_agent.drivers.opcua.config import OpcuaDevice
from edge_agent.drivers.opcua.explain import ChannelRefused, describe
from edge_agent.drivers.opcua.limits import Call, Learned
from edge_agent.drivers.opcua.quality import quality_of, status_name
from edge_agent.drivers.opcua.security import CertificateFileError, NoEndpoint, Untrusted
from edge_agent.drivers.opcua.session import (
    CredentialError,
    Session,
    close_client,
    open_session,
    resolve_refused,
)
from edge_agent.drivers.opcua.subscriber import Subscribed, subscribe
from edge_agent.drivers.opcua.values import report_time, to_sample, type_name
from edge_agent.model import LinkState, Quality, Sample
from edge_agent.schedule import Deadline

__all__ = ["OpcuaDriver", "Survey", "TagReading"]

RETRY_REFUSED_EVERY = 60.0
"""Seconds between two retries of the tags refused at connect, while the session is up.
A node deployed on the server (or a typo fixed there) is picked up within this, and
a server with many missing nodes gets at most one resolve per minute."""


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class LinkLost(Exception):
    """The session cannot be used any more; the message says why."""


@dataclass(frozen=True, slots=True)
class TagReading:
    """One tag read once, with what explains it to a technician (`read_all`)."""

    sample: Sample
    node: str | None
    """The NodeId the tag resolved to at this connect; None when it did not resolve."""
    data_type: str | None
    """The built-in type the server sent the value as (Double, Double[3]); None without one."""
    reason: str | None
    """Why the tag is bad (q >= 2): the StatusCode's name, a type mismatch, a node or
    browse path that did not resolve; None when good or uncertain."""


@dataclass(frozen=True, slots=True)
class Survey:
    """Every tag of the device read once (`read_all`), in config order."""

    readings: list[TagReading]
    failure: str | None = None
    """Why the server could not be read at all (every tag is then q=2); None when it was."""


@dataclass(slots=True)
class PollGroup:
    """Tags read at one interval; what to read of them is made at each connect."""

    interval: float
    indices: list[int]
    items: tuple[list[int], list[ua.ReadValueId]] | None = None
    """The tags whose node resolved, and a ReadValueId for each (the same order)."""
    schedule: Deadline = field(init=False)

    def __post_init__(self) -> None:
        self.schedule = Deadline(self.interval)


class OpcuaDriver:
    """Reads every tag of one OPC UA server; see the module docstring."""

    def __init__(
        self,
        device: OpcuaDevice,
        *,
        report_every: float | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        """`report_every`: the shortest report interval of the device's tags; None when
        nothing is reported (`read_all`, a benchmark)."""
        self._device = device
        self._report_every = report_every
        self._keepalive_count = device.keepalive_within(report_every)
        self._keepalive_told = False
        """A keep-alive over half `report_every` was logged (once per driver)."""
        self._tags = device.tags
        self._backoff = backoff or Backoff(device.reconnect_min, device.reconnect_max)
        self._retry_at = 0.0
        self._refused_retry_at = 0.0
        self._session: Session | None = None
        self._learned: Learned = {}
        """Operation limits found out (limits.py), kept across reconnects."""
        self._reason: str | None = None
        self._subscribed: Subscribed | None = None
        self._last: dict[int, Sample] = {}
        self._groups = _groups(device)
        self._problems: dict[int, str] = {}
        self._timestamps_replaced = 0
        self._reads = 0
        self._skewed = False
        """The last SourceTimestamp was refused as too far off: logged once until one agrees."""
        self._state = LinkState.DOWN
        self._state_known = False
        self._lock = asyncio.Lock()
        self._log = structlog.get_logger().bind(device=device.name)

    @property
    def name(self) -> str:
        return self._device.name

    @property
    def link(self) -> LinkState:
        return self._state

    @property
    def link_reason(self) -> str | None:
        """Why the link is down, as in `link_down`; None while it is up."""
        return None if self._state is LinkState.UP else self._reason

    async def read(self) -> list[Sample]:
        async with self._lock:
            due = self._due(time.monotonic())
            session = await self._session_or_none()
            if session is None:
                return self._all_bad(due, Quality.COMM)
            try:
                if self._device.mode == "poll":
                    samples = await self._poll(session, due)
                else:
                    samples = await self._collect(session)
                await self._retry_refused(session)
            except asyncio.CancelledError:
                await self._drop("the read was cancelled")
                raise
            except Exception as exc:  # the request boundary: nothing the server does escapes
                await self._drop(self._describe(exc), exc=None if _expected(exc) else exc)
                return self._all_bad(due, Quality.COMM)
            self._backoff.reset()
            return samples

    async def read_all(self) -> Survey:
        """Every tag once, whatever the mode and poll groups, with its node, type and reason.

        A session of its own, closed again before returning: commissioning reads once,
        and a subscription would only delay the first values.
        """
        async with self._lock:
            try:
                session = await open_session(self._device, self._log, self._learned)
            except Exception as exc:  # connect boundary, as in _session_or_none
                return self._failed(f"cannot connect: {self._describe(exc)}", exc)
            try:
                return await self._survey(session)
            except Exception as exc:  # request boundary, as in read
                return self._failed(f"cannot read: {self._describe(exc)}", exc)
            finally:
                await close_client(session.client, self._device.timeout)

    async def close(self) -> None:
        async with self._lock:
            await self._drop(None)

    # connection

    async def _session_or_none(self) -> Session | None:
        if self._session is not None:
            return self._session
        if time.monotonic() < self._retry_at:
            return None
        try:
            session = await open_session(self._device, self._log, self._learned)
        except Exception as exc:  # connect boundary: the reason is logged, the tags go q=2
            self._went_down(self._describe(exc), exc=None if _expected(exc) else exc)
            self._retry_at = time.monotonic() + self._backoff.next()
            return None
        self._session = session
        self._refused_retry_at = time.monotonic() + RETRY_REFUSED_EVERY
        self._note_refused(session)
        if self._device.mode == "subscribe":
            try:
                async with asyncio.timeout(self._device.connect_timeout):
                    await self._subscribe(session)
            except Exception as exc:
                await self._drop(f"cannot subscribe: {self._describe(exc)}")
                return None
        else:
            self._plan(session)
        self._came_up(session)
        return session

    async def _drop(self, reason: str | None, exc: Exception | None = None) -> None:
        """End the session; with a reason the link went down and a retry is scheduled."""
        session, self._session, self._subscribed = self._session, None, None
        self._last.clear()
        for group in self._groups:
            group.items = None
        if reason is not None:
            self._went_down(reason, exc=exc)
            self._retry_at = time.monotonic() + self._backoff.next()
        if session is not None:
            await close_client(session.client, self._device.timeout)

    # poll mode

    def _due(self, now: float) -> list[PollGroup]:
        """The device's own group always; a slower group when its deadline has come."""
        due = []
        slack = self._device.poll / 2
        for group in self._groups:
            if group.interval != self._device.poll and not group.schedule.due(now, slack):
                continue
            due.append(group)
            group.schedule.passed(now)
        return due

    def _plan(self, session: Session) -> None:
        for group in self._groups:
            group.items = _read_items(session, group.indices)

    async def _poll(self, session: Session, due: list[PollGroup]) -> list[Sample]:
        out: list[Sample | None] = [None] * len(self._tags)
        for group in due:
            indices, items = group.items or ([], [])
            values = await self._read(session, items)
            now = _now_ms()
            for index, value in zip(indices, values, strict=True):
                out[index] = self._judge(index, value, now)
            now = _now_ms()
            for index in group.indices:
                if index in session.refused:
                    out[index] = Sample.bad(self._tags[index].tag, now, Quality.CONFIG)
        return [s for s in out if s is not None]

    # one-shot read (commissioning)

    async def _survey(self, session: Session) -> Survey:
        for index, reason in session.refused.items():
            self._note_problem(index, reason)
        indices, items = _read_items(session, range(len(self._tags)))
        answers = await self._read(session, items)
        values = dict(zip(indices, answers, strict=True))
        now = _now_ms()
        readings = []
        for index, tag in enumerate(self._tags):
            node = session.nodes[index]
            if node is None:
                sample = Sample.bad(tag.tag, now, Quality.CONFIG)
                readings.append(TagReading(sample, None, None, session.refused[index]))
                continue
            value = values[index]
            sample = self._judge(index, value, now)
            # _judge keeps the reason of a bad value (and forgets it once the value is good).
            problem = self._problems.get(index)
            readings.append(TagReading(sample, node.to_string(), type_name(value.Value), problem))
        return Survey(readings)

    async def _read(self, session: Session, items: list[ua.ReadValueId]) -> list[ua.DataValue]:
        """One Read per MaxNodesPerRead items (limits.py), each bounded by `timeout`."""
        uaclient, timeout = session.client.uaclient, self._device.timeout

        async def send(piece: list[ua.ReadValueId]) -> list[ua.DataValue]:
            params = ua.ReadParameters()
            params.MaxAge = 0
            # A poll's report time is when its answer arrives: a server keeps a value's
            # SourceTimestamp until the value changes, which is no read time (the spec's
            # `ts`), so no timestamp is asked for.
            params.TimestampsToReturn = ua.TimestampsToReturn.Neither
            params.NodesToRead = piece
            self._reads += 1
            async with asyncio.timeout(timeout):
                return await uaclient.read(params)  # type: ignore[no-any-return]  # untyped

        return await session.limits.chunked(Call.READ, items, send)

    def _failed(self, reason: str, exc: Exception) -> Survey:
        self._went_down(reason, exc=None if _expected(exc) else exc)
        now = _now_ms()
        readings = [
            TagReading(Sample.bad(tag.tag, now, Quality.COMM), None, None, reason)
            for tag in self._tags
        ]
        return Survey(readings, reason)

    # subscribe mode

    async def _subscribe(self, session: Session) -> None:
        self._subscribed = await subscribe(
            session.client, self._device, session.nodes, session.limits, self._keepalive_count
        )
        self._note_refused(session)
        self._note_keepalive(self._subscribed.keepalive)

    def _note_keepalive(self, keepalive: float) -> None:
        """Log, once, a keep-alive the server granted longer than half `report_every`."""
        if self._report_every is None or self._keepalive_told:
            return
        if keepalive > self._report_every / 2 + 1e-6:  # granted in float ms: 100.0 x 3
            self._keepalive_told = True
            self._log.warning(
                "keepalive_too_long",
                keepalive_s=round(keepalive, 3),
                most_s=self._report_every / 2,
                why="the server revised the publishing interval or the keep-alive count up",
            )

    async def _collect(self, session: Session) -> list[Sample]:
        if not session.alive:
            raise LinkLost("the connection to the server was lost")
        subscribed = self._subscribed
        assert subscribed is not None  # made with the session
        stale = subscribed.stale()
        if stale is not None:
            self._log.warning("subscription_stale", reason=stale)
            self._last.clear()
            with contextlib.suppress(Exception, asyncio.TimeoutError):
                async with asyncio.timeout(self._device.timeout):
                    await subscribed.delete()
            async with asyncio.timeout(self._device.connect_timeout):
                await self._subscribe(session)
            self._log.info("subscription_made_again")
            return self._all_bad(self._groups, Quality.COMM)
        buffer = subscribed.buffer
        changes = buffer.take()
        if buffer.dropped:
            self._log.warning("notifications_dropped", count=buffer.dropped)
            buffer.dropped = 0
        samples, changed = [], set()
        max_skew_ms = round(self._device.max_clock_skew * 1000)
        for index, value, arrived in changes:
            if index in self._last:
                ts, skew = report_time(value, arrived, max_skew_ms)
                self._note_skew(skew)
            else:
                # The first word on an item after (re)subscribing is its current value, which
                # may have been set long ago: current as of its arrival, and no clock skew.
                ts = arrived
            sample = self._judge(index, value, ts)
            samples.append(sample)
            self._last[index] = sample
            changed.add(index)
        now = _now_ms()
        confirmed = subscribed.confirmed_ms(now)
        for index, tag in enumerate(self._tags):
            if index in changed:
                continue
            if index in session.refused:
                samples.append(Sample.bad(tag.tag, now, Quality.CONFIG))
            elif index in subscribed.refused:
                samples.append(Sample.bad(tag.tag, now, quality_of(subscribed.refused[index])))
            elif (last := self._last.get(index)) is not None:
                # Unchanged: current as of the server's last word on it, not as of now.
                samples.append(last._replace(ts_ms=max(confirmed, last.ts_ms)))
        return samples

    # tags refused at connect

    async def _retry_refused(self, session: Session) -> None:
        """Every RETRY_REFUSED_EVERY, resolve (and monitor) again the tags refused at connect.

        A healthy session is never made again, so without this a node the DCS engineer
        deploys minutes after the connect would stay bad until a restart. Only the
        refused tags are sent; the new Session (same client) and the new monitored items
        are taken together once both succeeded. Never raises but CancelledError.
        """
        subscribed = self._subscribed
        if not session.refused and not (subscribed is not None and subscribed.refused):
            return
        now = time.monotonic()
        if now < self._refused_retry_at:
            return
        self._refused_retry_at = now + RETRY_REFUSED_EVERY  # a failed retry waits as long
        try:
            async with asyncio.timeout(self._device.timeout):
                again = await resolve_refused(self._device, session)
                if subscribed is not None:
                    retried = (*session.refused, *subscribed.refused)
                    nodes = {i: node for i in retried if (node := again.nodes[i]) is not None}
                    await subscribed.monitor(nodes)
        except Exception as exc:  # the retry's boundary: the tags stay as they were
            # Expected failures (a timeout, a lost connection) are the next read's to report;
            # a bug of ours is shown.
            reason = self._describe(exc)
            if _expected(exc):
                self._log.debug("refused_retry_failed", reason=reason)
            else:
                self._log.warning("refused_retry_failed", reason=reason, exc_info=exc)
            return
        self._session = again
        if subscribed is None:
            self._plan(again)
        self._note_refused(again)

    def _note_refused(self, session: Session) -> None:
        """A tag_bad line for each tag refused at connect, once per reason (_note_problem)."""
        for index, reason in session.refused.items():
            self._note_problem(index, reason)
        if self._subscribed is not None:
            for index, code in self._subscribed.refused.items():
                self._note_problem(index, f"monitored item refused: {status_name(code)}")

    # values and state

    def _judge(self, index: int, value: ua.DataValue, now: int) -> Sample:
        sample, problem = to_sample(self._tags[index], value, now)
        if problem is not None:
            self._note_problem(index, problem)
        elif index in self._problems:
            del self._problems[index]
            self._log.info("tag_recovered", tag=self._tags[index].tag)
        return sample

    @property
    def requests(self) -> int:
        """Read requests sent since start (`edge_agent.drivers.base.CountsRequests`); a
        subscription's notifications come without asking."""
        return self._reads

    @property
    def timestamps_replaced(self) -> int:
        """SourceTimestamps not believed since start (`edge_agent.drivers.base.CountsClockSkew`)."""
        return self._timestamps_replaced

    def _note_skew(self, skew_ms: int | None) -> None:
        """Count a SourceTimestamp replaced; log when the server's clock goes off or back."""
        if skew_ms is None:
            if self._skewed:
                self._skewed = False
                self._log.info("device_clock_agrees")
            return
        self._timestamps_replaced += 1
        if not self._skewed:
            self._skewed = True
            self._log.warning(
                "device_clock_skewed",
                skew_s=round(skew_ms / 1000, 1),
                max_clock_skew_s=self._device.max_clock_skew,
                sent="the time each change arrived",
            )

    def _note_problem(self, index: int, reason: str) -> None:
        if self._problems.get(index) == reason:
            return
        self._problems[index] = reason
        tag = self._tags[index]
        self._log.warning("tag_bad", tag=tag.tag, node=tag.where, reason=reason)

    def _all_bad(self, groups: list[PollGroup], quality: Quality) -> list[Sample]:
        now = _now_ms()
        return [Sample.bad(self._tags[i].tag, now, quality) for g in groups for i in g.indices]

    def _came_up(self, session: Session) -> None:
        self._reason = None
        if self._state is LinkState.UP and self._state_known:
            return
        self._state, self._state_known = LinkState.UP, True
        subscribed = self._subscribed
        self._log.info(
            "link_up",
            endpoint=self._device.endpoint,
            mode=self._device.mode,
            session_timeout=session.client.session_timeout / 1000,
            limits=session.limits.shown(),
            max_message_size=session.limits.max_message_size,
            **({} if subscribed is None else {"keepalive": round(subscribed.keepalive, 3)}),
        )

    def _went_down(self, reason: str, exc: Exception | None = None) -> None:
        self._reason = reason
        if self._state is LinkState.DOWN and self._state_known:
            return
        self._state, self._state_known = LinkState.DOWN, True
        self._log.warning("link_down", endpoint=self._device.endpoint, reason=reason, exc_info=exc)

    def _describe(self, exc: BaseException) -> str:
        return describe(exc, self._device)


def _groups(device: OpcuaDevice) -> list[PollGroup]:
    by_interval: dict[float, list[int]] = {}
    for index, tag in enumerate(device.tags):
        by_interval.setdefault(device.interval_of(tag), []).append(index)
    return [PollGroup(interval, indices) for interval, indices in sorted(by_interval.items())]


def _read_items(session: Session, indices: Iterable[int]) -> tuple[list[int], list[ua.ReadValueId]]:
    """The tags at `indices` whose node resolved, and what to read of each (its Value)."""
    readable = [i for i in indices if session.nodes[i] is not None]
    items = []
    for index in readable:
        item = ua.ReadValueId()
        item.NodeId = session.nodes[index]
        item.AttributeId = ua.AttributeIds.Value
        items.append(item)
    return readable, items


def _expected(exc: Exception) -> bool:
    """What a server or network does (no traceback needed), as opposed to a bug of ours."""
    return isinstance(
        exc,
        OSError
        | TimeoutError
        | LinkLost
        | Untrusted
        | NoEndpoint
        | ChannelRefused
        | CertificateFileError
        | CredentialError
        | ua.UaError,
    )
