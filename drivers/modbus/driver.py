"""The Modbus TCP driver: one connection per device, one request in flight on it.

Invariants:
- Read-only. The only pymodbus calls that reach the device are the four reads
  in `_READS` (function codes 1-4). No write method is named in this module.
- `read()` returns one Sample per configured tag, in config order, and never
  raises for what the device or the network does; a cancelled `read()` still
  raises CancelledError (after dropping the connection).
- Qualities: an exception response -> q=2 for that request's tags only; a
  timeout or transport error -> q=2 for that request and every request after it
  in this poll, and the connection is closed; a value that cannot be decoded
  -> q=4 for that tag only; while the link is down -> q=2 for every tag, without
  touching the network.
- Reconnects back off: the first retry 0.5 s after a failure, then doubling
  with jitter up to 30 s. The backoff resets as soon as the device answers
  anything, an exception response included.
- A sample's ts_ms is the wall clock when its response arrived (or when the
  request failed).
- Logs state changes only: link up/down, a request refused or answered again,
  a tag failing or passing decoding. A device that stays down logs once.

pymodbus quirks handled here (3.16): the client reconnects on its own unless
`reconnect_delay=0`; a request in flight when the socket drops waits out its
whole timeout, so `trace_connect(False)` is turned into an early failure.
"""

from __future__ import annotations

import asyncio
import math
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusIOException
from pymodbus.pdu import ModbusPDU

from drivers.modbus.codec import decode
from drivers.modbus.config import ModbusDevice
from drivers.modbus.plan import ReadRequest, Slot, plan_reads
from edge_agent.backoff import Backoff
from edge_agent.model import LinkState, Quality, Sample, Value

BACKOFF_FIRST = 0.5
BACKOFF_CAP = 30.0

_TRANSPORT_ERRORS = (TimeoutError, ModbusIOException, ConnectionException, OSError)

_Read = Callable[..., Awaitable[ModbusPDU]]


def _reads(client: AsyncModbusTcpClient) -> dict[int, _Read]:
    """The only client methods this driver calls that talk to the device."""
    return {
        1: client.read_coils,
        2: client.read_discrete_inputs,
        3: client.read_holding_registers,
        4: client.read_input_registers,
    }


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(slots=True)
class _Connection:
    client: AsyncModbusTcpClient
    lost: asyncio.Future[None]
    """Done once the socket dropped under us (pymodbus' trace_connect(False))."""


class ModbusTcpDriver:
    """Reads every tag of one Modbus TCP device with the fewest requests."""

    def __init__(self, device: ModbusDevice, *, backoff: Backoff | None = None) -> None:
        self._device = device
        self._plan = tuple(
            plan_reads(device.tags, max_registers=device.max_registers, max_bits=device.max_bits)
        )
        self._backoff = backoff or Backoff(BACKOFF_FIRST, BACKOFF_CAP)
        self._retry_at = 0.0
        self._conn: _Connection | None = None
        self._lock = asyncio.Lock()
        self._link = LinkState.DOWN
        self._link_known = False
        self._refused: dict[int, int] = {}
        self._undecodable: set[int] = set()
        self._log = structlog.get_logger().bind(device=device.name)

    @property
    def name(self) -> str:
        return self._device.name

    @property
    def link(self) -> LinkState:
        return self._link

    @property
    def plan(self) -> tuple[ReadRequest, ...]:
        """The requests one poll sends while the link is up, in order."""
        return self._plan

    async def read(self) -> list[Sample]:
        async with self._lock:
            try:
                return await self._poll()
            except asyncio.CancelledError:
                self._drop()
                raise

    async def close(self) -> None:
        self._drop()

    async def _poll(self) -> list[Sample]:
        conn = await self._connection()
        if conn is None:
            return self._all_bad(_now_ms())
        samples: list[Sample | None] = [None] * len(self._device.tags)
        for position, request in enumerate(self._plan):
            try:
                response = await self._send(conn, request)
            except Exception as exc:  # the request boundary: nothing the device does escapes
                self._failed(exc, request)
                now = _now_ms()
                for later in self._plan[position:]:
                    self._fill(samples, later.slots, now, Quality.COMM)
                break
            now = _now_ms()
            self._answered()
            if response.isError():
                self._note_refused(request, position, response.exception_code)
                self._fill(samples, request.slots, now, Quality.COMM)
            else:
                self._note_accepted(request, position)
                for slot in request.slots:
                    samples[slot.index] = self._decode(slot, response, now)
        return self._complete(samples)

    async def _connection(self) -> _Connection | None:
        """The open connection, or a new one; None while down or in a backoff window."""
        if self._conn is not None and self._conn.client.connected and not self._conn.lost.done():
            return self._conn
        if self._conn is not None:
            self._drop()
            self._went_down("the device closed the connection")
        if time.monotonic() < self._retry_at:
            return None
        conn = self._new_connection()
        started = time.monotonic()
        try:
            connected = await conn.client.connect()
        except asyncio.CancelledError:
            conn.client.close()
            raise
        except Exception as exc:  # connect must not raise out of read()
            connected = False
            reason = f"connect failed: {exc!r}"
        else:
            waited = time.monotonic() - started
            timed_out = waited >= self._device.timeout
            reason = "connect timed out" if timed_out else "connect refused or unreachable"
        if not connected:
            conn.client.close()
            self._schedule_retry()
            self._went_down(reason)
            return None
        self._conn = conn
        return conn

    def _new_connection(self) -> _Connection:
        lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def on_connect_change(connected: bool) -> None:
            if not connected and not lost.done():
                lost.set_result(None)

        client = AsyncModbusTcpClient(
            self._device.host,
            port=self._device.port,
            name=self._device.name,
            timeout=self._device.timeout,
            retries=0,
            reconnect_delay=0,  # reconnects are ours, with backoff
            trace_connect=on_connect_change,
        )
        return _Connection(client, lost)

    async def _send(self, conn: _Connection, request: ReadRequest) -> ModbusPDU:
        read = _reads(conn.client)[request.function_code]
        call = asyncio.ensure_future(
            read(request.address, count=request.count, device_id=self._device.unit)
        )
        try:
            await asyncio.wait((call, conn.lost), return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not call.done():
                call.cancel()
        if not call.done() or call.cancelled():
            raise ConnectionException("the connection dropped while waiting for the response")
        return call.result()

    def _decode(self, slot: Slot, response: ModbusPDU, now: int) -> Sample:
        tag = slot.tag
        try:
            value = self._value(slot, response)
        except (ValueError, IndexError, struct.error) as exc:
            if slot.index not in self._undecodable:
                self._undecodable.add(slot.index)
                self._log.warning("decode_failed", tag=tag.tag, address=tag.address, error=str(exc))
            return Sample.bad(tag.tag, now, Quality.CONFIG)
        if slot.index in self._undecodable:
            self._undecodable.discard(slot.index)
            self._log.info("decode_recovered", tag=tag.tag)
        return Sample(tag.tag, now, value, Quality.GOOD)

    def _value(self, slot: Slot, response: ModbusPDU) -> Value:
        tag = slot.tag
        if tag.parsed_address.area in ("co", "di"):
            return bool(response.bits[slot.start])
        registers = list(response.registers[slot.start : slot.start + slot.count])
        raw = decode(registers, tag.type, tag.byte_order or self._device.byte_order)
        if isinstance(raw, float) and not math.isfinite(raw):
            raise ValueError(f"{tag.type} decodes to {raw}, not a finite number")
        if tag.scale is None:
            return raw
        scaled = float(raw) * tag.scale.multiplier + tag.scale.offset
        # 15 significant digits drop binary noise: 209 * 0.1 reads 20.9, not 20.900000000000002.
        return float(f"{scaled:.15g}")

    def _complete(self, samples: list[Sample | None]) -> list[Sample]:
        """The poll's samples; every tag has one by construction of the plan."""
        now = _now_ms()
        return [
            s if s is not None else Sample.bad(tag.tag, now, Quality.CONFIG)
            for s, tag in zip(samples, self._device.tags, strict=True)
        ]

    def _all_bad(self, now: int) -> list[Sample]:
        return [Sample.bad(tag.tag, now, Quality.COMM) for tag in self._device.tags]

    def _fill(
        self, samples: list[Sample | None], slots: tuple[Slot, ...], now: int, quality: Quality
    ) -> None:
        for slot in slots:
            samples[slot.index] = Sample.bad(slot.tag.tag, now, quality)

    def _drop(self) -> None:
        """Close the connection, and fail a request still waiting on it."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if not conn.lost.done():
            conn.lost.set_result(None)
        conn.client.close()

    def _schedule_retry(self) -> None:
        self._retry_at = time.monotonic() + self._backoff.next()

    def _failed(self, exc: Exception, request: ReadRequest) -> None:
        """A transport failure (or anything unexpected) during `request`."""
        self._drop()
        self._schedule_retry()
        if isinstance(exc, _TRANSPORT_ERRORS):
            self._went_down(f"{type(exc).__name__} on {request}: {exc}")
        else:
            self._went_down(f"unexpected {type(exc).__name__} on {request}: {exc}", exc=exc)

    def _answered(self) -> None:
        self._backoff.reset()
        if self._link is LinkState.UP and self._link_known:
            return
        self._link, self._link_known = LinkState.UP, True
        self._log.info("link_up", host=self._device.host, port=self._device.port)

    def _went_down(self, reason: str, exc: Exception | None = None) -> None:
        if self._link is LinkState.DOWN and self._link_known:
            return
        self._link, self._link_known = LinkState.DOWN, True
        self._log.warning(
            "link_down", host=self._device.host, port=self._device.port, reason=reason, exc_info=exc
        )

    def _note_refused(self, request: ReadRequest, position: int, code: int) -> None:
        if self._refused.get(position) == code:
            return
        self._refused[position] = code
        self._log.warning(
            "read_refused",
            request=str(request),
            function_code=request.function_code,
            exception_code=code,
            tags=[slot.tag.tag for slot in request.slots],
        )

    def _note_accepted(self, request: ReadRequest, position: int) -> None:
        if self._refused.pop(position, None) is not None:
            self._log.info("read_recovered", request=str(request))
