"""Serve a scenario as Modbus devices, one pymodbus server per device.

- Transports: `tcp` and `rtu-over-tcp` listen on 127.0.0.1; `rtu` serves RTU
  frames on a pseudo-terminal: two pty pairs joined by a relay in the event
  loop, the server on one end and the agent's path (`Simulator.serial_port`)
  on the other. A pty carries frames, not baud rate, parity or inter-frame
  timing: those only a real line shows.
- Every answer carries the transaction id and unit id of the request it
  answers, however late it comes and whatever arrived meanwhile (pymodbus' own
  request handler does not; see `modbus_connection`).
- Concurrency: by default each connection is served on its own and
  concurrently, like a PLC with several sockets. `serialise: true` handles one
  request at a time across every connection, in arrival order, like a
  TCP-to-RTU gateway in front of one serial bus: a late unit delays every
  request behind it, on whatever connection it came.
- How a unit answers: a unit with `delay` answers (anything) that much later;
  a silent unit (`silent: true`), a read of one of its `silent_addresses`, and
  on `rtu` any unknown unit id never answer; `gateway_fails: true` answers
  exception 11 after its `delay`, as a gateway answers for a dead unit;
  `busy_every: N` answers each N-th request to the unit with exception 6 and
  `acknowledge_every: N` with exception 5 (busy wins when both fall due).
  `drop_every: N` closes every connection of the device upon each N-th
  request to it, before answering it. `Simulator.hang_device` stops all
  answers until resumed; `stop_device` drops what was in flight.

- Values are computed when a request is served, from the scenario's functions
  of t (seconds since the simulator started): no update task, nothing drifts.
- An address that no point covers, or that the scenario lists in
  `exception_addresses`, makes the whole request answer exception 2; a count
  over 125 registers or 2000 bits answers exception 3; an unknown unit id on
  TCP exception 11. Writes answer exception 1: the simulated plant is read-only.
- Counters a test can read, per device, logged as each request is decoded
  (before it is handled, so a request never answered counts too): every
  function code (`function_codes`, to prove what an agent sent), every unit id
  in order (`unit_sequence`), requests per unit (`requests_by_unit`),
  connections accepted (`connections`) and open now (`open_connections`), and
  the unit ids each connection carried (`connection_units`). Codes pymodbus
  cannot decode are not logged (the server answers them with exception 1).
- A device maps unit ids to address spaces: a gateway or a serial bus of
  several units is one device with `units`.

The pymodbus request handler is replaced (see `modbus_connection`, the one
module that relies on pymodbus internals). Values are computed per request by
`_PlantCore`, handed to each request's `datastore_update` in place of the
server's own datastore (pymodbus' SimDevice `action` sees register counts, not
bit counts, for coils).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
import tty
from collections import defaultdict
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from typing import Any

import structlog
from pymodbus import FramerType
from pymodbus.constants import ExcCodes
from pymodbus.exceptions import NoSuchIdException
from pymodbus.pdu import ExceptionResponse, ModbusPDU
from pymodbus.simulator import DataType, SimData, SimDevice
from pymodbus.simulator.simcore import SimCore

from edge_agent.drivers.modbus.codec import BIT_AREAS, Area, parse_address
from edge_agent.drivers.simulator.modbus_connection import SerialServer, TcpServer
from edge_agent.drivers.simulator.scenario import Device, Scenario, Unit, load_scenario

HOST = "127.0.0.1"

_AREA_BY_CODE: dict[int, Area] = {1: "co", 2: "di", 3: "hr", 4: "ir"}
_MAX_COUNT = {"co": 2000, "di": 2000, "hr": 125, "ir": 125}

__all__ = ["HOST", "Simulator", "load_scenario", "run_simulator", "start_simulator"]


class _UnitSpace:
    """One unit id's address space, and the faults it answers with."""

    def __init__(self, spec: Unit) -> None:
        points, exception_addresses = spec.points, spec.exception_addresses
        self.delay = spec.delay
        self.silent = spec.silent
        self._gateway_fails = spec.gateway_fails
        self._busy_every = spec.busy_every
        self._acknowledge_every = spec.acknowledge_every
        self._asked = 0
        self._points = points
        self._cells: dict[str, dict[int, tuple[int, int]]] = defaultdict(dict)
        for index, point in enumerate(points):
            address = point.parsed_address
            for word in range(point.width):
                self._cells[address.area][address.offset + word] = (index, word)
        self._refused: dict[str, set[int]] = defaultdict(set)
        for text in exception_addresses:
            refused = parse_address(text)
            self._refused[refused.area].add(refused.offset)
        self._ignored: dict[str, set[int]] = defaultdict(set)
        for text in spec.silent_addresses:
            ignored = parse_address(text)
            self._ignored[ignored.area].add(ignored.offset)

    def refusal(self) -> ExcCodes | None:
        """Count one more request; the exception it is answered with instead of data, if any."""
        self._asked += 1
        if self._gateway_fails:
            return ExcCodes.GATEWAY_NO_RESPONSE
        if self._busy_every and self._asked % self._busy_every == 0:
            return ExcCodes.DEVICE_BUSY
        if self._acknowledge_every and self._asked % self._acknowledge_every == 0:
            return ExcCodes.ACKNOWLEDGE
        return None

    def ignores(self, area: Area, address: int, count: int) -> bool:
        """True when the read touches a silent address: it gets no answer."""
        ignored = self._ignored[area]
        return bool(ignored) and any(a in ignored for a in range(address, address + count))

    def read(
        self, area: Area, address: int, count: int, t: float
    ) -> list[int] | list[bool] | ExcCodes:
        cells, refused = self._cells[area], self._refused[area]
        words: dict[int, list[int] | list[bool]] = {}
        out: list[int | bool] = []
        for offset in range(address, address + count):
            cell = cells.get(offset)
            if cell is None or offset in refused:
                return ExcCodes.ILLEGAL_ADDRESS
            index, word = cell
            if index not in words:
                words[index] = self._points[index].words(t)
            out.append(words[index][word])
        if area in BIT_AREAS:
            return [bool(v) for v in out]
        return [int(v) for v in out]


class _PlantCore(SimCore):
    """The datastore a request's `datastore_update` reads: the scenario's values at t."""

    def __init__(self, units: Mapping[int, _UnitSpace], clock: Callable[[], float]) -> None:
        # SimCore.__init__ builds pymodbus' own register memory, which this class replaces.
        self._units = dict(units)
        self._clock = clock

    def device_ids(self) -> list[int]:
        return list(self._units)

    async def async_getValues(
        self, device_id: int, func_code: int, address: int, count: int = 1
    ) -> list[int] | list[bool] | ExcCodes:
        unit = self._units[device_id]
        area = _AREA_BY_CODE.get(func_code)
        if area is None:
            return ExcCodes.ILLEGAL_FUNCTION
        if not 1 <= count <= _MAX_COUNT[area]:
            return ExcCodes.ILLEGAL_VALUE
        if unit.ignores(area, address, count):
            raise NoSuchIdException(f"unit {device_id} ignores {area}:{address}+{count}")
        return unit.read(area, address, count, self._clock())

    async def async_setValues(
        self, device_id: int, func_code: int, address: int, values: list[int] | list[bool]
    ) -> ExcCodes | None:
        return ExcCodes.ILLEGAL_FUNCTION


class _PtyBridge:
    """Two pseudo-terminal pairs joined in the event loop: a null-modem cable.

    The server opens `server_path`, the agent `client_path`; the slave ends are
    held open here too, so either side may close and reopen its end.
    """

    def __init__(self) -> None:
        self._fds: list[int] = []
        (m1, s1), (m2, s2) = os.openpty(), os.openpty()
        self._fds = [m1, s1, m2, s2]
        for fd in (s1, s2):
            tty.setraw(fd)
        for fd in (m1, m2):
            os.set_blocking(fd, False)
        self.client_path, self.server_path = os.ttyname(s1), os.ttyname(s2)
        loop = asyncio.get_running_loop()
        loop.add_reader(m1, self._copy, m1, m2)
        loop.add_reader(m2, self._copy, m2, m1)
        self._masters = (m1, m2)

    @staticmethod
    def _copy(source: int, target: int) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            data = os.read(source, 4096)
            if data:
                os.write(target, data)

    def close(self) -> None:
        loop = asyncio.get_running_loop()
        for fd in self._masters:
            loop.remove_reader(fd)
        for fd in self._fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds = []


class _DeviceServer:
    """One simulated device: its units, its log, its turn, and its (restartable) server."""

    def __init__(self, spec: Device, port: int, clock: Callable[[], float]) -> None:
        self.spec = spec
        self.port = port
        self.function_codes: list[int] = []
        self.requests: dict[int, int] = defaultdict(int)
        self.unit_sequence: list[int] = []
        self.connection_units: list[set[int]] = []
        self.answering = asyncio.Event()
        self.answering.set()
        self._serial = spec.transport == "rtu"
        self._units = {u.unit: _UnitSpace(u) for u in spec.all_units}
        self._core = _PlantCore(self._units, clock)
        # One request at a time, first come first served (asyncio.Lock is FIFO).
        self._turn: contextlib.AbstractAsyncContextManager[object] = (
            asyncio.Lock() if spec.serialise else contextlib.nullcontext()
        )
        self._answers: set[asyncio.Task[None]] = set()
        self._server: TcpServer | SerialServer | None = None
        self._bridge: _PtyBridge | None = _PtyBridge() if self._serial else None
        self._seen = 0

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def serial_port(self) -> str | None:
        return None if self._bridge is None else self._bridge.client_path

    @property
    def open_connections(self) -> int:
        return 0 if self._server is None else len(self._server.active_connections)

    async def start(self) -> None:
        # pymodbus insists on a datastore; requests read `_core` instead (see `_read`).
        placeholder = SimDevice(0, simdata=SimData(0, datatype=DataType.REGISTERS))
        server: TcpServer | SerialServer
        if self._bridge is not None:
            server = SerialServer(
                placeholder,
                framer=FramerType.RTU,
                port=self._bridge.server_path,
                ignore_missing_devices=True,
            )
        else:
            framer = FramerType.RTU if self.spec.transport == "rtu-over-tcp" else FramerType.SOCKET
            server = TcpServer(
                placeholder, framer=framer, address=(HOST, self.port), ignore_missing_devices=True
            )
        server.plant = self
        try:
            await server.serve_forever(background=True)
        except RuntimeError:
            raise OSError(
                f"simulated device {self.spec.name}: cannot listen on {HOST}:{self.port}"
            ) from None
        if self._bridge is None:
            self.port = server.transport.sockets[0].getsockname()[1]  # type: ignore[attr-defined]  # a listener's transport is an asyncio.Server
        self._server = server

    async def stop(self) -> None:
        """Stop listening, close every connection, and drop the answers in flight."""
        server, self._server = self._server, None
        if server is not None:
            await server.shutdown()  # type: ignore[no-untyped-call]  # pymodbus leaves it unannotated
        answers = list(self._answers)
        for task in answers:
            task.cancel()
        await asyncio.gather(*answers, return_exceptions=True)

    def close_bridge(self) -> None:
        if self._bridge is not None:
            self._bridge.close()
            self._bridge = None

    def drop_connections(self) -> None:
        """Close every open connection (TCP only), as a device that resets its sockets."""
        server = self._server
        if server is None:
            return
        for connection in list(server.active_connections.values()):
            connection.close()

    def connected(self) -> int:
        """Log a new connection; its number, from 1."""
        self.connection_units.append(set())
        return len(self.connection_units)

    def received(self, connection: int, request: ModbusPDU) -> None:
        """Log a request as it is decoded, and drop the connections when `drop_every` says so."""
        self.function_codes.append(request.function_code)
        self.requests[request.dev_id] += 1
        self.unit_sequence.append(request.dev_id)
        self.connection_units[connection - 1].add(request.dev_id)
        self._seen += 1
        every = self.spec.drop_every
        if every and self._seen % every == 0:
            asyncio.get_running_loop().call_soon(self.drop_connections)

    def answer_later(self, answer: Coroutine[Any, Any, None]) -> None:
        """Run a connection's answer to one request in its own task, until `stop`."""
        task = asyncio.get_running_loop().create_task(answer)
        self._answers.add(task)
        task.add_done_callback(self._answers.discard)

    async def respond(self, request: ModbusPDU) -> ModbusPDU | None:
        """The device's answer to one request (ids not yet set), or None for no answer."""
        unit = self._units.get(request.dev_id)
        refusal = None if unit is None else unit.refusal()  # counted in arrival order
        async with self._turn:
            await self.answering.wait()
            if unit is None:
                if self._serial:
                    return None  # on a serial bus nobody answers for an absent unit
                return ExceptionResponse(request.function_code, ExcCodes.GATEWAY_NO_RESPONSE)
            if unit.delay:
                await asyncio.sleep(unit.delay)
            if unit.silent:
                return None
            if refusal is not None:
                return ExceptionResponse(request.function_code, refusal)
            return await self._read(request)

    async def _read(self, request: ModbusPDU) -> ModbusPDU | None:
        try:
            # pymodbus itself passes a SimCore here (a server's `context`), typed or not.
            core: Any = self._core
            response: ModbusPDU = await request.datastore_update(core, request.dev_id)
        except NoSuchIdException:
            return None  # a read of a silent address
        except Exception:  # as pymodbus' handler does: a datastore bug answers "device failure"
            structlog.get_logger().exception("simulator_answer_failed", device=self.spec.name)
            return ExceptionResponse(request.function_code, ExcCodes.DEVICE_FAILURE)
        return response


class Simulator:
    """A running scenario. Build it with `start_simulator`; `close()` it when done."""

    def __init__(self, devices: dict[str, _DeviceServer]) -> None:
        self._devices = devices

    @property
    def ports(self) -> dict[str, int]:
        """The bound port of each device, by name."""
        return {name: device.port for name, device in self._devices.items()}

    def function_codes(self, device: str) -> list[int]:
        """Every function code the device received, in order (a copy)."""
        return list(self._devices[device].function_codes)

    def serial_port(self, device: str) -> str:
        """The pseudo-terminal an agent opens to reach an `rtu` device."""
        path = self._devices[device].serial_port
        if path is None:
            raise ValueError(f"device {device} is not an rtu device")
        return path

    def requests_by_unit(self, device: str) -> dict[int, int]:
        """How many requests each unit id of the device received, answered or not."""
        return dict(self._devices[device].requests)

    def unit_sequence(self, device: str) -> list[int]:
        """The unit id of every request the device received, in order."""
        return list(self._devices[device].unit_sequence)

    def drop_connections(self, device: str) -> None:
        """Close the device's open TCP connections now; it keeps listening."""
        self._devices[device].drop_connections()

    def connections(self, device: str) -> int:
        """How many connections the device has accepted (on `rtu`: times its line opened)."""
        return len(self._devices[device].connection_units)

    def open_connections(self, device: str) -> int:
        """How many of the device's connections are open now."""
        return self._devices[device].open_connections

    def connection_units(self, device: str) -> list[set[int]]:
        """For each connection the device accepted, in order: the unit ids it asked."""
        return [set(units) for units in self._devices[device].connection_units]

    def hang_device(self, name: str, hung: bool = True) -> None:
        """Keep accepting connections and requests but answer none (a hung PLC), or resume."""
        answering = self._devices[name].answering
        if hung:
            answering.clear()
        else:
            answering.set()

    async def stop_device(self, name: str) -> None:
        """Close the device's listener and its connections, as if it lost power."""
        await self._devices[name].stop()

    async def start_device(self, name: str) -> None:
        """Serve a stopped device again on the same port; t keeps running."""
        device = self._devices[name]
        if not device.running:
            await device.start()

    async def close(self) -> None:
        for device in self._devices.values():
            device.answering.set()
            await device.stop()
            device.close_bridge()

    async def __aenter__(self) -> Simulator:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


async def start_simulator(scenario: Scenario, ports: dict[str, int] | None = None) -> Simulator:
    """Serve every device of `scenario`; `ports` overrides ports by device name (0 = any free)."""
    unknown = set(ports or {}) - {d.name for d in scenario.devices}
    if unknown:
        raise ValueError(f"no device named {', '.join(sorted(unknown))} in the scenario")
    started = time.monotonic()

    def clock() -> float:
        return time.monotonic() - started

    devices: dict[str, _DeviceServer] = {}
    simulator = Simulator(devices)
    try:
        for spec in scenario.devices:
            port = (ports or {}).get(spec.name, spec.port)
            devices[spec.name] = _DeviceServer(spec, port, clock)
            await devices[spec.name].start()
    except BaseException:
        await simulator.close()
        raise
    return simulator


async def run_simulator(source: Scenario | str | Path, ports: dict[str, int] | None = None) -> None:
    """Serve a scenario (or the scenario file at `source`) until cancelled.

    Prints one line per device once every device listens, then flushes stdout:
    `simulating NAME on 127.0.0.1:PORT unit UNIT`.
    """
    scenario = source if isinstance(source, Scenario) else load_scenario(source)
    simulator = await start_simulator(scenario, ports)
    try:
        for spec in scenario.devices:
            units = ",".join(str(u.unit) for u in spec.all_units)
            if spec.transport == "rtu":
                where = simulator.serial_port(spec.name)
            else:
                where = f"{HOST}:{simulator.ports[spec.name]}"
            print(f"simulating {spec.name} on {where} unit {units}")
        sys.stdout.flush()
        await asyncio.Event().wait()
    finally:
        await simulator.close()
