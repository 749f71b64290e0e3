"""One Modbus connection (a TCP socket or a serial port), shared by the units on it.

Invariants:
- One unit at a time per link: a unit's poll sends its requests in one turn
  (`turn()`), and units take turns through an asyncio.Lock, which hands over
  in FIFO order: round-robin poll by poll, no starvation. So a unit's poll
  waits at most for one poll of each sibling queued before it; per request
  turns would let a slow sibling's requests slip between each of its own.
- Read-only: the only client methods called that reach a device are the four
  reads in `_reads` (function codes 1-4).
- A unit that does not answer never takes the connection down for its
  siblings (pymodbus issue 2431): the link is dropped only when the transport
  fails, or when every unit on it has gone silent in a row (the gateway or
  the line itself is dead). pymodbus' own "retries+3 silent requests close the
  socket" rule never fires: each request is bounded here, well inside the
  client's own timeout, and the waiting call is cancelled.
- A request in flight when its connection drops fails at once (pymodbus
  would let it wait out its timeout): the link cancels the waiting task and
  turns that cancellation into a ConnectionException.
- Each request's deadline is kept by one timer per link, not one per request
  (see `_watch`); it acts as `asyncio.timeout` would around the read.
- Reconnects back off (full jitter, doubling from reconnect_min up to
  reconnect_max); the first answer resets the backoff. One exception: a
  connection that drops under a request is reconnected at once, once
  (`recover`), so a drop costs the units on the link one resend, not a poll.
- On a serial line the bus stays quiet for the inter-frame silence after each
  exchange, and after a timeout (RTU over TCP too) as long again as the
  timeout, so a late answer from a slow unit is not read as the answer to the
  next request (`_quiet`).

Links live in a registry per event loop, keyed by host:port or serial port;
the last device to leave a link closes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import structlog
from pymodbus import FramerType
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusIOException
from pymodbus.framer import FramerRTU
from pymodbus.pdu import ModbusPDU
from pymodbus.pdu.bit_message import ReadCoilsResponse, ReadDiscreteInputsResponse
from pymodbus.pdu.register_message import (
    ReadHoldingRegistersResponse,
    ReadInputRegistersResponse,
)

from edge_agent.backoff import Backoff
from edge_agent.drivers.modbus.config import ModbusDevice

TRANSPORT_ERRORS = (ConnectionException, OSError)
SILENCE_ERRORS = (TimeoutError, ModbusIOException)
"""No (usable) answer from one unit: its problem, not necessarily the link's."""

_Read = Callable[..., Awaitable[ModbusPDU]]
_Client = AsyncModbusTcpClient | AsyncModbusSerialClient


def _reads(client: _Client) -> dict[int, _Read]:
    """The only client methods called here that talk to a device."""
    return {
        1: client.read_coils,
        2: client.read_discrete_inputs,
        3: client.read_holding_registers,
        4: client.read_input_registers,
    }


# pymodbus decodes a register response one register at a time, and formats every
# response with str() for a debug line even when debug logging is off (3.16,
# pdu/decoders.py). These subclasses, registered through the public
# `client.register`, decode in one struct call and print short: together about
# a third of the client's CPU per request on a 125-register read.


def _unpack_registers(pdu: ModbusPDU, data: bytes) -> None:
    size = int(data[0])
    if size >= len(data):
        raise ModbusIOException(
            f"byte_count {size} > length of packet {len(data)}", function_code=pdu.function_code
        )
    pdu.registers = list(struct.unpack(f">{size // 2}H", data[1 : 1 + size - size % 2]))


def _terse(pdu: ModbusPDU) -> str:
    values = len(pdu.registers) if pdu.registers else len(pdu.bits)
    return f"{type(pdu).__name__}(dev_id={pdu.dev_id}, values={values})"


class _HoldingRegisters(ReadHoldingRegistersResponse):
    def decode(self, data: bytes) -> None:
        _unpack_registers(self, data)

    def __str__(self) -> str:
        return _terse(self)


class _InputRegisters(ReadInputRegistersResponse):
    def decode(self, data: bytes) -> None:
        _unpack_registers(self, data)

    def __str__(self) -> str:
        return _terse(self)


class _Coils(ReadCoilsResponse):
    def __str__(self) -> str:
        return _terse(self)


class _DiscreteInputs(ReadDiscreteInputsResponse):
    def __str__(self) -> str:
        return _terse(self)


_RESPONSES = (_HoldingRegisters, _InputRegisters, _Coils, _DiscreteInputs)


class _FramerRTU(FramerRTU):
    """pymodbus 3.16's RTU framer, consuming only the frame it decodes.

    Upstream `decode` returns the whole buffer as used, so when a late answer
    and the next answer arrive in one read (a serial device server packs what
    the line sends within its transmit timer) the second is thrown away and
    its unit times out. Here the bytes after the frame stay for the next
    decode. A frame failing its CRC still discards the buffer, as upstream.
    """

    def decode(self, data: bytes) -> tuple[int, int, int, bytes]:
        data_len = len(data)
        for used_len in range(data_len):
            if data_len - used_len < self.MIN_SIZE:
                return 0, 0, 0, self.EMPTY
            dev_id = int(data[used_len])
            if not (pdu_class := self.decoder.lookupPduClass(data[used_len:])):
                continue
            if not (size := pdu_class.calculateRtuFrameSize(data[used_len:])):
                return 0, dev_id, 0, self.EMPTY
            if data_len < used_len + size:
                return 0, dev_id, 0, self.EMPTY
            crc_start = used_len + size - 2
            crc = (int(data[crc_start]) << 8) + int(data[crc_start + 1])
            if not FramerRTU.check_CRC(data[used_len:crc_start], crc):
                return data_len, 0, 0, self.EMPTY
            return used_len + size, dev_id, 0, data[used_len + 1 : crc_start]
        return 0, 0, 0, self.EMPTY


class Link:
    """A shared connection; see the module docstring."""

    def __init__(self, device: ModbusDevice) -> None:
        self.key = device.link_key
        self.label = device.link_key[1]
        self._device = device
        self.settings = device.link_settings()
        self._quiet_after = device.transport != "tcp"
        self._bus = asyncio.Lock()
        self._connecting = asyncio.Lock()
        self._client: _Client | None = None
        self._lost: asyncio.Future[None] | None = None
        self._backoff = Backoff(device.reconnect_min, device.reconnect_max)
        self._retry_at = 0.0
        self._members: set[int] = set()
        self._silent_streak = 0
        self._inflight: asyncio.Task[object] | None = None
        self._read_fns: dict[int, _Read] = {}
        self._cut = False
        self._deadline = 0.0
        """loop.time() by which the request in flight must be answered."""
        self._watchdog: asyncio.TimerHandle | None = None
        self._watchdog_at = 0.0
        self._expired = False
        self.last_error = ""
        self.requests = 0
        self.generation = 0
        """Counts connections made: a unit that saw connection N fail retries at most once."""
        self._recovering_from = -1

    # membership

    def join(self, unit: int) -> None:
        self._members.add(unit)

    def leave(self, unit: int) -> bool:
        """True when the link has no member left (and is closed)."""
        self._members.discard(unit)
        if not self._members:
            self.drop()
            return True
        return False

    @property
    def shared(self) -> bool:
        return len(self._members) > 1

    # connection

    @property
    def connected(self) -> bool:
        return (
            self._client is not None
            and self._client.connected
            and self._lost is not None
            and not self._lost.done()
        )

    @property
    def was_lost(self) -> bool:
        """The transport dropped under us since the last check (and is now dropped here)."""
        if self._client is not None and not self.connected:
            self.drop()
            return True
        return False

    async def open(self, limit: float) -> bool:
        """Connected, or connect now; False while in a backoff window or on failure."""
        if self.connected:
            return True
        async with self._connecting:
            if self.connected:
                return True
            if time.monotonic() < self._retry_at:
                return False
            return await self._connect(limit)

    async def recover(self, generation: int, limit: float) -> bool:
        """Reconnect at once after connection `generation` dropped under a request: one try
        per dropped connection, whichever unit asks first, without the backoff; the
        units that ask later share its outcome."""
        async with self._connecting:
            if self.connected and self.generation != generation:
                return True  # a sibling reconnected already
            if self._recovering_from >= generation:
                return False  # this drop was retried already, and it failed
            self._recovering_from = generation
            self.drop()
            return await self._connect(limit)

    async def _connect(self, limit: float) -> bool:
        client, lost = self._new_client(limit)
        started = time.monotonic()
        task = asyncio.current_task()
        cancelling = task.cancelling() if task is not None else 0
        try:
            ok = bool(await asyncio.wait_for(client.connect(), limit))
            if task is not None and task.cancelling() > cancelling:
                raise asyncio.CancelledError  # swallowed by wait_for (Python 3.11): see request
            reason = "connect refused or unreachable"
        except TimeoutError:
            ok, reason = False, "connect timed out"
        except asyncio.CancelledError:
            client.close()
            raise
        except Exception as exc:  # connect must not raise out of read()
            ok, reason = False, f"connect failed: {exc!r}"
        if ok and not lost.done():
            self._client, self._lost = client, lost
            self._read_fns = _reads(client)
            self.generation += 1
            return True
        if ok:
            reason = "the connection closed at once"
        elif time.monotonic() - started >= limit:
            reason = "connect timed out"
        client.close()
        self.fail(reason)
        return False

    def _new_client(self, limit: float) -> tuple[_Client, asyncio.Future[None]]:
        lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def on_connect_change(connected: bool) -> None:
            if not connected and not lost.done():
                lost.set_result(None)
                if lost is self._lost:
                    self._cut_inflight()

        device = self._device
        common: dict[str, Any] = {
            "name": self.label,
            # Never reached: every request is bounded in `request`, so pymodbus' own
            # timeout (and its close-after-silent-requests rule) never fires.
            "timeout": max(60.0, 4 * limit),
            "retries": 0,
            "reconnect_delay": 0,  # reconnects are ours, with backoff
            "trace_connect": on_connect_change,
        }
        client: _Client
        if device.serial is not None:
            line = device.serial
            client = AsyncModbusSerialClient(
                line.port,
                framer=FramerType.RTU,
                baudrate=line.baudrate,
                bytesize=line.bytesize,
                parity=line.parity,
                stopbits=line.stopbits,
                **common,
            )
        else:
            framer = FramerType.RTU if device.transport == "rtu-over-tcp" else FramerType.SOCKET
            client = AsyncModbusTcpClient(
                device.host or "", port=device.port, framer=framer, **common
            )
        if isinstance(client.ctx.framer, FramerRTU):
            # The one reach into the client's internals: its framer, chosen by name.
            client.ctx.framer = _FramerRTU(client.ctx.framer.decoder)
        for response in _RESPONSES:
            client.register(response)
        return client, lost

    def drop(self) -> None:
        """Close the connection, and fail a request still waiting on it."""
        client, self._client = self._client, None
        lost, self._lost = self._lost, None
        if lost is not None and not lost.done():
            lost.set_result(None)
        self._cut_inflight()
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        if client is not None:
            client.close()

    def _cut_inflight(self) -> None:
        """Fail the request waiting on a connection that is gone, instead of its timeout."""
        task = self._inflight
        if task is not None and not self._cut and task is not asyncio.current_task():
            self._cut = True
            task.cancel()

    def fail(self, reason: str) -> None:
        """Drop the connection and wait a backoff before the next connect."""
        self.drop()
        self.last_error = reason
        self._retry_at = time.monotonic() + self._backoff.next()

    # requests

    @contextlib.asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """The link is this unit's until the block ends: its poll's requests go in one turn."""
        async with self._bus:
            yield

    async def request(
        self, function_code: int, address: int, count: int, unit: int, limit: float
    ) -> ModbusPDU:
        """One read, within the caller's `turn()`; raises on silence or transport loss."""
        assert self._bus.locked(), "a request is sent within a turn"
        client, lost = self._client, self._lost
        if client is None or lost is None or lost.done():
            raise ConnectionException("not connected")
        self.requests += 1
        read = self._read_fns[function_code]
        task = asyncio.current_task()
        assert task is not None
        self._inflight, self._cut = task, False
        cancelling = task.cancelling()
        self._watch(limit)
        timed_out = False
        try:
            try:
                response: ModbusPDU = await read(address, count=count, device_id=unit)
            except asyncio.CancelledError:
                # The deadline's cancellation is a timeout, unless another came too.
                if self._expired and self._take_back(task) <= cancelling:
                    raise TimeoutError from None
                raise
            finally:
                self._inflight = None
                if self._expired:  # the deadline passed as the answer came: the answer counts
                    self._take_back(task)
            self._restore_swallowed_cancel(task, cancelling)
        except TimeoutError:
            timed_out = True
            raise TimeoutError(f"no answer within {limit:g}s") from None
        except asyncio.CancelledError:
            # Our own cut (the connection dropped) is a transport error; any other
            # cancellation (shutdown) goes on up.
            if self._cut and task.uncancel() == 0:
                raise ConnectionException("the connection dropped while waiting") from None
            raise
        finally:
            if self._quiet_after:
                await self._quiet(timed_out, limit)
        _check_shape(response, function_code, count)
        return response

    def _watch(self, limit: float) -> None:
        """Bound the request about to be sent by `limit` seconds.

        One timer per link rather than one `asyncio.timeout` per request, which
        costs a Timeout object, a timer handle pushed on the loop's heap and
        later popped, about 38,000 CPU instructions a request. The timer stays
        armed at the first deadline; when it fires, it moves on to the deadline
        of the request then in flight if that one is later, expires that request
        if not, and is dropped while no request is in flight: a steady poll sets
        about one timer per `limit` seconds.
        """
        loop = asyncio.get_running_loop()
        self._deadline = deadline = loop.time() + limit
        watchdog = self._watchdog
        if watchdog is None or deadline < self._watchdog_at:  # a unit with a shorter timeout
            if watchdog is not None:
                watchdog.cancel()
            self._watchdog = loop.call_at(deadline, self._on_deadline)
            self._watchdog_at = deadline

    def _on_deadline(self) -> None:
        self._watchdog = None
        task = self._inflight
        if task is None:
            return
        if self._deadline > self._watchdog_at:
            self._watchdog = asyncio.get_running_loop().call_at(self._deadline, self._on_deadline)
            self._watchdog_at = self._deadline
            return
        self._expired = True
        task.cancel()

    def _restore_swallowed_cancel(self, task: asyncio.Task[object], cancelling: int) -> None:
        """Raise the cancellation an answer arrived with.

        pymodbus awaits its answer with `asyncio.wait_for`, which in Python 3.11
        returns the answer and drops a cancellation that came in the same
        instant: a poller stopped then would poll on, and a stop would hang. A
        cancellation still counted on the task after the answer is raised
        here, unless it is our own cut (the connection dropped as the answer
        came), which the answer outdates.
        """
        if task.cancelling() <= cancelling:
            return
        if self._cut and task.uncancel() <= cancelling:
            return
        raise asyncio.CancelledError

    def _take_back(self, task: asyncio.Task[object]) -> int:
        """Withdraw the deadline's cancellation, as asyncio.timeout does on exit."""
        self._expired = False
        return task.uncancel()

    async def _quiet(self, timed_out: bool, limit: float) -> None:
        """Keep an RTU bus quiet after an exchange: the inter-frame silence, and after a
        timeout as long again as the timeout, so that an answer up to twice the timeout
        late is read (and dropped, nothing awaits it) before the next request is sent.
        RTU frames carry no transaction id: an answer later than that could be taken for
        the next request of the same shape to the same unit."""
        line = self._device.serial if self._device.transport != "tcp" else None
        if line is None:
            if self._device.transport == "rtu-over-tcp" and timed_out:
                await asyncio.sleep(limit)
            return
        await asyncio.sleep(line.silence + (limit if timed_out else 0.0))

    def answered(self) -> None:
        self._silent_streak = 0
        self._backoff.reset()

    def silent(self) -> bool:
        """A unit did not answer. True when the link itself is now given up (and dropped)."""
        self._silent_streak += 1
        if self._silent_streak >= max(1, len(self._members)):
            self._silent_streak = 0
            self.fail("no unit on the link answered")
            return True
        return False


def _check_shape(response: ModbusPDU, function_code: int, count: int) -> None:
    """A response must be the one asked for: RTU frames carry no transaction id."""
    if response.isError():
        return
    if response.function_code != function_code:
        raise ModbusIOException(f"answer with function code {response.function_code}")
    got = len(response.bits) if function_code in (1, 2) else len(response.registers)
    if got < count or (function_code in (3, 4) and got != count):
        raise ModbusIOException(f"answer with {got} values for a read of {count}")


_LINKS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[str, str], Link]] = (
    weakref.WeakKeyDictionary()
)


def join_link(device: ModbusDevice) -> Link:
    """The running loop's link for this device's connection, shared with its siblings."""
    links = _LINKS.setdefault(asyncio.get_running_loop(), {})
    link = links.get(device.link_key)
    if link is None:
        link = links[device.link_key] = Link(device)
    elif link.settings != device.link_settings():
        # `edge-agent check` refuses this (shared_link_problems); a hand-built config may not.
        structlog.get_logger().error(
            "link_settings_conflict", device=device.name, link=link.label, kept=str(link.settings)
        )
    link.join(device.unit)
    return link


def leave_link(link: Link, unit: int) -> None:
    if link.leave(unit):
        links = _LINKS.get(asyncio.get_running_loop(), {})
        if links.get(link.key) is link:
            del links[link.key]
